//! Services (services.md): the API over stored services on both stores
//! (lists, filters and their 400s, describe by name or ARN, paging, streams
//! with snapshot and resume, no churn for an unchanged service), the
//! reconciler's sweeps and refreshes against a stub ECS whose answers the
//! test changes at will, `--simulate` with the real binary, and the real
//! binary against moto's ECS and SQS on both stores.

use crate::support::*;
use actors::ecs_client::{self as ecs, Described, Ecs, Page, TaskStatus};
use actors::model::{Deployment, Entry, Kind, Service};
use actors::store::{BoxFuture, Op, Outcome};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::Duration;

on_both_backends!(
    services_are_listed_filtered_and_described,
    service_streams_snapshot_resume_and_delete,
    services_come_from_moto_and_events_refresh_them,
);

/// A service as `DescribeServices` would render it, read at `read_ms`.
fn service(cluster: &str, name: &str, edit: impl FnOnce(&mut Service)) -> Service {
    let mut s = Service {
        service_arn: service_arn(cluster, name),
        service_name: name.into(),
        cluster_arn: cluster_arn(cluster),
        status: "ACTIVE".into(),
        desired_count: Some(2),
        running_count: Some(2),
        pending_count: Some(0),
        task_definition_arn: Some(task_definition(&format!("{name}:1"))),
        launch_type: Some("EC2".into()),
        platform_version: None,
        scheduling_strategy: Some("REPLICA".into()),
        created_at: Some("2026-11-01T00:00:00.000Z".into()),
        deployments: Vec::new(),
        events: Vec::new(),
        load_balancers: Vec::new(),
        updated_at: Some("2026-11-30T10:00:00.000Z".into()),
    };
    edit(&mut s);
    s
}

fn rolling(s: &mut Service, state: &str) {
    s.deployments = vec![Deployment {
        id: Some("ecs-svc/1".into()),
        status: Some("PRIMARY".into()),
        task_definition_arn: s.task_definition_arn.clone(),
        rollout_state: Some(state.into()),
        ..Deployment::default()
    }];
}

/// Writes services through the writer, as the reconciler does.
async fn put(t: &TestService, services: &[Service]) -> Vec<Outcome> {
    let ops = services
        .iter()
        .map(|s| Op::Put(Entry::from_service(s).unwrap()))
        .collect();
    t.apply(ops).await
}

/// Four services in two clusters, written one at a time (so their
/// revisions follow this order): `etl` and `old` in `9batch`, `api` and
/// `web` in `prod-web`.
async fn services(b: Backend) -> TestService {
    let t = start_on(b).await;
    let all = [
        service("prod-web", "web", |s| {
            s.task_definition_arn = Some(task_definition("web:7"));
            rolling(s, "COMPLETED");
        }),
        service("prod-web", "api", |s| {
            s.status = "DRAINING".into();
            s.launch_type = Some("FARGATE".into());
            s.task_definition_arn = Some(task_definition("api:3"));
            rolling(s, "IN_PROGRESS");
        }),
        service("9batch", "etl", |s| {
            s.launch_type = Some("FARGATE".into());
            s.task_definition_arn = Some(task_definition("web:8"));
            rolling(s, "FAILED");
        }),
        service("9batch", "old", |s| {
            s.status = "INACTIVE".into();
            s.desired_count = Some(0);
        }),
    ];
    for s in &all {
        let out = put(&t, std::slice::from_ref(s)).await;
        assert!(matches!(out[..], [Outcome::Applied(_)]), "{out:?}");
    }
    t
}

fn names(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {v}"))
        .iter()
        .map(|i| i["entity"]["serviceName"].as_str().unwrap().to_owned())
        .collect()
}

async fn listed(t: &TestService, query: &str) -> Vec<String> {
    names(&t.get(&format!("/v1/services{query}")).await.ok_json(query))
}

async fn refused(t: &TestService, path: &str, status: u16, message: &str) {
    let r = t.get(path).await;
    r.expect_status(status, path);
    assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
    let got = r.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(got.contains(message), "{path}: {got:?} lacks {message:?}");
}

async fn services_are_listed_filtered_and_described(b: Backend) {
    let t = services(b).await;
    let all = ["etl", "old", "api", "web"];
    let cases: &[(&str, &[&str])] = &[
        ("", &all),
        ("?status=active", &["etl", "web"]),
        ("?status=Inactive", &["old"]),
        ("?status=DRAINING", &["api"]),
        ("?status=", &all),
        ("?cluster=9batch", &["etl", "old"]),
        (
            "?cluster=arn:aws:ecs:us-west-2:111122223333:cluster%2Fprod-web",
            &["api", "web"],
        ),
        ("?cluster=other", &[]),
        ("?launchType=fargate", &["etl", "api"]),
        ("?launchType=EC2&cluster=prod-web", &["web"]),
        ("?taskDefinition=web", &["etl", "web"]),
        ("?taskDefinition=web:7", &["web"]),
        (
            "?taskDefinition=arn:aws:ecs:us-west-2:111122223333:task-definition/web:8",
            &["etl"],
        ),
        ("?taskDefinition=web:9", &[]),
        ("?rollout=in_progress", &["api"]),
        ("?rollout=FAILED", &["etl"]),
        ("?rollout=COMPLETED&cluster=prod-web", &["web"]),
        ("?rollout=COMPLETED&status=draining", &[]),
    ];
    for (q, want) in cases {
        assert_eq!(listed(&t, q).await, *want, "{q}");
    }
    for (path, message) in [
        ("/v1/services?status=RUNNING", "Invalid status"),
        ("/v1/services?rollout=DONE", "Invalid rollout"),
        (
            "/v1/services?taskDefinition=web:x",
            "Invalid taskDefinition",
        ),
        (
            "/v1/services?taskDefinition=arn:aws:ecs:r:1:task/x",
            "Invalid taskDefinition",
        ),
        ("/v1/services?launchType=moon", "Invalid launchType"),
        ("/v1/services?family=web", "filters provided is unsupported"),
        (
            "/v1/services?service=web",
            "filters provided is unsupported",
        ),
        (
            "/v1/services?status=ACTIVE&status=DRAINING",
            "specified multiple times",
        ),
        ("/v1/services?cluster=bad!", "Invalid cluster"),
        ("/v1/services?limit=0", "Invalid limit"),
        ("/v1/services?nextToken=junk", "Invalid nextToken"),
        ("/v1/stream/services?rollout=x", "Invalid rollout"),
        (
            "/v1/stream/services?agentConnected=true",
            "filters provided is unsupported",
        ),
        ("/v1/services/prod-web/bad!", "Invalid service ARN or name"),
        (
            "/v1/services/prod-web/arn:aws:ecs:us-west-2:1:task/prod-web/x",
            "Invalid service ARN",
        ),
        ("/v1/services/bad!/web", "Invalid cluster"),
    ] {
        refused(&t, path, 400, message).await;
    }
    // Describe: by name, by ARN raw or encoded, the cluster by name or ARN.
    let web = service_arn("prod-web", "web");
    let enc = |s: &str| s.replace('/', "%2F").replace(':', "%3A");
    for path in [
        "/v1/services/prod-web/web".to_owned(),
        format!("/v1/services/prod-web/{web}"),
        format!("/v1/services/prod-web/{}", enc(&web)),
        format!("/v1/services/{}/web", enc(&cluster_arn("prod-web"))),
        format!("/v1/services/{}/{web}", cluster_arn("prod-web")),
    ] {
        let item = t.get(&path).await.ok_json(&path);
        assert_eq!(item["entity"]["serviceARN"], web.as_str(), "{path}");
        assert_eq!(
            item["entity"]["taskDefinitionARN"],
            task_definition("web:7")
        );
        assert_eq!(
            item["entity"]["deployments"][0]["rolloutState"],
            "COMPLETED"
        );
        assert!(version_of(&item) > t.base, "{item}");
    }
    for path in [
        "/v1/services/9batch/web".to_owned(),
        "/v1/services/prod-web/nope".to_owned(),
        format!("/v1/services/prod-web/{}", service_arn("prod-web", "nope")),
        format!("/v1/services/9batch/{web}"),
    ] {
        refused(&t, &path, 404, "Service not found").await;
        assert_eq!(t.get(&path).await.json()["code"], "ServiceNotFound");
    }

    // Pages concatenate to the whole list, all from one snapshot.
    let whole = t.get("/v1/services").await.json();
    let mut items = Vec::new();
    let mut path = "/v1/services?limit=1".to_owned();
    for _ in 0..10 {
        let page = t.get(&path).await.json();
        assert_eq!(page["metadata"], whole["metadata"]);
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["nextToken"].as_str() {
            Some(tok) => path = format!("/v1/services?limit=1&nextToken={tok}"),
            None => break,
        }
        // A write between pages does not show in the listing's later pages.
        put(&t, &[service("zz", "late", |_| {})]).await;
    }
    assert_eq!(Value::Array(items), whole["items"]);
    assert_eq!(listed(&t, "?cluster=zz").await, ["late"]);

    // An answer that differs only in when it was read changes nothing.
    let again = service("prod-web", "web", |s| {
        s.task_definition_arn = Some(task_definition("web:7"));
        rolling(s, "COMPLETED");
        s.updated_at = Some("2026-11-30T11:11:11.000Z".into());
    });
    let before = t.get("/v1/services/prod-web/web").await.json();
    assert!(matches!(put(&t, &[again]).await[..], [Outcome::Stale]));
    assert_eq!(t.get("/v1/services/prod-web/web").await.json(), before);
    assert_eq!(t.metric("css_view_entities{kind=\"service\"}").await, 5.0);
    // The task list is not the service list.
    assert_eq!(t.get("/v1/tasks").await.json()["items"], json!([]));
}

async fn service_streams_snapshot_resume_and_delete(b: Backend) {
    let t = services(b).await;
    let within = Duration::from_secs(5);
    let mut s = StreamClient::open(t.addr(), "/v1/stream/services?snapshot=true", "").await;
    assert_eq!(s.status, 200);
    let mut snapshot = Vec::new();
    for _ in 0..4 {
        snapshot.push(s.next_json(within).await.expect("a snapshot item"));
    }
    assert_eq!(
        names(&json!({ "items": snapshot })),
        ["etl", "old", "api", "web"]
    );
    let bookmark = s.next_json(within).await.expect("a bookmark");
    assert_eq!(
        bookmark["bookmark"]["entityVersion"],
        t.get("/v1/services").await.json()["metadata"]["entityVersion"]
    );

    // Changes follow, and only real ones (no churn for a re-read).
    put(
        &t,
        &[service("prod-web", "web", |s| s.running_count = Some(1))],
    )
    .await;
    put(
        &t,
        &[service("prod-web", "web", |s| {
            s.running_count = Some(1);
            s.updated_at = Some("2026-11-30T12:00:00.000Z".into());
        })],
    )
    .await;
    put(
        &t,
        &[service("9batch", "etl", |s| s.desired_count = Some(5))],
    )
    .await;
    let web = s.next_json(within).await.expect("web changed");
    assert_eq!(web["entity"]["runningCount"], 1);
    let etl = s.next_json(within).await.expect("etl changed");
    assert_eq!(
        etl["entity"]["serviceName"], "etl",
        "the re-read of web sent nothing"
    );
    assert_eq!(version_of(&etl), version_of(&web) + 1);

    // A deletion is announced.
    t.delete_stored(Kind::Service, "/old").await;
    let gone = s.next_json(within).await.expect("the deletion");
    assert_eq!(gone["metadata"]["deleted"], true);
    assert_eq!(gone["entity"]["serviceName"], "old");

    // Resuming from web's change misses nothing: web, etl, the deletion.
    let from = version_of(&web);
    let mut r = StreamClient::open(
        t.addr(),
        &format!("/v1/stream/services?entityVersion={from}"),
        "",
    )
    .await;
    let mut again = Vec::new();
    for _ in 0..3 {
        again.push(r.next_json(within).await.expect("a resumed item"));
    }
    assert_eq!(again, [web, etl, gone]);

    // SSE names service items `service`; filters apply to streams.
    let mut sse = StreamClient::open(
        t.addr(),
        "/v1/stream/services?snapshot=true&rollout=in_progress",
        "Accept: text/event-stream\r\n",
    )
    .await;
    let frame = sse
        .next_record(b"\n\n", within)
        .await
        .expect("an SSE frame");
    assert!(frame.contains("event: service\n"), "{frame}");
    assert!(frame.contains("\"serviceName\":\"api\""), "{frame}");
    let next = sse.next_record(b"\n\n", within).await.expect("a bookmark");
    assert!(next.contains("event: bookmark"), "{next}");
}

/// A stub ECS with one cluster `c` whose services the test sets: listed or
/// not, and what a describe answers for each (absent: `MISSING`).
#[derive(Default)]
struct Services {
    listed: Mutex<Vec<String>>,
    answers: Mutex<HashMap<String, Service>>,
    /// Every DescribeServices call: the names asked for.
    calls: Mutex<Vec<Vec<String>>>,
    /// ListServices is refused (as without `ecs:ListServices`).
    denied: std::sync::atomic::AtomicBool,
    /// The next this many DescribeServices calls fail.
    failing: std::sync::atomic::AtomicUsize,
}

fn now<T: Send + 'static>(v: ecs::Result<T>) -> BoxFuture<'static, ecs::Result<T>> {
    Box::pin(async move { v })
}

impl Services {
    fn set(&self, name: &str, listed: bool, answer: Option<Service>) {
        let arn = format!("arn:aws:ecs:r:1:service/c/{name}");
        let mut l = self.listed.lock().unwrap();
        l.retain(|a| *a != arn);
        if listed {
            l.push(arn);
        }
        let mut a = self.answers.lock().unwrap();
        match answer {
            Some(s) => a.insert(name.to_owned(), s),
            None => a.remove(name),
        };
    }

    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

fn stub_service(name: &str, status: &str, desired: i64) -> Service {
    Service {
        service_arn: format!("arn:aws:ecs:r:1:service/c/{name}"),
        cluster_arn: "arn:aws:ecs:r:1:cluster/c".into(),
        status: status.into(),
        desired_count: Some(desired),
        // Every answer is read anew.
        updated_at: Some(actors::time::format_ms(actors::time::now_ms())),
        ..service("c", name, |_| {})
    }
}

impl Ecs for Services {
    fn list_clusters(&self, _: Option<String>) -> BoxFuture<'_, ecs::Result<Page>> {
        now(Ok(Page {
            arns: vec!["arn:aws:ecs:r:1:cluster/c".into()],
            next: None,
        }))
    }
    fn list_container_instances(
        &self,
        _: &str,
        _: Option<String>,
    ) -> BoxFuture<'_, ecs::Result<Page>> {
        now(Ok(Page::default()))
    }
    fn describe_container_instances(
        &self,
        _: &str,
        _: Vec<String>,
    ) -> BoxFuture<'_, ecs::Result<Described>> {
        now(Ok(Described::default()))
    }
    fn list_tasks(
        &self,
        _: &str,
        _: TaskStatus,
        _: Option<String>,
    ) -> BoxFuture<'_, ecs::Result<Page>> {
        now(Ok(Page::default()))
    }
    fn describe_tasks(&self, _: &str, _: Vec<String>) -> BoxFuture<'_, ecs::Result<Described>> {
        now(Ok(Described::default()))
    }
    fn list_services(&self, _: &str, _: Option<String>) -> BoxFuture<'_, ecs::Result<Page>> {
        if self.denied.load(SeqCst) {
            return now(Err(ecs::Error::Other("AccessDeniedException".into())));
        }
        now(Ok(Page {
            arns: self.listed.lock().unwrap().clone(),
            next: None,
        }))
    }
    fn describe_services(
        &self,
        _: &str,
        services: Vec<String>,
    ) -> BoxFuture<'_, ecs::Result<Described>> {
        assert!(services.len() <= 10, "DescribeServices takes at most 10");
        self.calls.lock().unwrap().push(services.clone());
        let fail = self
            .failing
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return now(Err(ecs::Error::Other("ServerException".into())));
        }
        let answers = self.answers.lock().unwrap();
        let mut d = Described::default();
        for s in services {
            let name = s.rsplit('/').next().unwrap().to_owned();
            match answers.get(&name) {
                Some(a) => {
                    let mut a = a.clone();
                    a.updated_at = Some(actors::time::format_ms(actors::time::now_ms()));
                    d.entries.push(Entry::from_service(&a).unwrap());
                }
                None => d.failures.push((s, ecs::Failure::Missing)),
            }
        }
        now(Ok(d))
    }
}

/// Sends one message through the pipeline's decoder.
async fn decode(
    p: &actors::pipeline::Pipeline,
    id: &str,
    body: &Value,
) -> Vec<actors::decoder::MessageOutcome> {
    let messages = vec![actors::decoder::RawMessage::new(id, body.to_string())];
    let decode = actors::decoder::Decode { messages };
    p.decoder.send(decode).await.unwrap().unwrap()
}

async fn stored(p: &actors::pipeline::Pipeline, name: &str) -> Option<Value> {
    let snap = p.reader.snapshot().ok()?;
    let e = snap
        .of(Kind::Service)
        .values()
        .find(|e| e.service_name() == name)?
        .clone();
    let mut v: Value = serde_json::from_str(e.entity.get()).unwrap();
    v["entityVersion"] = json!(e.revision);
    Some(v)
}

/// The reconciler against a stub: sweeps store, re-read services churn
/// nothing, task changes and service events mark a service dirty and get it
/// described within `service_refresh` (once for many changes), and a
/// service that is no longer listed is stored INACTIVE, then deleted once
/// ECS answers MISSING.
#[actix_web::test]
async fn sweeps_and_refreshes_describe_services_against_a_stub() {
    use actors::decoder::MessageOutcome;
    use actors::reconciler::{Settings, SweepNow, Tuning};
    let ecs = Arc::new(Services::default());
    for (name, desired) in [("web", 2), ("api", 1)] {
        ecs.set(name, true, Some(stub_service(name, "ACTIVE", desired)));
    }
    // Twelve services: the sweep describes them in two calls.
    for i in 0..10 {
        let name = format!("s{i}");
        ecs.set(&name, true, Some(stub_service(&name, "ACTIVE", 1)));
    }
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(actors::metrics::Metrics::new());
    let settings = Settings {
        base: Tuning {
            interval: Duration::from_secs(3600),
            jitter: 0.0,
            max_requests_per_second: 1000.0,
            grace_period: Duration::ZERO,
            service_refresh: Duration::from_millis(500),
            ..Tuning::default()
        },
        ..Settings::default()
    };
    let p = actors::pipeline::Pipeline::start(
        Arc::new(actors::store::Embedded::open(dir.path()).unwrap()),
        actors::writer::Config::default(),
        actors::pipeline::Source::None,
        Some(actors::pipeline::Reconcile {
            settings,
            places: vec![(
                actors::accounts::Place::default(),
                ecs.clone() as Arc<dyn Ecs>,
            )],
        }),
        metrics.clone(),
        &css::logging::discard(),
    );
    let ready = eventually(Duration::from_secs(10), || async {
        p.reader.health().reconcile_pending() == 0 && stored(&p, "s9").await.is_some()
    })
    .await;
    let stats = metrics.cluster("arn:aws:ecs:r:1:cluster/c");
    assert!(
        ready,
        "the first sweep stores every service: pending {}, calls {:?}, sweeps {}, errors {}, stored {:?}",
        p.reader.health().reconcile_pending(),
        ecs.calls.lock().unwrap(),
        stats.sweeps.get(),
        stats.sweep_errors.get(),
        p.reader.snapshot().map(|s| s.of(Kind::Service).len()),
    );
    let [sweep, task, event] = &stats.refreshes;
    assert_eq!(ecs.calls(), 2, "12 services, 10 per call");
    assert_eq!((task.get(), event.get(), sweep.get()), (0, 0, 2));
    let web = stored(&p, "web").await.unwrap();
    assert_eq!(web["desiredCount"], 2);

    // A second sweep reads everything again and changes nothing.
    let manager = p.reconcile[0].clone();
    let revision = p.reader.snapshot().unwrap().revision;
    manager.send(SweepNow).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || async { sweep.get() == 4 }).await);
    // (A sweep is counted once its writes are answered.)
    assert_eq!(p.reader.snapshot().unwrap().revision, revision, "no churn");

    // Many task changes of `web` within the refresh interval: one or two
    // describes, and `web` is current afterwards.
    ecs.set("web", true, Some(stub_service("web", "ACTIVE", 7)));
    let calls = ecs.calls();
    for round in 0..20u64 {
        let body = json!({"detail-type": "ECS Task State Change", "detail": {
            "clusterArn": "arn:aws:ecs:r:1:cluster/c",
            "taskArn": format!("arn:aws:ecs:r:1:task/c/t{}", round % 5),
            "lastStatus": "RUNNING", "version": round + 1, "group": "service:web"}});
        let done = decode(&p, &format!("m{round}"), &body).await;
        assert_eq!(done, [MessageOutcome::Applied]);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        eventually(Duration::from_secs(3), || async {
            stored(&p, "web").await.unwrap()["desiredCount"] == 7
        })
        .await,
        "web refreshed after its tasks changed"
    );
    // Then no service is marked or being described any more.
    let settled = || async { metrics.service_refreshes_pending().get() == 0 };
    assert!(eventually(Duration::from_secs(5), settled).await);
    let refreshes = ecs.calls() - calls;
    assert!(
        (1..=3).contains(&refreshes),
        "{refreshes} describes for 20 task changes"
    );
    assert_eq!(task.get() as usize, refreshes);
    assert!(ecs.calls.lock().unwrap()[calls..]
        .iter()
        .all(|c| c == &["web"]));

    // A service event marks its service: described within the interval.
    ecs.set("api", true, Some(stub_service("api", "DRAINING", 0)));
    let body = json!({"detail-type": "ECS Service Action",
        "resources": ["arn:aws:ecs:r:1:service/c/api"],
        "detail": {"eventName": "SERVICE_STEADY_STATE", "clusterArn": "arn:aws:ecs:r:1:cluster/c"}});
    let done = decode(&p, "ev", &body).await;
    assert_eq!(done, [MessageOutcome::Applied], "a used service event");
    assert!(
        eventually(Duration::from_secs(3), || async {
            stored(&p, "api").await.unwrap()["status"] == "DRAINING"
        })
        .await
    );
    assert_eq!(event.get(), 1);
    assert_eq!(metrics.events_ignored.get(), 0);

    // A refresh whose DescribeServices fails is not lost: the service is
    // described again once `service_refresh` has passed, without a sweep.
    ecs.set("web", true, Some(stub_service("web", "ACTIVE", 9)));
    ecs.failing.store(1, SeqCst);
    let calls = ecs.calls();
    let body = json!({"detail-type": "ECS Deployment State Change",
        "resources": ["arn:aws:ecs:r:1:service/c/web"],
        "detail": {"eventName": "SERVICE_DEPLOYMENT_IN_PROGRESS",
                   "clusterArn": "arn:aws:ecs:r:1:cluster/c"}});
    let done = decode(&p, "ev-web", &body).await;
    assert_eq!(done, [MessageOutcome::Applied]);
    assert!(
        eventually(Duration::from_secs(5), || async {
            stored(&p, "web").await.unwrap()["desiredCount"] == 9
        })
        .await,
        "web described again after a failed refresh"
    );
    assert_eq!(ecs.failing.load(SeqCst), 0, "the failure happened");
    assert_eq!(
        ecs.calls.lock().unwrap()[calls..],
        [vec!["web".to_owned()], vec!["web".to_owned()]],
        "one failed describe, one retry"
    );
    assert_eq!(event.get(), 3, "both for the event");

    // No longer listed, described INACTIVE: stored so. Then MISSING: gone.
    ecs.set("api", false, Some(stub_service("api", "INACTIVE", 0)));
    manager.send(SweepNow).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            stored(&p, "api")
                .await
                .is_some_and(|a| a["status"] == "INACTIVE")
        })
        .await,
        "an unlisted service ECS still describes is INACTIVE"
    );
    ecs.set("api", false, None);
    let removed = metrics.cluster("arn:aws:ecs:r:1:cluster/c").removed.get();
    manager.send(SweepNow).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            stored(&p, "api").await.is_none()
        })
        .await,
        "a MISSING service is deleted"
    );
    assert!(
        eventually(Duration::from_secs(2), || async {
            metrics.cluster("arn:aws:ecs:r:1:cluster/c").removed.get() == removed + 1
        })
        .await
    );
    assert!(stored(&p, "web").await.is_some());

    // Without ListServices, a sweep still sweeps tasks and instances, and
    // counts an error.
    ecs.denied.store(true, SeqCst);
    let (sweeps, errors) = (stats.sweeps.get(), stats.sweep_errors.get());
    manager.send(SweepNow).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            stats.sweeps.get() == sweeps + 1
        })
        .await
    );
    assert_eq!(stats.sweep_errors.get(), errors + 1);
    assert!(stored(&p, "web").await.is_some(), "nothing deleted");
    assert_eq!(p.reader.health().reconcile_pending(), 0);
}

/// `--simulate` with the real binary: services are listed, each has tasks,
/// and service changes stream within a minute.
#[actix_web::test]
async fn simulate_runs_services_with_tasks_and_rollouts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let p = Proc::spawn(
        &["--simulate", "--data-dir", data.to_str().unwrap()],
        &[("CSS_SIMULATE__EVENTS_PER_SECOND", "50".into())],
    );
    p.wait_ready(Duration::from_secs(30)).await;
    let found = eventually(Duration::from_secs(20), || async {
        let list = p.get("/v1/services").await.json();
        list["items"].as_array().is_some_and(|i| i.len() == 9)
    })
    .await;
    let list = p.get("/v1/services").await.json();
    assert!(found, "three services in each of three clusters: {list}");
    for item in list["items"].as_array().unwrap() {
        let e = &item["entity"];
        let cluster = cluster_of(e);
        let name = e["serviceName"].as_str().unwrap();
        let tasks = p
            .get(&format!("/v1/tasks?cluster={cluster}&service={name}"))
            .await
            .json();
        let tasks = tasks["items"].as_array().unwrap();
        assert!(!tasks.is_empty(), "{cluster}/{name} has tasks");
        assert!(tasks
            .iter()
            .all(|t| t["entity"]["group"] == format!("service:{name}")));
        assert_eq!(e["deployments"][0]["status"], "PRIMARY", "{e}");
        let primary_td = e["taskDefinitionARN"].as_str().unwrap();
        assert!(
            primary_td.contains(&format!("task-definition/{name}:")),
            "{e}"
        );
    }
    let mut stream = StreamClient::open(p.addr, "/v1/stream/services", "").await;
    let change = stream.next_json(Duration::from_secs(60)).await;
    let change = change.expect("a service change within a minute");
    assert!(change["entity"]["serviceARN"].is_string(), "{change}");
    // Task changes of a service refresh it (at most every 5 s per service);
    // which cluster's refresh comes first is the simulator's chance.
    let refreshed = eventually(Duration::from_secs(30), || async {
        let body = p.get("/metrics").await.body;
        String::from_utf8_lossy(&body).lines().any(|l| {
            l.starts_with("css_service_refreshes_total{")
                && l.contains("reason=\"task\"")
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(1.0)
        })
    })
    .await;
    assert!(refreshed, "a service refreshed for its tasks' changes");
}

/// An EventBridge event about service `arn` (moto's account).
fn service_event(detail_type: &str, arn: &str, cluster: &str) -> String {
    json!({
        "version": "0", "id": format!("ev-{arn}"), "detail-type": detail_type,
        "source": "aws.ecs", "account": "123456789012", "region": "us-west-2",
        "time": "2026-11-30T10:00:00Z", "resources": [arn],
        "detail": {"eventType": "INFO", "eventName": "SERVICE_STEADY_STATE",
                   "clusterArn": cluster, "createdAt": "2026-11-30T10:00:00.000Z"}
    })
    .to_string()
}

async fn entity(p: &Proc, path: &str) -> Option<Value> {
    let r = p.try_get(path).await?;
    (r.status == 200).then(|| r.json()["entity"].clone())
}

/// The real binary against moto's ECS (sweeps an hour apart) and SQS: the
/// first sweep brings services with the spec's fields; a service event
/// makes its service current within seconds and leaves the others alone;
/// 300 task events of one service cost a handful of DescribeServices; a
/// deleted service becomes INACTIVE.
async fn services_come_from_moto_and_events_refresh_them(b: Backend) {
    use crate::reconcile::{moto_ecs, EcsStack};
    let s = EcsStack::new().await;
    let etcd = (b == Backend::Etcd).then(crate::servers::Etcd::start);
    let made = moto_ecs(
        &s.moto,
        json!({"clusters": {"shop": {"services": {"web": 2, "api": 1}}}}),
    );
    let cluster = made["shop"]["cluster"].as_str().unwrap().to_owned();
    let web_arn = made["shop"]["services"]["web"].as_str().unwrap().to_owned();
    let api_arn = made["shop"]["services"]["api"].as_str().unwrap().to_owned();
    let mut env = vec![("CSS_RECONCILE__INTERVAL", "1h".to_owned())];
    if let Some(e) = &etcd {
        env.push(("CSS_STORE__BACKEND", "etcd".into()));
        env.push(("CSS_STORE__ETCD_ENDPOINTS", e.endpoint()));
    }
    let p = s.service(&env);
    p.wait_ready(Duration::from_secs(30)).await;

    // After the first sweep, with the fields moto gives.
    let web = entity(&p, "/v1/services/shop/web")
        .await
        .expect("web after the first sweep");
    assert_eq!(web["serviceARN"], web_arn.as_str());
    assert_eq!(web["serviceName"], "web");
    assert_eq!(web["clusterARN"], cluster.as_str());
    assert_eq!(web["status"], "ACTIVE");
    assert_eq!(
        (
            &web["desiredCount"],
            &web["runningCount"],
            &web["pendingCount"]
        ),
        (&json!(2), &json!(0), &json!(2))
    );
    assert!(web["taskDefinitionARN"]
        .as_str()
        .is_some_and(|t| t.contains(":task-definition/web:")));
    assert_eq!(web["launchType"], "EC2");
    assert_eq!(web["schedulingStrategy"], "REPLICA");
    let d = &web["deployments"][0];
    assert_eq!(d["status"], "PRIMARY");
    assert_eq!(d["rolloutState"], "IN_PROGRESS");
    assert_eq!(d["taskDefinitionARN"], web["taskDefinitionARN"]);
    for t in [&d["createdAt"], &d["updatedAt"], &web["updatedAt"]] {
        let t = t.as_str().unwrap_or_else(|| panic!("a timestamp in {web}"));
        assert!(
            t.len() == 24 && t.ends_with('Z') && t.as_bytes()[19] == b'.',
            "RFC 3339 UTC ms: {t}"
        );
    }
    assert_eq!(
        (&web["events"], &web["loadBalancers"]),
        (&json!([]), &json!([]))
    );
    assert!(
        web.get("platformVersion").is_none(),
        "nothing sent, nothing shown"
    );
    let enc = web_arn.replace('/', "%2F");
    for path in [
        format!("/v1/services/shop/{web_arn}"),
        format!("/v1/services/shop/{enc}"),
        format!("/v1/services/{}/web", cluster.replace('/', "%2F")),
    ] {
        assert_eq!(
            entity(&p, &path).await.map(|e| e["serviceARN"].clone()),
            Some(json!(web_arn)),
            "{path}"
        );
    }
    for path in ["/v1/services/shop/nope", "/v1/services/other/web"] {
        let r = p.get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["message"], "Service not found");
    }
    let list = p.get("/v1/services").await.json();
    assert_eq!(
        names(&list),
        ["api", "web"],
        "by cluster ARN, then service ARN"
    );
    let mut pages = Vec::new();
    let mut path = "/v1/services?limit=1".to_owned();
    for _ in 0..5 {
        let page = p.get(&path).await.json();
        pages.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["nextToken"].as_str() {
            Some(t) => path = format!("/v1/services?limit=1&nextToken={t}"),
            None => break,
        }
    }
    assert_eq!(Value::Array(pages), list["items"], "pages concatenate");
    for (q, want) in [
        ("?cluster=shop&status=active", &["api", "web"][..]),
        ("?rollout=in_progress&launchType=EC2", &["api", "web"]),
        ("?taskDefinition=web", &["api", "web"]),
        ("?rollout=COMPLETED", &[]),
        ("?cluster=elsewhere", &[]),
    ] {
        assert_eq!(
            names(&p.get(&format!("/v1/services{q}")).await.json()),
            want,
            "{q}"
        );
    }
    for q in [
        "?status=up",
        "?rollout=x",
        "?taskDefinition=:1",
        "?colour=red",
    ] {
        assert_eq!(p.get(&format!("/v1/services{q}")).await.status, 400, "{q}");
    }
    let mut stream = StreamClient::open(p.addr, "/v1/stream/services?snapshot=true", "").await;
    let within = Duration::from_secs(10);
    for want in ["api", "web"] {
        let item = stream.next_json(within).await.expect("a snapshot item");
        assert_eq!(item["entity"]["serviceName"], want);
    }
    let bookmark = stream.next_json(within).await.expect("a bookmark");
    let mark: u64 = bookmark["bookmark"]["entityVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // A Service Action event for web makes it current within seconds; api,
    // changed too but without an event, is left alone.
    moto_ecs(
        &s.moto,
        json!({"clusters": {"shop": {"update": {"web": 3, "api": 4}}}}),
    );
    s.send(service_event("ECS Service Action", &web_arn, &cluster))
        .await;
    let current = eventually(Duration::from_secs(8), || async {
        entity(&p, "/v1/services/shop/web")
            .await
            .is_some_and(|w| w["desiredCount"] == 3)
    })
    .await;
    assert!(current, "web was not refreshed after its event");
    let change = stream
        .next_json(within)
        .await
        .expect("web's change streams");
    assert_eq!(change["entity"]["desiredCount"], 3);
    let mut resumed = StreamClient::open(
        p.addr,
        &format!("/v1/stream/services?entityVersion={}", mark + 1),
        "",
    )
    .await;
    assert_eq!(
        resumed.next_json(within).await,
        Some(change),
        "resume misses nothing"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let api = entity(&p, "/v1/services/shop/api").await.unwrap();
    assert_eq!(api["desiredCount"], 1, "api was described without a reason");
    let refreshes = |reason: &'static str| {
        let p = &p;
        async move {
            p.metric(&format!(
                "css_service_refreshes_total{{cluster=\"shop\",reason=\"{reason}\"}}"
            ))
            .await
        }
    };
    assert_eq!(refreshes("event").await, 1.0);
    assert_eq!(refreshes("task").await, 0.0);

    // 300 task events of api within seconds: a handful of describes.
    for i in 0..300 {
        let body = json!({
            "version": "0", "id": format!("t-{i}"), "detail-type": "ECS Task State Change",
            "source": "aws.ecs", "account": "123456789012", "region": "us-west-2",
            "detail": {
                "clusterArn": cluster,
                "taskArn": format!("arn:aws:ecs:us-west-2:123456789012:task/shop/api{i}"),
                "lastStatus": "RUNNING", "desiredStatus": "RUNNING", "version": 1,
                "group": "service:api", "startedBy": "ecs-svc/1",
            }
        });
        s.send(body.to_string()).await;
    }
    let stored = eventually(Duration::from_secs(30), || async {
        let tasks = p.get("/v1/tasks?cluster=shop&service=api").await.json();
        tasks["items"].as_array().is_some_and(|t| t.len() == 300)
    })
    .await;
    assert!(stored, "the 300 task events were not all stored");
    // Once no service is marked or being described, every mark was.
    let settled = || async {
        let body = p.get("/metrics").await.body;
        let text = String::from_utf8_lossy(&body).into_owned();
        text.lines().any(|l| l == "css_service_refreshes_pending 0")
    };
    assert!(eventually(Duration::from_secs(15), settled).await);
    let calls = refreshes("task").await;
    assert!(
        (1.0..=5.0).contains(&calls),
        "{calls} DescribeServices for 300 task events"
    );
    let api = entity(&p, "/v1/services/shop/api").await.unwrap();
    assert_eq!(
        api["desiredCount"], 4,
        "api is current after its tasks changed"
    );
    assert_eq!(api["serviceARN"], api_arn.as_str());
    println!("{calls} DescribeServices calls for 300 task events");

    // Deleted in moto (described INACTIVE): INACTIVE here.
    moto_ecs(&s.moto, json!({"clusters": {"shop": {"delete": ["web"]}}}));
    s.send(service_event(
        "ECS Deployment State Change",
        &web_arn,
        &cluster,
    ))
    .await;
    let inactive = eventually(Duration::from_secs(8), || async {
        entity(&p, "/v1/services/shop/web")
            .await
            .is_some_and(|w| w["status"] == "INACTIVE")
    })
    .await;
    assert!(inactive, "a deleted service did not become INACTIVE");
    let list = p.get("/v1/services?status=inactive").await.json();
    assert_eq!(names(&list), ["web"]);
    assert_eq!(
        names(&p.get("/v1/services?status=ACTIVE").await.json()),
        ["api"]
    );
    assert_eq!(
        p.metric("css_events_total{outcome=\"ignored\"}").await,
        0.0,
        "service events are used"
    );
}
