//! The OpenAPI document (`swagger/openapi.json`) against the implementation:
//! real responses of every endpoint, success and error, are recorded and
//! checked against the document's schemas by `scripts/check-openapi.py`
//! (openapi-spec-validator + jsonschema, from moto's venv), so the two cannot
//! drift: a renamed field, a new field or an undocumented status fails here.

use crate::servers::venv_python;
use crate::support::*;
use actors::model::Kind;
use serde_json::{json, Value};
use std::time::Duration;

/// Records one plain response.
async fn sample(t: &TestService, out: &mut Vec<Value>, template: &str, method: &str, path: &str) {
    let r = request(t.addr(), &method.to_ascii_uppercase(), path).await;
    let body: Value = match r.body.is_empty() {
        true => Value::Null,
        false => serde_json::from_slice(&r.body).unwrap_or(Value::String("(not JSON)".into())),
    };
    out.push(json!({
        "path": template, "method": method, "status": r.status,
        "content_type": r.header("content-type"), "body": body,
    }));
}

/// Records the first `n` lines of a stream.
async fn sample_stream(
    t: &TestService,
    out: &mut Vec<Value>,
    template: &str,
    path: &str,
    n: usize,
) {
    let (c, lines) = StreamClient::first_lines(t.addr(), path, "", n).await;
    let lines: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    out.push(json!({
        "path": template, "method": "get", "status": c.status,
        "content_type": c.header("content-type"), "lines": lines,
    }));
}

#[actix_web::test]
async fn every_response_matches_the_openapi_document() {
    let t = start().await;
    let fixtures = std::fs::read_dir(fixtures_dir().join("events")).unwrap();
    let mut bodies: Vec<String> = fixtures
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect();
    bodies.push(task_event("c", "a", 1, "RUNNING"));
    bodies.push(task_event("c", "b", 1, "PENDING"));
    t.inject(&bodies).await;

    let served = t.get("/v1/openapi.json").await;
    let file = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/swagger/openapi.json")).unwrap();
    assert_eq!(
        served.body, file,
        "/v1/openapi.json serves swagger/openapi.json"
    );

    let task = "arn:aws:ecs:us-west-2:111122223333:task/c/a";
    let list = t.get("/v1/instances?limit=1").await.json();
    let inst = list["items"][0]["entity"]["containerInstanceARN"]
        .as_str()
        .unwrap()
        .to_owned();
    let inst_cluster = list["items"][0]["entity"]["clusterARN"]
        .as_str()
        .unwrap()
        .to_owned();
    let inst_cluster = inst_cluster.rsplit('/').next().unwrap().to_owned();

    // Services come from ECS, not events: written as the reconciler would.
    let svc = actors::model::Service {
        service_arn: "arn:aws:ecs:us-west-2:111122223333:service/c/web".into(),
        service_name: "web".into(),
        cluster_arn: "arn:aws:ecs:us-west-2:111122223333:cluster/c".into(),
        status: "ACTIVE".into(),
        desired_count: Some(2),
        running_count: Some(1),
        pending_count: Some(1),
        task_definition_arn: Some(
            "arn:aws:ecs:us-west-2:111122223333:task-definition/web:7".into(),
        ),
        launch_type: Some("FARGATE".into()),
        platform_version: Some("1.4.0".into()),
        scheduling_strategy: Some("REPLICA".into()),
        created_at: Some("2026-11-01T00:00:00.000Z".into()),
        deployments: vec![actors::model::Deployment {
            id: Some("ecs-svc/1".into()),
            status: Some("PRIMARY".into()),
            rollout_state: Some("IN_PROGRESS".into()),
            desired_count: Some(2),
            created_at: Some("2026-11-30T00:00:00.000Z".into()),
            ..Default::default()
        }],
        events: vec![actors::model::ServiceEvent {
            id: Some("e1".into()),
            created_at: Some("2026-11-30T00:00:01.000Z".into()),
            message: Some("(service web) has started 1 tasks.".into()),
        }],
        load_balancers: vec![actors::model::LoadBalancer {
            target_group_arn: Some(
                "arn:aws:elasticloadbalancing:us-west-2:111122223333:targetgroup/web/1".into(),
            ),
            load_balancer_name: None,
            container_name: Some("web".into()),
            container_port: Some(8080),
        }],
        updated_at: Some("2026-11-30T00:00:02.000Z".into()),
    };
    t.svc
        .pipeline
        .writer
        .send(actors::writer::Apply {
            ops: vec![actors::store::Op::Put(
                actors::model::Entry::from_service(&svc).unwrap(),
            )],
        })
        .await
        .unwrap()
        .unwrap();

    let mut s = Vec::new();
    let (tasks, instances, services) = ("/v1/tasks", "/v1/instances", "/v1/services");
    let describe_svc = "/v1/services/{cluster}/{service}";
    let describe_task = "/v1/tasks/{cluster}/{arn}";
    let describe_inst = "/v1/instances/{cluster}/{arn}";
    for (template, path) in [
        ("/v1/ping", "/v1/ping".to_owned()),
        ("/v1/clusters", "/v1/clusters".into()),
        (
            "/v1/clusters",
            "/v1/clusters?limit=1&account=111122223333".into(),
        ),
        ("/v1/clusters", "/v1/clusters?region=moon".into()),
        (
            tasks,
            "/v1/tasks?account=111122223333&region=us-west-2".into(),
        ),
        (tasks, "/v1/tasks?account=1".into()),
        (tasks, "/v1/tasks".into()),
        (tasks, "/v1/tasks?limit=1".into()),
        (tasks, "/v1/tasks?status=STOPPED&launchType=FARGATE".into()),
        (tasks, "/v1/tasks?colour=red".into()),
        (tasks, "/v1/tasks?status=bogus".into()),
        (tasks, "/v1/tasks?limit=0".into()),
        (instances, "/v1/instances".into()),
        (instances, "/v1/instances?limit=1".into()),
        (instances, "/v1/instances?agentConnected=maybe".into()),
        (describe_task, format!("/v1/tasks/c/{task}")),
        (
            describe_task,
            "/v1/tasks/c/arn:aws:ecs:us-west-2:111122223333:task/c/nope".into(),
        ),
        (describe_task, "/v1/tasks/c/not-an-arn".into()),
        (
            describe_inst,
            format!("/v1/instances/{inst_cluster}/{inst}"),
        ),
        (describe_inst, format!("/v1/instances/other/{inst}")),
        (services, "/v1/services".into()),
        (services, "/v1/services?limit=1&rollout=in_progress".into()),
        (services, "/v1/services?rollout=done".into()),
        (
            services,
            "/v1/services?taskDefinition=web:7&status=active".into(),
        ),
        (describe_svc, "/v1/services/c/web".into()),
        (describe_svc, format!("/v1/services/c/{}", svc.service_arn)),
        (describe_svc, "/v1/services/c/nope".into()),
        (describe_svc, "/v1/services/c/bad!".into()),
        (
            "/v1/stream/services",
            "/v1/stream/services?status=bogus".into(),
        ),
        (
            "/v1/stream/tasks",
            "/v1/stream/tasks?entityVersion=abc".into(),
        ),
        (
            "/v1/stream/tasks",
            "/v1/stream/tasks?entityVersion=999999".into(),
        ),
        (
            "/v1/stream/instances",
            "/v1/stream/instances?heartbeat=0".into(),
        ),
        (tasks, "/v1/tasks?at=1&limit=1".into()),
        (tasks, "/v1/tasks?at=99999999".into()),
        (tasks, "/v1/tasks?at=2000-01-01T00:00:00Z".into()),
        (
            instances,
            format!(
                "/v1/instances?at={}",
                actors::time::format_ms(actors::time::now_ms())
            ),
        ),
        (services, "/v1/services?at=2".into()),
        ("/v1/clusters", "/v1/clusters?at=1".into()),
        (
            "/v1/tasks/{cluster}/{arn}/history",
            format!("/v1/tasks/c/{task}/history"),
        ),
        (
            "/v1/tasks/{cluster}/{arn}/history",
            format!("/v1/tasks/c/{task}/history?limit=1&since=1h"),
        ),
        (
            "/v1/tasks/{cluster}/{arn}/history",
            "/v1/tasks/c/arn:aws:ecs:us-west-2:111122223333:task/c/nope/history".into(),
        ),
        (
            "/v1/tasks/{cluster}/{arn}/history",
            format!("/v1/tasks/c/{task}/history?since=soon"),
        ),
        (
            "/v1/instances/{cluster}/{arn}/history",
            format!("/v1/instances/{inst_cluster}/{inst}/history"),
        ),
        (
            "/v1/services/{cluster}/{service}/history",
            "/v1/services/c/web/history".into(),
        ),
        (
            "/v1/services/{cluster}/{service}/history",
            "/v1/services/c/nope/history".into(),
        ),
        (
            "/v1/services/{cluster}/{service}/timeline",
            "/v1/services/c/web/timeline".into(),
        ),
        (
            "/v1/services/{cluster}/{service}/timeline",
            "/v1/services/c/web/timeline?limit=1&since=1h".into(),
        ),
        (
            "/v1/services/{cluster}/{service}/timeline",
            "/v1/services/c/nope/timeline".into(),
        ),
        ("/v1/sd/prometheus", "/v1/sd/prometheus".into()),
        ("/v1/sd/prometheus", "/v1/sd/prometheus?port=0".into()),
        ("/metrics/state", "/metrics/state".into()),
        ("/v1/openapi.json", "/v1/openapi.json".into()),
        ("/healthz", "/healthz".into()),
        ("/readyz", "/readyz".into()),
        ("/metrics", "/metrics".into()),
    ] {
        sample(&t, &mut s, template, "get", &path).await;
        sample(&t, &mut s, template, "head", &path).await;
    }
    sample(&t, &mut s, tasks, "post", "/v1/tasks").await;
    for stream in [
        "/v1/stream/tasks",
        "/v1/stream/instances",
        "/v1/stream/services",
    ] {
        sample(&t, &mut s, stream, "head", stream).await;
    }
    let n_tasks = t.count("/v1/tasks").await;
    let n_instances = t.count("/v1/instances").await;
    sample_stream(
        &t,
        &mut s,
        "/v1/stream/tasks",
        "/v1/stream/tasks?snapshot=true",
        n_tasks + 1,
    )
    .await;
    sample_stream(
        &t,
        &mut s,
        "/v1/stream/instances",
        "/v1/stream/instances?entityVersion=1",
        n_instances,
    )
    .await;

    sample_stream(
        &t,
        &mut s,
        "/v1/stream/services",
        "/v1/stream/services?snapshot=true",
        2,
    )
    .await;

    // A deletion and a heartbeat bookmark on a live stream.
    let mut live = StreamClient::open(t.addr(), "/v1/stream/tasks?heartbeat=1", "").await;
    let arn = "arn:aws:ecs:us-west-2:111122223333:task/c/b";
    let b = t.svc.pipeline.reader.snapshot().unwrap();
    let rev = b
        .of(Kind::Task)
        .values()
        .find(|e| e.arn == arn)
        .unwrap()
        .revision;
    t.svc
        .pipeline
        .writer
        .send(actors::writer::Apply {
            ops: vec![actors::store::Op::Delete {
                arn: arn.into(),
                if_revision: rev,
            }],
        })
        .await
        .unwrap()
        .unwrap();
    let deleted = live.next_json(Duration::from_secs(5)).await.unwrap();
    assert_eq!(deleted["metadata"]["deleted"], true);
    let beat = live.next_json(Duration::from_secs(3)).await.unwrap();
    s.push(
        json!({"path": "/v1/stream/tasks", "method": "get", "status": 200,
        "content_type": "application/x-ndjson", "lines": [deleted, beat]}),
    );

    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples.json");
    std::fs::write(&samples, serde_json::to_vec_pretty(&s).unwrap()).unwrap();
    let out = std::process::Command::new(venv_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/check-openapi.py"
        ))
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/swagger/openapi.json"))
        .arg(&samples)
        .output()
        .expect("the checker runs");
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the API and swagger/openapi.json disagree:\n{report}"
    );
}

/// schemathesis (from the test venv) drives the served document against the
/// service with every check on: the examples, coverage and fuzzing phases,
/// a bounded number of examples per operation, and the streams read for a
/// short time (`scripts/schemathesis_hooks.py`). Any failure it reports is
/// a disagreement between the document and the server.
#[actix_web::test]
async fn schemathesis_finds_no_disagreement_with_the_served_document() {
    let _alone = heavy().await;
    let t = start().await;
    let fixtures = std::fs::read_dir(fixtures_dir().join("events")).unwrap();
    let bodies: Vec<String> = fixtures
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect();
    t.inject(&bodies).await;
    let root = env!("CARGO_MANIFEST_DIR");
    let st = venv_python().with_file_name("st");
    let addr = t.addr();
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(st)
            .args(["run", &format!("http://{addr}/v1/openapi.json")])
            .args(["--checks", "all"])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--max-examples", "25", "--seed", "1"])
            // One worker: with two, Hypothesis parses lambdas' sources with
            // `ast.parse` in two threads at once, which CPython 3.11 (3.11.7
            // here, 3.11.2 in Debian 12) can fail with "SystemError: AST
            // constructor recursion depth mismatch" (CPython gh-106905).
            .args(["--request-timeout", "0.5", "--workers", "1"])
            .args(["--suppress-health-check", "all"])
            .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
            .env("PYTHONPATH", format!("{root}/scripts"))
            .env("NO_COLOR", "1")
            .output()
            .expect("schemathesis runs")
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let tail: String = report
        .lines()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    println!(
        "schemathesis took {:.0} s\n{tail}{}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
