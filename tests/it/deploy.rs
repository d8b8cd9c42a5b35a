//! The AWS templates in `deploy/aws/`: cfn-lint passes on each; the managed
//! policy allows exactly the SQS, ECS and STS operations the code calls; and
//! `prerequisites.yaml`, deployed into moto's CloudFormation, routes every
//! detail type the service consumes (and no other) from the default bus to
//! the queue the service reads.

use crate::reconcile::moto_ecs;
use crate::servers::{venv_python, Moto};
use crate::support::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn templates() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/aws"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    all.sort();
    all
}

/// Runs `tests/it/deploy_aws.py` with `args`; its JSON answer.
fn helper(args: &[&str]) -> Value {
    crate::servers::python_json("deploy_aws.py", args)
}

#[test]
fn cfn_lint_passes_on_every_template() {
    let lint = venv_python().with_file_name("cfn-lint");
    let all = templates();
    for name in [
        "prerequisites.yaml",
        "service-on-ecs.yaml",
        "member-account.yaml",
    ] {
        assert!(all.iter().any(|t| t.ends_with(name)), "{name} in {all:?}");
    }
    let out = std::process::Command::new(lint)
        .args(&all)
        .output()
        .expect("cfn-lint runs");
    assert!(
        out.status.success(),
        "cfn-lint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The AWS SDK operations a source file calls: `client` (a binding or a
/// field), then `.operation()` (a builder, sent at once or later).
fn sdk_operations(source: &str) -> BTreeSet<String> {
    let mut ops = BTreeSet::new();
    let bytes = source.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    for (at, _) in source.match_indices("client") {
        let end = at + "client".len();
        if (at > 0 && word(bytes[at - 1])) || bytes.get(end).is_some_and(|b| word(*b)) {
            continue;
        }
        let rest = source[end..].trim_start();
        let Some(rest) = rest.strip_prefix('.') else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| *c == '_' || c.is_ascii_lowercase())
            .collect();
        if rest[name.len()..].starts_with("()") && name != "clone" {
            ops.insert(name);
        }
    }
    ops
}

/// `list_tasks` → `ListTasks`.
fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_policy_allows_exactly_what_the_code_calls() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    rust_files(&root().join("actors/src"), &mut files);
    let mut called = BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        // The SDK's own provider assumes the member accounts' roles.
        if text.contains("AssumeRoleProvider::builder") {
            called.insert("sts:AssumeRole".to_owned());
        }
        // Only files that use an AWS SDK (other clients, etcd's, are not AWS).
        let services: Vec<&str> = ["ecs", "sqs"]
            .into_iter()
            .filter(|s| text.contains(&format!("aws_sdk_{s}")))
            .collect();
        let ops = sdk_operations(&text);
        if ops.is_empty() || services.is_empty() {
            continue;
        }
        assert_eq!(services.len(), 1, "{}: which SDK? {ops:?}", f.display());
        for op in ops {
            // IAM authorizes SQS's batch calls as their single forms.
            let action = pascal(&op);
            let action = action.strip_suffix("Batch").unwrap_or(&action);
            called.insert(format!("{}:{action}", services[0]));
        }
    }
    // The code's calls, found by the scan (so a scan that finds nothing fails).
    for known in [
        "ecs:ListTasks",
        "ecs:DescribeServices",
        "sqs:ReceiveMessage",
        "sts:AssumeRole",
    ] {
        assert!(called.contains(known), "{known} not found in {called:?}");
    }
    let template = root().join("deploy/aws/prerequisites.yaml");
    let allowed: BTreeSet<String> =
        serde_json::from_value(helper(&["policy", template.to_str().unwrap()])).unwrap();
    assert_eq!(
        allowed, called,
        "the policy's actions (left) against the code's calls (right)"
    );
}

#[actix_web::test]
async fn prerequisites_deploy_into_moto_and_deliver_every_consumed_event() {
    let moto = Moto::start();
    let template = root().join("deploy/aws/prerequisites.yaml");
    let outputs = helper(&["deploy", &moto.url(), template.to_str().unwrap()]);
    let queue = outputs["QueueName"].as_str().expect("a QueueName output");
    let dlq = outputs["DeadLetterQueueName"]
        .as_str()
        .expect("a DLQ output");
    assert!(outputs["PolicyArn"]
        .as_str()
        .is_some_and(|a| a.contains(":policy/")));
    let made = moto_ecs(&moto, serde_json::json!({"clusters": {"web": {}}}));
    let cluster = made["web"]["cluster"].as_str().unwrap().to_owned();

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut env = moto.env();
    env.push(("CSS_SOURCE__WAIT_TIME", "1s".into()));
    env.push(("CSS_SOURCE__DEAD_LETTER_QUEUE", dlq.to_owned()));
    let p = Proc::spawn(
        &["--queue", queue, "--data-dir", data.to_str().unwrap()],
        &env,
    );
    p.wait_ready(Duration::from_secs(30)).await;

    let sent = helper(&["put-events", &moto.url(), &cluster]);
    let (task, instance) = (
        sent["task"].as_str().unwrap(),
        sent["instance"].as_str().unwrap(),
    );
    let outcome = |o: &str| format!("css_events_total{{outcome=\"{o}\"}}");
    let arrived = eventually(Duration::from_secs(30), || async {
        let tasks = p.get("/v1/tasks").await.body;
        let instances = p.get("/v1/instances").await.body;
        String::from_utf8_lossy(&tasks).contains(task)
            && String::from_utf8_lossy(&instances).contains(instance)
            && p.metric(&outcome("applied")).await >= 4.0
    })
    .await;
    assert!(
        arrived,
        "applied {} of 4",
        p.metric(&outcome("applied")).await
    );
    // One message per consumed detail type, none of the other type (which
    // would be `ignored`). SQS delivers at least once, and so does moto:
    // its receive takes no lock, so two of the service's pollers can both
    // get a message; the second copy is `stale`, and is all a copy may be.
    let received = p.metric(&outcome("received")).await;
    let stale = p.metric(&outcome("stale")).await;
    assert_eq!(p.metric(&outcome("applied")).await, 4.0);
    assert_eq!(received - stale, 4.0, "received {received}, stale {stale}");
    for o in ["ignored", "invalid"] {
        assert_eq!(p.metric(&outcome(o)).await, 0.0, "{o}");
    }
    assert_eq!(p.metric("css_events_dead_lettered_total").await, 0.0);
    let sqs = moto.sqs();
    let url = sqs.get_queue_url().queue_name(queue).send().await.unwrap();
    let url = url.queue_url().unwrap().to_owned();
    let empty = eventually(Duration::from_secs(10), || async {
        let a = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .unwrap();
        let n = |k: aws_sdk_sqs::types::QueueAttributeName| {
            a.attributes()
                .and_then(|m| m.get(&k))
                .map_or(String::new(), Clone::clone)
        };
        n(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages) == "0"
            && n(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                == "0"
    })
    .await;
    assert!(
        empty,
        "the other detail type reached the queue, or a message was left"
    );
}
