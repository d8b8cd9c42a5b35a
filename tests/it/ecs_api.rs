//! The ECS read API (`POST /ecs`) driven by real AWS clients: boto3 and the
//! AWS CLI (from the test venv) against the real binary, whose store the
//! reconciler filled from moto's ECS, compared with moto's own answers for
//! the same entities; then with `server.ecs_credentials_file`, signatures.
//! The checks themselves are in `ecs_clients.py`.

use crate::reconcile::{moto_ecs, EcsStack};
use crate::servers::venv_python;
use crate::support::*;
use serde_json::{json, Value};
use std::time::Duration;

on_both_backends!(entities_from_events_are_answered_with_the_events_fields);

pub(crate) fn clients(args: &[&str]) -> (bool, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/ecs_clients.py");
    let out = std::process::Command::new(venv_python())
        .arg(script)
        .args(args)
        .output()
        .expect("python runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

/// A raw `POST /ecs` with `target` and `body`, unsigned.
pub(crate) async fn post(addr: std::net::SocketAddr, target: &str, body: &str) -> Response {
    let head = format!(
        "POST /ecs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-amz-json-1.1\r\n\
         X-Amz-Target: AmazonEC2ContainerServiceV20141113.{target}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    parse(&raw(addr, head.as_bytes()).await)
}

#[actix_web::test]
async fn aws_clients_read_the_store_as_they_read_ecs() {
    let s = EcsStack::new().await;
    moto_ecs(
        &s.moto,
        json!({"clusters": {
            "big": {"fargate_tasks": 250},
            "small": {"instances": 1, "tasks": 3, "services": {"web": 2, "api": 1}},
        }}),
    );
    let mut p = s.service(&[("CSS_RECONCILE__INTERVAL", "1h".into())]);
    p.wait_ready(Duration::from_secs(60)).await;
    let (ok, report) = clients(&["compare", &s.moto.url(), &format!("http://{}", p.addr)]);
    assert!(ok, "boto3 / the AWS CLI against /ecs:\n{report}");
    assert_eq!(report.trim(), "ok", "{report}");

    // Unsigned raw requests: an answer in ECS's shape, and the errors.
    let r = post(p.addr, "ListClusters", "{}").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-amz-json-1.1"));
    assert_eq!(r.json()["clusterArns"].as_array().map(Vec::len), Some(2));
    let r = post(p.addr, "DescribeTasks", r#"{"cluster": "big", "tasks": 7}"#).await;
    assert_eq!(
        (r.status, r.json()["__type"].clone()),
        (400, json!("SerializationException"))
    );
    let r = post(p.addr, "DeleteCluster", r#"{"cluster": "big"}"#).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["__type"], "UnsupportedOperationException");
    let r = post(
        p.addr,
        "ListContainerInstances",
        r#"{"cluster": "small", "filter": "x"}"#,
    )
    .await;
    assert_eq!(r.json()["__type"], "InvalidParameterException");
    assert_eq!(request(p.addr, "GET", "/ecs").await.status, 405);
    for (series, least) in [
        (
            "css_ecs_api_requests_total{operation=\"ListTasks\",outcome=\"ok\"}",
            5.0,
        ),
        (
            "css_ecs_api_requests_total{operation=\"DescribeTasks\",outcome=\"client_error\"}",
            2.0,
        ),
        (
            "css_ecs_api_requests_total{operation=\"other\",outcome=\"client_error\"}",
            4.0,
        ),
    ] {
        let n = p.metric(series).await;
        assert!(n >= least, "{series} = {n}");
    }

    // Signed: the same store served again with a credentials file.
    p.terminate();
    assert!(p.wait_exit(Duration::from_secs(20)).await.is_some());
    let creds = s.dir.path().join("ecs-credentials");
    std::fs::write(&creds, "# key secret\nAKIDCSSTEST s3cr3t/with+chars\n").unwrap();
    let data = s.dir.path().join("data");
    let q = Proc::spawn(
        &["--data-dir", data.to_str().unwrap()],
        &[(
            "CSS_SERVER__ECS_CREDENTIALS_FILE",
            creds.display().to_string(),
        )],
    );
    q.wait_ready(Duration::from_secs(30)).await;
    let (ok, report) = clients(&[
        "auth",
        &format!("http://{}", q.addr),
        "AKIDCSSTEST",
        "s3cr3t/with+chars",
    ]);
    assert!(ok, "signatures:\n{report}");
    assert_eq!(report.trim(), "ok", "{report}");
    let r = post(q.addr, "ListClusters", "{}").await;
    assert_eq!(r.status, 403);
    let body: Value = r.json();
    assert_eq!(body["__type"], "UnrecognizedClientException", "{body}");
    // /v1 is not affected by the ECS credentials.
    assert_eq!(q.get("/v1/tasks?limit=1").await.status, 200);
}

/// A task and an instance that only arrived by event are answered with every
/// member of the event's `detail` (timestamps in epoch seconds), on both
/// stores; the v1 API renders its subset of the same data.
async fn entities_from_events_are_answered_with_the_events_fields(b: Backend) {
    let t = start_on(b).await;
    t.inject(&[
        fixture("task-running-ec2.json"),
        fixture("instance-active.json"),
    ])
    .await;
    let event: Value = serde_json::from_str(&fixture("task-running-ec2.json")).unwrap();
    let detail = &event["detail"];
    let r = post(
        t.addr(),
        "DescribeTasks",
        &json!({"cluster": "prod-web", "tasks": [detail["taskArn"], "7c1e9a0b2f3d4c5e8a6b1d2f3e4a5b6c", "nope"]})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let answer = r.json();
    let tasks = answer["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "by ARN and by ID: {answer}");
    assert_eq!(
        answer["failures"],
        json!([{"arn": "nope", "reason": "MISSING"}])
    );
    let task = &tasks[0];
    for (member, value) in detail.as_object().unwrap() {
        if member.ends_with("At") {
            let ms = actors::time::parse_ms(value.as_str().unwrap()).unwrap();
            assert_eq!(task[member].as_f64(), Some(ms as f64 / 1000.0), "{member}");
        } else {
            assert_eq!(&task[member], value, "{member}");
        }
    }
    // The v1 rendering of the same task.
    let v1 = t
        .get(&format!(
            "/v1/tasks/prod-web/{}",
            detail["taskArn"].as_str().unwrap()
        ))
        .await
        .json();
    assert_eq!(v1["entity"]["taskARN"], detail["taskArn"]);
    assert_eq!(v1["entity"]["createdAt"], detail["createdAt"]);

    let instance: Value = serde_json::from_str(&fixture("instance-active.json")).unwrap();
    let r = post(
        t.addr(),
        "DescribeContainerInstances",
        &json!({"cluster": instance["detail"]["clusterArn"],
                "containerInstances": [instance["detail"]["containerInstanceArn"]]})
        .to_string(),
    )
    .await;
    let ci = &r.json()["containerInstances"][0];
    assert_eq!(ci["accountType"], instance["detail"]["accountType"], "{ci}");
    assert_eq!(
        ci["registeredResources"],
        instance["detail"]["registeredResources"]
    );
    assert!(ci["registeredAt"].is_f64(), "{ci}");

    // The cluster, its counts, and the lists.
    let r = post(
        t.addr(),
        "DescribeClusters",
        r#"{"clusters": ["prod-web"]}"#,
    )
    .await;
    let c = &r.json()["clusters"][0];
    assert_eq!(c["clusterArn"], detail["clusterArn"]);
    assert_eq!(
        (
            &c["runningTasksCount"],
            &c["registeredContainerInstancesCount"]
        ),
        (&json!(1), &json!(1))
    );
    let r = post(
        t.addr(),
        "ListTasks",
        r#"{"cluster": "prod-web", "family": "web"}"#,
    )
    .await;
    assert_eq!(r.json()["taskArns"], json!([detail["taskArn"]]));
    // Each filter of ListTasks, matching the task or not.
    let instance_arn = detail["containerInstanceArn"].as_str().unwrap();
    let instance_id = instance_arn.rsplit('/').next().unwrap();
    for (filter, matches) in [
        (json!({"containerInstance": instance_arn}), true),
        (json!({"containerInstance": instance_id}), true),
        (json!({"containerInstance": "0123abcd"}), false),
        (json!({"launchType": "EC2"}), true),
        (json!({"launchType": "FARGATE"}), false),
        (json!({"startedBy": detail["startedBy"]}), true),
        (json!({"startedBy": "someone"}), false),
        (json!({"serviceName": "web"}), true),
        (json!({"serviceName": "api"}), false),
        (json!({"family": "api"}), false),
        (json!({"desiredStatus": "RUNNING"}), true),
    ] {
        let mut body = filter.clone();
        body["cluster"] = json!("prod-web");
        let r = post(t.addr(), "ListTasks", &body.to_string()).await;
        let want = if matches {
            json!([detail["taskArn"]])
        } else {
            json!([])
        };
        assert_eq!(r.json()["taskArns"], want, "{filter}");
    }
    let r = post(
        t.addr(),
        "ListTasks",
        r#"{"cluster": "prod-web", "desiredStatus": "STOPPED"}"#,
    )
    .await;
    assert_eq!(r.json()["taskArns"], json!([]));
    for (body, error) in [
        (
            r#"{"cluster": "prod-web", "desiredStatus": "DONE"}"#,
            "InvalidParameterException",
        ),
        // No cluster named `default`.
        ("{}", "ClusterNotFoundException"),
        (
            r#"{"cluster": "prod-web", "maxResults": "ten"}"#,
            "SerializationException",
        ),
        ("[1]", "SerializationException"),
    ] {
        let r = post(t.addr(), "ListTasks", body).await;
        assert_eq!(r.json()["__type"], error, "{body}");
    }
}
