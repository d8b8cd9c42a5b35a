//! Several accounts and regions in one deployment (accounts.md), against
//! moto's server, which keeps accounts apart (state made with the
//! credentials of an assumed role lands in the role's account) and regions
//! apart (by the request's signature): the real binary reads two queues and
//! reconciles two accounts × two regions, one of them through an assumed
//! role; boto3 and the AWS CLI read `/ecs` per account and region.

use crate::reconcile::moto_ecs;
use crate::servers::{Fault, FaultProxy, Moto};
use crate::support::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Moto's own account: the ambient credentials' (the home account).
const HOME: &str = "123456789012";
const MEMBER: &str = "222222222222";
const ROLE: &str = "arn:aws:iam::222222222222:role/cluster-state-reader";
const REGIONS: [&str; 2] = ["us-west-2", "eu-west-1"];

/// What moto holds in one account and region: cluster `web` and its tasks.
struct Place {
    account: &'static str,
    region: &'static str,
    cluster: String,
    tasks: Vec<String>,
}

/// Cluster `web` with `tasks` tasks in `account` (through the role for the
/// member account) and `region`.
fn make_web(moto: &Moto, account: &'static str, region: &'static str, tasks: usize) -> Place {
    let mut spec = json!({"region": region, "clusters": {"web": {"fargate_tasks": tasks}}});
    if account == MEMBER {
        spec["role_arn"] = json!(ROLE);
    }
    let made = &moto_ecs(moto, spec)["web"];
    let cluster = made["cluster"].as_str().unwrap().to_owned();
    assert_eq!(
        cluster,
        format!("arn:aws:ecs:{region}:{account}:cluster/web"),
        "moto keeps accounts and regions apart"
    );
    let tasks = made["tasks"].as_array().unwrap();
    Place {
        account,
        region,
        cluster,
        tasks: tasks
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect(),
    }
}

/// Creates queue `events` in `region`; its URL.
async fn queue(moto: &Moto, region: &str) -> (aws_sdk_sqs::Client, String) {
    let sqs = moto.sqs_in(region);
    let made = sqs
        .create_queue()
        .queue_name("events")
        .send()
        .await
        .unwrap();
    (sqs, made.queue_url().unwrap().to_owned())
}

/// A task event as EventBridge delivers it, from the task's account and region.
fn task_event(task_arn: &str, cluster_arn: &str, version: u64) -> String {
    let (region, account) = actors::arn::region_and_account(cluster_arn).unwrap();
    json!({
        "version": "0", "id": format!("ev-{version}-{task_arn}"),
        "detail-type": "ECS Task State Change", "source": "aws.ecs",
        "account": account, "region": region,
        "detail": {
            "clusterArn": cluster_arn, "taskArn": task_arn, "lastStatus": "RUNNING",
            "desiredStatus": "RUNNING", "version": version, "startedBy": "test",
        }
    })
    .to_string()
}

async fn send(sqs: &aws_sdk_sqs::Client, url: &str, body: String) {
    sqs.send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await
        .unwrap();
}

/// The service with configuration `toml`, against moto (and `extra` env).
fn service(moto: &Moto, dir: &tempfile::TempDir, toml: &str, extra: &[(&str, String)]) -> Proc {
    let config = dir.path().join("css.toml");
    std::fs::write(&config, toml).unwrap();
    let data = dir.path().join("data");
    let mut env = moto.env();
    env.extend(extra.iter().cloned());
    Proc::spawn(
        &[
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &env,
    )
}

/// The ARNs of the items of the list at `path`.
async fn arns(p: &Proc, path: &str, member: &str) -> Vec<String> {
    let v = p.get(path).await.json();
    let items = v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: {v}"));
    let mut arns: Vec<String> = items
        .iter()
        .map(|i| i["entity"][member].as_str().unwrap().to_owned())
        .collect();
    arns.sort();
    arns
}

#[actix_web::test]
async fn two_accounts_in_two_regions_are_one_view_fed_by_two_queues_and_an_assumed_role() {
    let moto = Moto::start();
    let mut places = Vec::new();
    for account in [HOME, MEMBER] {
        for region in REGIONS {
            places.push(make_web(&moto, account, region, 2));
        }
    }
    let mut queues = Vec::new();
    for region in REGIONS {
        queues.push(queue(&moto, region).await);
    }
    let tuned = &places[3].cluster; // the member account's, in eu-west-1
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[source]
wait_time = "1s"
queues = [{{ queue = "events", region = "us-west-2" }}, {{ queue = "events", region = "eu-west-1" }}]

[reconcile]
interval = "1h"
jitter = 0

[reconcile.clusters."{tuned}"]
interval = "1s"

[[accounts]]
id = "{HOME}"
regions = ["us-west-2", "eu-west-1"]

[[accounts]]
id = "{MEMBER}"
role_arn = "{ROLE}"
external_id = "css"
regions = ["us-west-2", "eu-west-1"]
"#
    );
    // Each place's first task comes as an event, through its region's
    // queue; the event of its second task is lost.
    for p in &places {
        let (sqs, url) = &queues[REGIONS.iter().position(|r| *r == p.region).unwrap()];
        send(sqs, url, task_event(&p.tasks[0], &p.cluster, 5)).await;
    }
    let p = service(&moto, &dir, &toml, &[]);
    p.wait_ready(Duration::from_secs(60)).await;

    // Every task of the four: the lost ones found by each place's sweep,
    // the member account's through the role (moto shows its tasks to that
    // account's credentials only).
    let all: Vec<String> = places.iter().flat_map(|p| p.tasks.clone()).collect();
    let complete = eventually(Duration::from_secs(30), || async {
        arns(&p, "/v1/tasks", "taskARN").await.len() == all.len()
    })
    .await;
    assert!(
        complete,
        "tasks: {:?}",
        arns(&p, "/v1/tasks", "taskARN").await
    );
    for place in &places {
        for (i, task) in place.tasks.iter().enumerate() {
            let path = format!("/v1/tasks/{}/{task}", place.cluster);
            let t = p.get(&path).await.json();
            let version = t["entity"].get("version").and_then(Value::as_u64);
            let want = if i == 0 { Some(5) } else { None };
            assert_eq!(version, want, "{path}: from the event, or the sweep: {t}");
        }
        let described = format!(
            "css_ecs_calls_total{{account=\"{}\",operation=\"DescribeTasks\",region=\"{}\"}}",
            place.account, place.region
        );
        assert!(p.metric(&described).await >= 1.0, "{described}");
    }

    // The account and region filters, alone and with another filter.
    for place in &places {
        let path = format!(
            "/v1/tasks?account={}&region={}",
            place.account, place.region
        );
        let mut want = place.tasks.clone();
        want.sort();
        assert_eq!(arns(&p, &path, "taskARN").await, want, "{path}");
        let path = format!("/v1/tasks?cluster=web&account={}", place.account);
        assert_eq!(arns(&p, &path, "taskARN").await.len(), 4, "{path}");
    }
    let bad = p.get("/v1/tasks?account=12").await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["message"]
        .as_str()
        .unwrap()
        .contains("Invalid account"));

    // /v1/clusters: the four clusters named web, each with its reconciler.
    let clusters = p.get("/v1/clusters").await.json();
    let items = clusters["items"].as_array().unwrap();
    let listed: Vec<(&str, &str, &str, bool)> = items
        .iter()
        .map(|c| {
            (
                c["clusterName"].as_str().unwrap(),
                c["account"].as_str().unwrap(),
                c["region"].as_str().unwrap(),
                c["reconciled"].as_bool().unwrap(),
            )
        })
        .collect();
    for place in &places {
        let want = ("web", place.account, place.region, true);
        assert!(listed.contains(&want), "{want:?} in {listed:?}");
    }
    assert_eq!(listed.len(), 4, "{clusters}");
    let member = p
        .get(&format!("/v1/clusters?account={MEMBER}"))
        .await
        .json();
    assert_eq!(member["items"].as_array().unwrap().len(), 2, "{member}");

    // A cluster name in several places, with an entity that is not an ARN.
    let id = places[0].tasks[0].rsplit('/').next().unwrap();
    let ambiguous = p.get(&format!("/v1/tasks/web/{id}")).await;
    assert_eq!(ambiguous.status, 400);
    assert_eq!(
        ambiguous.json()["code"],
        "AmbiguousCluster",
        "{:?}",
        ambiguous.json()
    );

    // The tuning keyed by one cluster's ARN applies to that cluster only.
    let sweeps = |place: &Place| {
        format!(
            "css_reconcile_sweeps_total{{account=\"{}\",cluster=\"web\",region=\"{}\"}}",
            place.account, place.region
        )
    };
    let tuned_sweeps = sweeps(&places[3]);
    let swept = metric_reaches(p.addr, &tuned_sweeps, 3.0, Duration::from_secs(30)).await;
    assert!(swept, "the ARN-tuned cluster sweeps every second");
    for place in &places[..3] {
        assert_eq!(
            p.metric(&sweeps(place)).await,
            1.0,
            "{}: every hour",
            place.cluster
        );
    }

    // /ecs: each access key and region reads its own account-region.
    let spec: Vec<Value> = places
        .iter()
        .enumerate()
        .map(|(i, place)| {
            let other = &places[(i + 1) % places.len()];
            json!({
                "key": if place.account == HOME { "AKIDHOME" } else { MEMBER },
                "region": place.region,
                "clusters": [place.cluster],
                "tasks": place.tasks,
                "elsewhere": other.cluster,
            })
        })
        .collect();
    let (ok, report) = crate::ecs_api::clients(&[
        "places",
        &format!("http://{}", p.addr),
        &Value::Array(spec).to_string(),
    ]);
    assert!(
        ok && report.trim() == "ok",
        "boto3 / the AWS CLI per account and region:\n{report}"
    );

    // An event from an account no reconciler covers is applied, and counted.
    let stranger = "arn:aws:ecs:us-west-2:333333333333:cluster/web";
    let task = "arn:aws:ecs:us-west-2:333333333333:task/web/0123456789abcdef";
    send(&queues[0].0, &queues[0].1, task_event(task, stranger, 1)).await;
    let unreconciled =
        "css_events_unreconciled_total{account=\"333333333333\",region=\"us-west-2\"}";
    assert!(metric_reaches(p.addr, unreconciled, 1.0, Duration::from_secs(20)).await);
    let path = format!("/v1/tasks/{stranger}/{task}");
    let applied = eventually(Duration::from_secs(10), || async {
        p.get(&path).await.status == 200
    })
    .await;
    assert!(applied, "{path}: the event is applied all the same");
}

#[actix_web::test]
async fn a_role_that_cannot_be_assumed_fails_its_account_only() {
    let moto = Moto::start();
    let home = make_web(&moto, HOME, "us-west-2", 1);
    let member = make_web(&moto, MEMBER, "us-west-2", 1);
    let (sqs, url) = queue(&moto, "us-west-2").await;
    // The member's cluster is known from an event; its role is refused by STS.
    send(&sqs, &url, task_event(&member.tasks[0], &member.cluster, 1)).await;
    let sts = FaultProxy::start(moto.addr()).await;
    sts.set(Fault::Answer(403, "AccessDenied"));
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[source]
wait_time = "1s"
queue = "events"

[reconcile]
interval = "1h"

[[accounts]]
id = "{HOME}"
regions = ["us-west-2"]

[[accounts]]
id = "{MEMBER}"
role_arn = "{ROLE}"
regions = ["us-west-2"]
"#
    );
    let p = service(&moto, &dir, &toml, &[("AWS_ENDPOINT_URL_STS", sts.url())]);
    // Readiness does not wait for an account whose role is refused.
    p.wait_ready(Duration::from_secs(60)).await;
    let failing = "css_reconcile_discovery_errors_total{account=\"222222222222\"}";
    assert!(metric_reaches(p.addr, failing, 1.0, Duration::from_secs(20)).await);
    let home_failures = "css_reconcile_discovery_errors_total{account=\"123456789012\"}";
    assert_eq!(p.metric(home_failures).await, 0.0);
    let swept = format!("/v1/tasks/{}/{}", home.cluster, home.tasks[0]);
    assert_eq!(p.get(&swept).await.status, 200, "the home account is swept");

    let clusters = p.get("/v1/clusters").await.json();
    let of = |arn: &str| {
        clusters["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["clusterARN"] == arn)
            .cloned()
            .unwrap_or_else(|| panic!("{arn} in {clusters}"))
    };
    let (h, m) = (of(&home.cluster), of(&member.cluster));
    assert_eq!(
        (h["reconciled"].as_bool(), h.get("reconcileError")),
        (Some(true), None)
    );
    assert_eq!(m["reconciled"], false, "{m}");
    let why = m["reconcileError"].as_str().unwrap_or_default();
    assert!(
        why.contains("cannot list clusters") && why.contains("no credentials"),
        "{m}"
    );
    // Its event was applied all the same.
    let event = format!("/v1/tasks/{}/{}", member.cluster, member.tasks[0]);
    assert_eq!(p.get(&event).await.status, 200);
}
