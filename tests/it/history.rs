//! History (history.md): each entity's retained versions, every list `at=`
//! a past revision or moment, retention, and the same answers after a
//! restart — on both stores.

use crate::support::*;
use css::config::Feed;
use serde_json::Value;
use std::time::Duration;

/// Waits (bounded) until the clock is past `ms`, so that the next commit
/// is observed at a later millisecond.
async fn after(ms: i64) {
    let passed = eventually(Duration::from_secs(2), || async move {
        actors::time::now_ms() > ms
    })
    .await;
    assert!(passed, "the clock did not move past {ms}");
}

fn statuses(list: &Value) -> Vec<String> {
    let items = list["items"].as_array().expect("items");
    items
        .iter()
        .map(|i| i["entity"]["lastStatus"].as_str().unwrap_or("-").to_owned())
        .collect()
}

fn version(item: &Value) -> u64 {
    item["metadata"]["entityVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("entityVersion")
}

async fn error(t: &TestService, path: &str, status: u16, code: &str) -> String {
    let r = t.get(path).await;
    r.expect_status(status, path);
    let v = r.json();
    assert_eq!(v["code"], code, "{path}: {v}");
    v["message"].as_str().unwrap_or_default().to_owned()
}

/// Every item of a list at `path`, following `nextToken`; each page's
/// `entityVersion`.
async fn all_pages(t: &TestService, path: &str) -> (Vec<Value>, Vec<String>) {
    let (mut items, mut versions) = (Vec::new(), Vec::new());
    let mut next: Option<String> = None;
    for _ in 0..100 {
        let p = match &next {
            Some(tok) => format!("{path}&nextToken={tok}"),
            None => path.to_owned(),
        };
        let v = t.get(&p).await.ok_json(&p);
        items.extend(v["items"].as_array().unwrap().iter().cloned());
        versions.push(v["metadata"]["entityVersion"].as_str().unwrap().to_owned());
        match v["nextToken"].as_str() {
            Some(tok) => next = Some(tok.to_owned()),
            None => return (items, versions),
        }
    }
    panic!("{path}: more than 100 pages");
}

on_both_backends!(
    a_task_s_versions_and_the_lists_at_each_moment,
    history_older_than_the_retention_is_gone
);

async fn a_task_s_versions_and_the_lists_at_each_moment(b: Backend) {
    let t = start_on(b).await;
    let path = task_path("h", "t1");
    let history = format!("{path}/history");
    let mut last_ms = actors::time::now_ms();
    for events in [
        vec![task_event("h", "t1", 1, "PROVISIONING")],
        vec![task_event("h", "t1", 2, "RUNNING")],
        // A duplicate and a late event change nothing.
        vec![
            task_event("h", "t1", 2, "RUNNING"),
            task_event("h", "t1", 1, "PROVISIONING"),
        ],
        vec![task_event("h", "t1", 3, "STOPPED")],
    ] {
        after(last_ms).await;
        t.inject(&events).await;
        last_ms = actors::time::now_ms();
    }

    let h = t.get(&history).await.ok_json("history");
    assert_eq!(statuses(&h), ["PROVISIONING", "RUNNING", "STOPPED"], "{h}");
    let items = h["items"].as_array().unwrap().clone();
    let revs: Vec<u64> = items.iter().map(version).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");
    let observed: Vec<i64> = items
        .iter()
        .map(|i| actors::time::parse_ms(i["metadata"]["observedAt"].as_str().unwrap()).unwrap())
        .collect();
    assert!(observed.windows(2).all(|w| w[0] < w[1]), "{observed:?}");
    let from = actors::time::parse_ms(h["metadata"]["historyFrom"].as_str().unwrap()).unwrap();
    assert!(from <= observed[0], "historyFrom {from} after {observed:?}");
    assert_eq!(h["metadata"]["entityVersion"], revs[2].to_string());
    // Paged, and since=.
    let page = t.get(&format!("{history}?limit=2")).await.ok_json("page 1");
    assert_eq!(statuses(&page), ["PROVISIONING", "RUNNING"]);
    let token = page["nextToken"].as_str().expect("a nextToken");
    let rest = t
        .get(&format!("{history}?limit=2&nextToken={token}"))
        .await
        .ok_json("page 2");
    assert_eq!(statuses(&rest), ["STOPPED"]);
    assert!(rest.get("nextToken").is_none());
    let since = actors::time::format_ms(observed[1]);
    let recent = t
        .get(&format!("{history}?since={since}"))
        .await
        .ok_json("since");
    assert_eq!(statuses(&recent), ["RUNNING", "STOPPED"]);

    // The lists as they were.
    let at = |q: String| format!("/v1/tasks?cluster=h&at={q}");
    let before = t
        .get(&at(actors::time::format_ms(observed[0] - 1)))
        .await
        .ok_json("before");
    assert_eq!(statuses(&before), Vec::<String>::new());
    let first = t.get(&at(revs[0].to_string())).await.ok_json("at r1");
    assert_eq!(statuses(&first), ["PROVISIONING"]);
    assert_eq!(first["metadata"]["entityVersion"], revs[0].to_string());
    let between = t
        .get(&at(actors::time::format_ms(observed[1])))
        .await
        .ok_json("at t2");
    assert_eq!(statuses(&between), ["RUNNING"]);
    assert_eq!(between["metadata"]["entityVersion"], revs[1].to_string());
    let filtered = format!("/v1/tasks?status=STOPPED&at={}", revs[1]);
    assert_eq!(
        statuses(&t.get(&filtered).await.ok_json("filtered")).len(),
        0
    );
    let filtered = format!("/v1/tasks?status=STOPPED&at={}", revs[2]);
    assert_eq!(
        statuses(&t.get(&filtered).await.ok_json("filtered")),
        ["STOPPED"]
    );
    let clusters = t
        .get(&format!("/v1/clusters?at={}", revs[0]))
        .await
        .ok_json("clusters at r1");
    assert_eq!(
        clusters["items"][0]["tasks"],
        serde_json::json!({"PROVISIONING": 1})
    );

    // A deletion ends the history; the list after it no longer has the task.
    t.delete_stored(actors::model::Kind::Task, "/t1").await;
    let h = t.get(&history).await.ok_json("history after delete");
    let last = h["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["deleted"], true, "{h}");
    assert!(last.get("entity").is_none(), "{last}");
    let gone = version(&last);
    assert_eq!(
        statuses(&t.get(&at(gone.to_string())).await.ok_json("gone")).len(),
        0
    );
    assert_eq!(
        statuses(
            &t.get(&at((gone - 1).to_string()))
                .await
                .ok_json("just before")
        ),
        ["STOPPED"]
    );

    // Pages of a list of the past all come from that revision.
    let ids: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
    let running: Vec<String> = ids
        .iter()
        .map(|i| task_event("hp", i, 1, "RUNNING"))
        .collect();
    t.inject(&running).await;
    let then = t.get("/v1/tasks?cluster=hp").await.ok_json("hp");
    let then = then["metadata"]["entityVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let stopped: Vec<String> = ids
        .iter()
        .map(|i| task_event("hp", i, 2, "STOPPED"))
        .collect();
    t.inject(&stopped).await;
    let (items, pages) = all_pages(&t, &format!("/v1/tasks?cluster=hp&limit=2&at={then}")).await;
    assert_eq!(items.len(), 5);
    assert!(items.iter().all(|i| i["entity"]["lastStatus"] == "RUNNING"));
    assert_eq!(pages.len(), 3);
    assert!(pages.iter().all(|p| *p == then), "{pages:?}");

    // Not a moment of the past.
    let now: u64 = t.get("/v1/tasks").await.json()["metadata"]["entityVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let m = error(&t, &format!("/v1/tasks?at={}", now + 1), 400, "InvalidAt").await;
    assert!(m.starts_with("Invalid at"), "{m}");
    error(&t, "/v1/tasks?at=2999-01-01T00:00:00Z", 400, "InvalidAt").await;
    error(&t, "/v1/services?at=yesterday", 400, "InvalidAt").await;
    // A stream follows the present: `at` is not one of its parameters.
    let m = error(&t, "/v1/stream/tasks?at=1", 400, "UnsupportedFilter").await;
    assert!(m.ends_with(": at"), "{m}");
    error(
        &t,
        &format!("{}/history", task_path("h", "never")),
        404,
        "TaskNotFound",
    )
    .await;
    error(&t, &format!("{history}?since=soon"), 400, "InvalidSince").await;
}

async fn history_older_than_the_retention_is_gone(b: Backend) {
    let t = start_with_on(b, Feed::None, |s| {
        s.store.history_retention = Some(Duration::from_secs(1));
    })
    .await;
    age_out_two_writes(&t).await;
    let first = t.rev(1);
    let path = format!("/v1/tasks?at={first}");
    let expired = eventually(Duration::from_secs(10), || async {
        t.get(&path).await.status == 410
    })
    .await;
    assert!(
        expired,
        "revision {first} is older than the retention but still listed"
    );
    let m = error(&t, &path, 410, "HistoryExpired").await;
    assert!(
        m.starts_with("History before") && m.ends_with("is no longer kept"),
        "{m}"
    );
    error(
        &t,
        "/v1/tasks?at=2020-01-01T00:00:00Z",
        410,
        "HistoryExpired",
    )
    .await;
    // What is kept: the state at the oldest kept moment, and what came after.
    let h = t
        .get(&format!("{}/history", task_path("c", "a")))
        .await
        .ok_json("history");
    let versions: Vec<i64> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["entity"]["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions.last(), Some(&3), "{h}");
    assert!(
        !versions.contains(&1),
        "version 1 is past the retention: {h}"
    );
    let kept = h["metadata"]["historyFrom"].as_str().unwrap();
    let now = t
        .get(&format!("/v1/tasks?at={kept}"))
        .await
        .ok_json("at historyFrom");
    assert_eq!(now["items"].as_array().unwrap().len(), 1, "{now}");
}

on_both_backends!(history_is_the_same_after_a_restart);
async fn history_is_the_same_after_a_restart(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let mut used = None;
    let t = start_with_on(b, Feed::None, |s| {
        s.store.data_dir = data.clone();
        used = Some(s.clone());
    })
    .await;
    t.inject(&[task_event("r", "t", 1, "PENDING")]).await;
    t.inject(&[task_event("r", "t", 2, "RUNNING")]).await;
    let first = t.rev(1);
    let paths = [
        format!("{}/history", task_path("r", "t")),
        format!("/v1/tasks?at={first}"),
        format!("/v1/clusters?at={first}"),
    ];
    let mut answers = Vec::new();
    for p in &paths {
        answers.push(t.get(p).await.ok_json(p));
    }
    assert_eq!(statuses(&answers[1]), ["PENDING"]);
    t.svc.stop().await;

    // The same store (the same file, or the same etcd). The stopped actors
    // let go of an embedded store's file as they wind down.
    let s = used.expect("the settings");
    let mut again = None;
    for _ in 0..200 {
        match css::service::Service::start(&s, Feed::None, css::logging::discard()).await {
            Ok(svc) => {
                again = Some(svc);
                break;
            }
            Err(e) => {
                assert!(e.to_string().contains("locked"), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let again = again.expect("the store is let go of within 10 s");
    let ready = eventually(Duration::from_secs(10), || async {
        get(again.addr, "/readyz").await.status == 200
    })
    .await;
    assert!(ready);
    for (p, before) in paths.iter().zip(&answers) {
        assert_eq!(&get(again.addr, p).await.ok_json(p), before, "{p}");
    }
}

const CL: &str = "arn:aws:ecs:us-west-2:111122223333:cluster/cl";

fn td(revision: u32) -> String {
    format!("arn:aws:ecs:us-west-2:111122223333:task-definition/web:{revision}")
}

/// Service `web` of cluster `cl`: deployment `d2` (web:8, PRIMARY, in
/// `rollout`) replacing `d1` (web:7), and its events (newest first).
fn web(rollout: &str, at: i64, events: &[(&str, i64, &str)]) -> actors::model::Entry {
    use actors::model::{Deployment, Service, ServiceEvent};
    let deployment = |id: &str, status: &str, rev: u32, state: &str, updated: i64| Deployment {
        id: Some(id.into()),
        status: Some(status.into()),
        task_definition_arn: Some(td(rev)),
        desired_count: Some(3),
        running_count: Some(0),
        pending_count: Some(0),
        failed_tasks: Some(0),
        rollout_state: Some(state.into()),
        rollout_state_reason: Some(format!("ECS deployment {id}: {state}")),
        created_at: Some(actors::time::format_ms(at - 5000)),
        updated_at: Some(actors::time::format_ms(updated)),
        ..Deployment::default()
    };
    let service = Service {
        service_arn: "arn:aws:ecs:us-west-2:111122223333:service/cl/web".into(),
        service_name: "web".into(),
        cluster_arn: CL.into(),
        status: "ACTIVE".into(),
        desired_count: Some(3),
        running_count: Some(0),
        pending_count: Some(0),
        task_definition_arn: Some(td(8)),
        launch_type: Some("FARGATE".into()),
        platform_version: None,
        scheduling_strategy: None,
        created_at: None,
        deployments: vec![
            deployment("d2", "PRIMARY", 8, rollout, at),
            deployment("d1", "ACTIVE", 7, "COMPLETED", at - 60_000),
        ],
        events: events
            .iter()
            .map(|(id, created, message)| ServiceEvent {
                id: Some((*id).into()),
                created_at: Some(actors::time::format_ms(*created)),
                message: Some((*message).into()),
            })
            .collect(),
        load_balancers: Vec::new(),
        updated_at: None,
    };
    actors::model::Entry::from_service(&service).unwrap()
}

/// Task `id` of `web` (web:8) at `status`: started at `at`, and when
/// STOPPED, stopped at `at` with its container exited 1.
fn web_task(id: &str, version: u64, status: &str, at: i64) -> String {
    let mut v: Value = serde_json::from_str(&task_event("cl", id, version, status)).unwrap();
    let d = &mut v["detail"];
    d["taskDefinitionArn"] = serde_json::json!(td(8));
    d["startedAt"] = serde_json::json!(actors::time::format_ms(at - 1000));
    if status == "STOPPED" {
        d["stoppedAt"] = serde_json::json!(actors::time::format_ms(at));
        d["stopCode"] = serde_json::json!("EssentialContainerExited");
        d["stoppedReason"] = serde_json::json!("Essential container in task exited");
        d["desiredStatus"] = serde_json::json!("STOPPED");
        d["containers"] = serde_json::json!([{"name": "app", "lastStatus": "STOPPED",
            "exitCode": 1, "reason": "OutOfMemoryError: Container killed due to memory usage"}]);
    }
    v.to_string()
}

/// A series' value at `/metrics/state` (see [`metric_in`]).
async fn state_metric(t: &TestService, series: &str) -> f64 {
    let body = t.get("/metrics/state").await.body;
    metric_in(&String::from_utf8_lossy(&body), series)
}

/// Positions in a newest-first timeline: of the first item `pick` accepts.
fn position(items: &[Value], pick: impl Fn(&Value) -> bool) -> usize {
    items
        .iter()
        .position(pick)
        .unwrap_or_else(|| panic!("no such item in {}", Value::Array(items.to_vec())))
}

/// A failing rollout told by the timeline in order (newest first): the
/// deployment's end (FAILED), its failed tasks with their exit codes, its
/// tasks started, and the deployment's start; `None` if any is missing.
fn told_in_order(items: &[Value], deployment: &str, td: &str) -> Option<()> {
    fn is(t: &'static str) -> impl Fn(&&Value) -> bool {
        move |i: &&Value| i["type"] == t
    }
    let of_td = |i: &&Value| i["taskDefinitionARN"] == td;
    let ended = items.iter().position(|i| {
        i["type"] == "deployment" && i["id"] == deployment && i["rolloutState"] == "FAILED"
    })?;
    let failed = items.iter().position(|i| {
        is("taskStopped")(&i)
            && of_td(&i)
            && i["failed"] == true
            && i["containers"][0]["exitCode"] == 1
    })?;
    let started = failed
        + 1
        + items[failed + 1..]
            .iter()
            .position(|i| is("taskStarted")(&i) && of_td(&i))?;
    let began = items.iter().rposition(|i| {
        i["type"] == "deployment" && i["id"] == deployment && i["rolloutState"] == "IN_PROGRESS"
    })?;
    (ended < failed && failed < started && started < began).then_some(())
}

#[actix_web::test]
async fn a_failing_rollout_shows_in_the_timeline_the_state_metrics_and_a_prometheus_alert() {
    let t = start_with(Feed::None, |s| {
        s.history.failure_window = Duration::from_secs(15);
        s.history.crashloop_failures = 3;
    })
    .await;
    let rules = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(rules.path(), crate::prom::readme_alert_rules()).unwrap();
    let prom = crate::servers::Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{}']\n\
         scrape_configs:\n  - job_name: ecs-state\n    metrics_path: /metrics/state\n    \
         static_configs:\n      - targets: ['{}']\n",
        rules.path().display(),
        t.addr()
    ));
    let crashlooping = r#"ecs_service_crashlooping{cluster="cl",service="web"}"#;
    let now = actors::time::now_ms();
    let started = (
        now - 5000,
        "e1",
        "(service web) has started a deployment of web:8.",
    );
    t.apply(vec![actors::store::Op::Put(web(
        "IN_PROGRESS",
        now - 5000,
        &[(started.1, started.0, started.2)],
    ))])
    .await;
    let ids = ["t1", "t2", "t3"];
    for (i, id) in ids.iter().enumerate() {
        t.inject(&[web_task(id, 1, "RUNNING", now - 4000 + i as i64)])
            .await;
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            state_metric(&t, crashlooping).await,
            0.0,
            "before failure {i}"
        );
        t.inject(&[web_task(id, 2, "STOPPED", now - 3000 + i as i64)])
            .await;
    }
    assert_eq!(state_metric(&t, crashlooping).await, 1.0);
    let recent = r#"ecs_service_tasks_failed_recent{cluster="cl",service="web",task_definition="arn:aws:ecs:us-west-2:111122223333:task-definition/web:8"}"#;
    assert_eq!(state_metric(&t, recent).await, 3.0);
    let failed_total = r#"ecs_service_deployments_failed_total{cluster="cl",service="web"}"#;
    assert_eq!(state_metric(&t, failed_total).await, 0.0);
    let ended = (
        now - 1000,
        "e2",
        "(service web) (deployment d2) deployment failed: tasks failed to start.",
    );
    let events = [
        (ended.1, ended.0, ended.2),
        (started.1, started.0, started.2),
    ];
    t.apply(vec![actors::store::Op::Put(web(
        "FAILED",
        now - 1000,
        &events,
    ))])
    .await;
    assert_eq!(state_metric(&t, failed_total).await, 1.0);

    // The timeline, newest first.
    let path = "/v1/services/cl/web/timeline";
    let tl = t.get(path).await.ok_json("timeline");
    let items = tl["items"].as_array().unwrap().clone();
    assert!(told_in_order(&items, "d2", &td(8)).is_some(), "{tl}");
    let ats: Vec<i64> = items
        .iter()
        .map(|i| actors::time::parse_ms(i["at"].as_str().unwrap()).unwrap())
        .collect();
    assert!(
        ats.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {ats:?}"
    );
    assert_eq!(
        items.iter().filter(|i| i["type"] == "taskStarted").count(),
        3
    );
    assert_eq!(
        items.iter().filter(|i| i["type"] == "taskStopped").count(),
        3
    );
    let stop = &items[position(&items, |i| i["type"] == "taskStopped")];
    assert_eq!(stop["stopCode"], "EssentialContainerExited");
    assert_eq!(
        stop["containers"][0]["reason"],
        "OutOfMemoryError: Container killed due to memory usage"
    );
    assert!(stop["entityVersion"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());
    let event = &items[position(&items, |i| i["type"] == "serviceEvent")];
    assert_eq!(
        (&event["id"], &event["message"]),
        (&Value::from("e2"), &Value::from(ended.2))
    );
    // Paged, and since=.
    let first = t.get(&format!("{path}?limit=4")).await.ok_json("page");
    let token = first["nextToken"].as_str().expect("nextToken");
    let rest = t
        .get(&format!("{path}?nextToken={token}"))
        .await
        .ok_json("rest");
    let paged: Vec<Value> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["items"].as_array().unwrap())
        .cloned()
        .collect();
    assert_eq!(paged, items);
    let since = actors::time::format_ms(now - 3500);
    let late = t
        .get(&format!("{path}?since={since}"))
        .await
        .ok_json("since");
    assert!(
        late["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["type"] != "taskStarted"),
        "{late}"
    );
    error(&t, "/v1/services/cl/nope/timeline", 404, "ServiceNotFound").await;

    // A real Prometheus fires the README's crash-loop rule.
    let alerts = "/api/v1/alerts";
    let firing = eventually(Duration::from_secs(30), || async {
        let v: Value =
            serde_json::from_slice(&get(prom.addr, alerts).await.body).unwrap_or_default();
        v["data"]["alerts"].as_array().is_some_and(|a| {
            a.iter().any(|x| {
                x["labels"]["alertname"] == "EcsServiceCrashLooping"
                    && x["labels"]["service"] == "web"
                    && x["state"] == "firing"
            })
        })
    })
    .await;
    assert!(firing, "EcsServiceCrashLooping never fired");
    // Past the window it is over.
    let over = eventually(Duration::from_secs(30), || async {
        state_metric(&t, crashlooping).await == 0.0
    })
    .await;
    assert!(over, "still crash-looping after the window");
}

on_both_backends!(the_simulator_s_failing_rollouts_show_in_order);

async fn the_simulator_s_failing_rollouts_show_in_order(b: Backend) {
    let t = start_with_on(b, Feed::Simulate, |s| {
        s.simulate = actors::source::simulate::Config {
            seed: 3,
            clusters: 1,
            instances_per_cluster: 2,
            tasks_per_instance: 3,
            events_per_second: 200.0,
            duplicate_rate: 0.0,
            reorder_rate: 0.0,
            ..Default::default()
        };
        // Each state of a rollout (seconds long here) is described: ECS's
        // take minutes, longer than the default 5 s between describes.
        s.reconcile.service_refresh = Duration::from_millis(500);
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let shown = loop {
        if let Some(found) = failing_rollout(&t).await {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failing rollout within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (items, id, td) = shown;
    let brief: Vec<String> = items
        .iter()
        .filter(|i| i["taskDefinitionARN"] == td.as_str() || i["id"] == id.as_str())
        .map(|i| {
            format!(
                "{} {} {} {}{}{}",
                i["at"],
                i["entityVersion"],
                i["type"],
                i["rolloutState"],
                i["failed"],
                i["containers"][0]["exitCode"]
            )
        })
        .collect();
    assert!(
        told_in_order(&items, &id, &td).is_some(),
        "deployment {id} of {td}, newest first:\n{}",
        brief.join("\n")
    );
}

/// The timeline of a service whose rollout failed, with the deployment's
/// id and task definition.
async fn failing_rollout(t: &TestService) -> Option<(Vec<Value>, String, String)> {
    let services = t.get("/v1/services").await.json();
    for s in services["items"].as_array().into_iter().flatten() {
        let name = s["entity"]["serviceName"].as_str().unwrap_or_default();
        let cluster = s["entity"]["clusterARN"].as_str().unwrap_or_default();
        let path = format!(
            "/v1/services/{}/{name}/timeline",
            actors::arn::cluster_name(cluster).unwrap_or_default()
        );
        let tl = t.get(&path).await.json();
        let items = tl["items"].as_array().cloned().unwrap_or_default();
        let failed = items
            .iter()
            .find(|i| i["type"] == "deployment" && i["rolloutState"] == "FAILED");
        if let Some(d) = failed {
            let id = d["id"].as_str()?.to_owned();
            let td = d["taskDefinitionARN"].as_str()?.to_owned();
            return Some((items, id, td));
        }
    }
    None
}

/// The dashboard (history.md): a task's panel shows each of its states with
/// its time; a service page shows its timeline, newest first, and follows it
/// live; the tasks view "as of" a moment (`at=` in the URL) lists the tasks
/// as they were — in Chromium.
#[actix_web::test]
async fn the_dashboard_shows_a_task_s_history_a_service_s_timeline_and_the_past() {
    use css_bench::webdriver::Browser;
    let _alone = crate::support::heavy().await;
    let t = start().await;
    let mut last_ms = actors::time::now_ms();
    let now = last_ms;
    t.apply(vec![actors::store::Op::Put(web(
        "IN_PROGRESS",
        now - 5000,
        &[],
    ))])
    .await;
    let mut revs = Vec::new();
    for (v, status) in [(1, "PENDING"), (2, "RUNNING"), (3, "STOPPED")] {
        after(last_ms).await;
        t.inject(&[web_task("t1", v, status, now - 4000 + v as i64 * 100)])
            .await;
        last_ms = actors::time::now_ms();
        let h = t
            .get(&format!("{}/history", task_path("cl", "t1")))
            .await
            .json();
        revs.push(h["metadata"]["entityVersion"].as_str().unwrap().to_owned());
    }
    let b = Browser::start().await;

    // The task's panel: its three states, each with its time.
    b.go(&format!("http://{}/ui/#/tasks?cluster=cl", t.addr()))
        .await;
    let rows = "return document.querySelectorAll('#tasks tbody tr').length";
    assert_eq!(
        b.until(Duration::from_secs(15), rows).await,
        Some(serde_json::json!(1))
    );
    b.click("#tasks tbody tr").await;
    let states = "const l = document.querySelectorAll('#panel:not([hidden]) #history li'); \
        return l.length === 3 && [...l].map((e) => e.querySelector('.status').textContent + ' ' + !!e.querySelector('time').textContent)";
    assert_eq!(
        b.until(Duration::from_secs(10), states).await,
        Some(serde_json::json!([
            "PENDING true",
            "RUNNING true",
            "STOPPED true"
        ]))
    );

    // As of the second state's revision: the task was RUNNING; the URL says so.
    b.go(&format!("http://{}/ui/#/tasks?cluster=cl", t.addr()))
        .await;
    b.type_into("#f-at", &format!("{}\u{E007}", revs[1])).await;
    let then = "const r = document.querySelector('#tasks tbody tr .status'); \
        return r && location.hash.includes('at=') && document.querySelector('#count').dataset.asOf === arguments[0] && r.textContent";
    let shown = b
        .until(
            Duration::from_secs(10),
            &then.replace("arguments[0]", &format!("'{}'", revs[1])),
        )
        .await;
    assert_eq!(shown, Some(serde_json::json!("RUNNING")));
    let hash = b.js("return location.hash", serde_json::json!([])).await;
    assert_eq!(
        hash,
        serde_json::json!(format!("#/tasks?cluster=cl&at={}", revs[1]))
    );

    // The service page: its timeline, newest first, live.
    b.go(&format!("http://{}/ui/#/services", t.addr())).await;
    let link = "const a = document.querySelector('a.service-page'); return a && a.textContent";
    assert_eq!(
        b.until(Duration::from_secs(10), link).await,
        Some(serde_json::json!("web"))
    );
    b.click("a.service-page").await;
    let types = "const l = document.querySelectorAll('#timeline li'); return l.length > 0 && [...l].map((e) => e.dataset.type)";
    let first = b
        .until(Duration::from_secs(10), types)
        .await
        .expect("a timeline");
    assert_eq!(first[0], "taskStopped", "newest first: {first}");
    assert!(
        first.as_array().unwrap().iter().any(|x| x == "taskStarted"),
        "{first}"
    );
    assert_eq!(
        first.as_array().unwrap().last().unwrap(),
        "deployment",
        "{first}"
    );
    let exit = "const e = document.querySelector('#timeline li[data-type=taskStopped] .exit-code'); return e && e.textContent";
    assert_eq!(
        b.until(Duration::from_secs(5), exit).await,
        Some(serde_json::json!("1"))
    );
    // The rollout fails: the page shows it without a reload.
    let ended = (
        "e2",
        now - 1000,
        "(service web) (deployment d2) deployment failed: tasks failed to start.",
    );
    t.apply(vec![actors::store::Op::Put(web(
        "FAILED",
        now - 1000,
        &[ended],
    ))])
    .await;
    let live = "return [...document.querySelectorAll('#timeline li[data-type=deployment]')] \
        .some((l) => l.innerText.includes('FAILED')) || null";
    assert!(
        b.until(Duration::from_secs(10), live).await.is_some(),
        "the failed rollout did not show within 10 s"
    );
}

on_both_backends!(a_list_of_the_past_is_the_live_list_of_that_revision);

/// A list `at=` the current revision answers what the live list answers,
/// filtered and paged alike, over more entities than one window of the
/// store (500) holds.
async fn a_list_of_the_past_is_the_live_list_of_that_revision(b: Backend) {
    let t = start_on(b).await;
    let events: Vec<String> = (0..2600)
        .map(|i| {
            let status = if i % 3 == 0 { "STOPPED" } else { "RUNNING" };
            task_event(&format!("w{}", i % 3), &format!("t{i:05}"), 1, status)
        })
        .collect();
    for chunk in events.chunks(500) {
        t.inject(chunk).await;
    }
    let live = t.get("/v1/tasks").await.ok_json("live");
    let revision = live["metadata"]["entityVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(live["items"].as_array().unwrap().len(), 2600);
    for query in [
        "",
        "cluster=w1",
        "status=STOPPED",
        "cluster=w2&status=RUNNING",
    ] {
        let now = t.get(&format!("/v1/tasks?{query}")).await.ok_json(query);
        let then = t
            .get(&format!("/v1/tasks?{query}&at={revision}"))
            .await
            .ok_json(query);
        assert_eq!(then["items"], now["items"], "{query}");
        assert_eq!(then["metadata"]["entityVersion"], revision.as_str());
        let (paged, pages) =
            all_pages(&t, &format!("/v1/tasks?{query}&limit=700&at={revision}")).await;
        assert_eq!(Value::Array(paged), now["items"], "{query}, paged");
        assert!(pages.iter().all(|p| *p == revision), "{pages:?}");
    }
}

/// A service's timeline from moto's ECS, through the real binary: its
/// deployment and its tasks started (from the reconcile of moto's ECS), and
/// a task that failed with its exit code (from the task event ECS sends
/// through EventBridge, on moto's SQS, as ECS stops the task), in order.
/// (moto cannot move a deployment's `rolloutState` after creation, so the
/// deployment's end is told by the simulator's rollouts above.)
#[actix_web::test]
async fn a_service_s_timeline_from_moto_s_ecs() {
    use crate::reconcile::{moto_ecs, moto_task_change, EcsStack};
    let s = EcsStack::new().await;
    let made = moto_ecs(
        &s.moto,
        serde_json::json!({"clusters": {"shop": {"instances": 1, "services": {"web": 2},
            "service_tasks": {"web": 2}}}}),
    );
    let tasks: Vec<String> = made["shop"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tasks.len(), 2, "{made}");
    let p = s.service(&[("CSS_RECONCILE__INTERVAL", "1s".into())]);
    p.wait_ready(Duration::from_secs(30)).await;
    let path = "/v1/services/shop/web/timeline";
    let items = |v: &Value| v["items"].as_array().cloned().unwrap_or_default();
    let started = eventually(Duration::from_secs(30), || async {
        let tl = p.try_get(path).await.map(|r| r.json()).unwrap_or_default();
        let items = items(&tl);
        items.iter().filter(|i| i["type"] == "taskStarted").count() == 2
            && items.iter().any(|i| i["type"] == "deployment")
    })
    .await;
    assert!(started, "{}", p.get(path).await.json());
    let reason = "Essential container in task exited";
    // ECS's event for the stop: moto's own answers carry no exit codes (nor
    // a version, so they never overwrite the event's).
    let task = p.get(&format!("/v1/tasks/shop/{}", tasks[0])).await.json();
    let now = actors::time::format_ms(actors::time::now_ms());
    let event = serde_json::json!({
        "clusterArn": made["shop"]["cluster"], "taskArn": tasks[0],
        "taskDefinitionArn": task["taskDefinitionARN"], "group": "service:web",
        "lastStatus": "STOPPED", "desiredStatus": "STOPPED", "version": 3,
        "startedAt": task["startedAt"], "stoppedAt": now,
        "stopCode": "EssentialContainerExited", "stoppedReason": reason,
        "containers": [{"name": "web", "lastStatus": "STOPPED", "exitCode": 137,
            "reason": "OutOfMemoryError: Container killed due to memory usage"}],
    });
    s.send(moto_task_change("ev-stop", event)).await;
    moto_ecs(
        &s.moto,
        serde_json::json!({"stop": [{"cluster": "shop", "task": tasks[0], "reason": reason}]}),
    );
    let stopped = eventually(Duration::from_secs(30), || async {
        let tl = p.try_get(path).await.map(|r| r.json()).unwrap_or_default();
        items(&tl)
            .iter()
            .any(|i| i["type"] == "taskStopped" && i["taskARN"] == tasks[0].as_str())
    })
    .await;
    let tl = p.get(path).await.json();
    assert!(stopped, "{tl}");
    let items = items(&tl);
    let at = |pick: &dyn Fn(&Value) -> bool| items.iter().position(pick).unwrap();
    let stop = at(&|i| i["type"] == "taskStopped" && i["taskARN"] == tasks[0].as_str());
    let start = at(&|i| i["type"] == "taskStarted" && i["taskARN"] == tasks[0].as_str());
    let deployment = at(&|i| i["type"] == "deployment" && i["rolloutState"] == "IN_PROGRESS");
    assert!(stop < start && start < deployment, "{tl}");
    assert_eq!(items[stop]["stoppedReason"], reason);
    assert_eq!(items[stop]["stopCode"], "EssentialContainerExited");
    assert_eq!(items[stop]["containers"][0]["exitCode"], 137, "{tl}");
    assert_eq!(items[stop]["failed"], true, "{tl}");
    // The other task still runs: its start is the only item about it.
    let other = |i: &&Value| i["taskARN"] == tasks[1].as_str();
    assert_eq!(items.iter().filter(other).count(), 1, "{tl}");
}
