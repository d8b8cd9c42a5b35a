//! The reconciler: against moto's ECS with the real binary, and against a
//! local stub ECS (paging, throttling, a failing cluster) in process.

use crate::servers::Moto;
use crate::support::*;
use actors::accounts::Place;
use actors::decoder::decode::{decode, Decoded};
use actors::ecs_client::{self as ecs, Described, Ecs, Page, TaskStatus};
use actors::metrics::Metrics;
use actors::model::Entry;
use actors::model::Kind;
use actors::pipeline::{Pipeline, Reconcile, Source};
use actors::reconciler::{Settings, Tuning};
use actors::store::{BoxFuture, Embedded};
use actors::writer;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `tests/it/moto_ecs.py` against `moto`; returns what it created.
pub(crate) fn moto_ecs(moto: &Moto, spec: Value) -> Value {
    crate::servers::python_json("moto_ecs.py", &[&moto.url(), &spec.to_string()])
}

pub(crate) struct EcsStack {
    pub(crate) moto: Moto,
    sqs: aws_sdk_sqs::Client,
    pub(crate) dir: tempfile::TempDir,
}

impl EcsStack {
    pub(crate) async fn new() -> EcsStack {
        let moto = Moto::start();
        let sqs = moto.sqs();
        sqs.create_queue()
            .queue_name("events")
            .send()
            .await
            .unwrap();
        EcsStack {
            moto,
            sqs,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn service(&self, env: &[(&str, String)]) -> Proc {
        let mut all = self.moto.env();
        all.push(("CSS_SOURCE__WAIT_TIME", "1s".into()));
        all.push(("CSS_RECONCILE__JITTER", "0".into()));
        all.extend(env.iter().cloned());
        let data = self.dir.path().join("data");
        Proc::spawn(
            &["--queue", "events", "--data-dir", data.to_str().unwrap()],
            &all,
        )
    }

    pub(crate) async fn send(&self, body: String) {
        let url = self
            .sqs
            .get_queue_url()
            .queue_name("events")
            .send()
            .await
            .unwrap();
        self.sqs
            .send_message()
            .queue_url(url.queue_url().unwrap())
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
}

async fn task(p: &Proc, cluster: &str, arn: &str) -> Option<Value> {
    let r = p.try_get(&format!("/v1/tasks/{cluster}/{arn}")).await?;
    (r.status == 200).then(|| r.json())
}

/// The `ECS Task State Change` event `id` of moto's account (123456789012),
/// as EventBridge delivers it, with `detail`.
pub(crate) fn moto_task_change(id: &str, detail: Value) -> String {
    serde_json::json!({
        "version": "0", "id": id, "detail-type": "ECS Task State Change",
        "source": "aws.ecs", "account": "123456789012", "region": "us-west-2",
        "detail": detail,
    })
    .to_string()
}

/// A task event for a task of moto's account, RUNNING.
fn moto_task_event(arn: &str, cluster: &str, version: u64, started_by: &str) -> String {
    let detail = serde_json::json!({
        "clusterArn": format!("arn:aws:ecs:us-west-2:123456789012:cluster/{cluster}"),
        "taskArn": arn, "lastStatus": "RUNNING", "desiredStatus": "RUNNING",
        "version": version, "startedBy": started_by,
    });
    moto_task_change(&format!("ev-{version}"), detail)
}

/// The ARN of the stub's cluster `c`.
fn stub_arn(c: &str) -> String {
    format!("arn:aws:ecs:us-west-2:111122223333:cluster/{c}")
}

/// A pipeline on an embedded store in `dir` whose reconcilers ask `ecs`.
fn reconciling(
    dir: &std::path::Path,
    settings: Settings,
    ecs: Arc<dyn Ecs>,
    metrics: &Arc<Metrics>,
) -> Pipeline {
    Pipeline::start(
        Arc::new(Embedded::open(dir).unwrap()),
        writer::Config::default(),
        Source::None,
        Some(Reconcile {
            settings,
            places: vec![(Place::default(), ecs)],
        }),
        metrics.clone(),
        &css::logging::discard(),
    )
}

#[actix_web::test]
async fn entities_never_sent_as_events_appear_within_one_interval() {
    let s = EcsStack::new().await;
    let made = moto_ecs(
        &s.moto,
        serde_json::json!({"clusters": {"fast": {"instances": 1, "tasks": 2}}}),
    );
    let p = s.service(&[("CSS_RECONCILE__INTERVAL", "2s".into())]);
    // Ready means every cluster's first sweep is done: it is all there.
    p.wait_ready(Duration::from_secs(20)).await;
    for arn in made["fast"]["tasks"].as_array().unwrap() {
        let t = task(&p, "fast", arn.as_str().unwrap())
            .await
            .expect("task from the first sweep");
        assert_eq!(t["entity"]["lastStatus"], "RUNNING");
        assert!(
            t["entity"].get("version").is_none(),
            "moto gives no version"
        );
    }
    let ci = made["fast"]["instances"][0].as_str().unwrap();
    assert_eq!(p.get(&format!("/v1/instances/fast/{ci}")).await.status, 200);

    // A task started later shows up within one interval (2 s) and a sweep.
    let later = moto_ecs(
        &s.moto,
        serde_json::json!({"clusters": {"fast": {"tasks": 1}}}),
    );
    let arn = later["fast"]["tasks"][0].as_str().unwrap().to_owned();
    let appeared = eventually(Duration::from_secs(4), || async {
        task(&p, "fast", &arn).await.is_some()
    })
    .await;
    assert!(
        appeared,
        "a task in ECS but never in an event did not appear within one interval"
    );
    // The counters are updated once the whole sweep (services last) is done.
    let added = "css_reconcile_added_total{cluster=\"fast\"}";
    let counted = metric_reaches(p.addr, added, 4.0, Duration::from_secs(4)).await;
    assert!(counted, "the sweep's additions were not counted");
}

#[actix_web::test]
async fn entities_gone_from_ecs_are_removed_after_the_grace_period_for_good() {
    let s = EcsStack::new().await;
    moto_ecs(
        &s.moto,
        serde_json::json!({"clusters": {"fast": {"instances": 1, "tasks": 1}}}),
    );
    let p = s.service(&[
        ("CSS_RECONCILE__INTERVAL", "1s".into()),
        ("CSS_RECONCILE__GRACE_PERIOD", "2s".into()),
    ]);
    p.wait_ready(Duration::from_secs(20)).await;
    let ghost = "arn:aws:ecs:us-west-2:123456789012:task/fast/0000000000000000ghost";
    s.send(moto_task_event(ghost, "fast", 3, "ghost")).await;
    let stored = eventually(Duration::from_secs(10), || async {
        task(&p, "fast", ghost).await.is_some()
    })
    .await;
    assert!(stored, "the event was not stored");
    let seen_stored = std::time::Instant::now();
    // Removed after the grace period (2 s from the first sweep that missed
    // it, which came after it was stored), not within it.
    let removed = eventually(Duration::from_secs(10), || async {
        task(&p, "fast", ghost).await.is_none()
    })
    .await;
    assert!(removed, "an entity absent from ECS was never removed");
    let after = seen_stored.elapsed();
    assert!(
        after >= Duration::from_millis(1800),
        "removed {after:?} after it was seen stored, inside the grace period"
    );
    // The sweep counts its removals once its write is answered, which can be
    // a moment after the removal is visible through the API.
    assert!(
        eventually(Duration::from_secs(5), || async {
            p.metric("css_reconcile_removed_total{cluster=\"fast\"}")
                .await
                >= 1.0
        })
        .await
    );

    // A late, older event does not bring it back.
    let stale_before = p.metric("css_events_total{outcome=\"stale\"}").await;
    s.send(moto_task_event(ghost, "fast", 2, "late")).await;
    let seen = eventually(Duration::from_secs(10), || async {
        p.metric("css_events_total{outcome=\"stale\"}").await > stale_before
    })
    .await;
    assert!(seen, "the late event was not judged stale");
    assert!(
        task(&p, "fast", ghost).await.is_none(),
        "a late event brought it back"
    );
}

#[actix_web::test]
async fn a_version_from_an_event_is_not_overwritten_by_a_describe_without_one() {
    let s = EcsStack::new().await;
    let made = moto_ecs(
        &s.moto,
        serde_json::json!({"clusters": {"fast": {"instances": 1, "tasks": 1}}}),
    );
    let arn = made["fast"]["tasks"][0].as_str().unwrap().to_owned();
    let p = s.service(&[("CSS_RECONCILE__INTERVAL", "1s".into())]);
    p.wait_ready(Duration::from_secs(20)).await;
    s.send(moto_task_event(&arn, "fast", 5, "from-event")).await;
    let learned = eventually(Duration::from_secs(10), || async {
        task(&p, "fast", &arn)
            .await
            .is_some_and(|t| t["entity"]["version"] == 5)
    })
    .await;
    assert!(learned);
    let sweeps = p
        .metric("css_reconcile_sweeps_total{cluster=\"fast\"}")
        .await;
    let more = eventually(Duration::from_secs(10), || async {
        p.metric("css_reconcile_sweeps_total{cluster=\"fast\"}")
            .await
            >= sweeps + 3.0
    })
    .await;
    assert!(more, "no further sweeps");
    let t = task(&p, "fast", &arn).await.unwrap();
    assert_eq!(t["entity"]["version"], 5);
    assert_eq!(t["entity"]["startedBy"], "from-event");
}

#[actix_web::test]
async fn each_cluster_is_swept_at_its_own_interval() {
    let s = EcsStack::new().await;
    moto_ecs(
        &s.moto,
        serde_json::json!({"clusters": {"fast": {"instances": 1, "tasks": 1}, "slow": {"instances": 1, "tasks": 1}}}),
    );
    let cfg = s.dir.path().join("css.toml");
    std::fs::write(
        &cfg,
        "[reconcile]\ninterval = \"1h\"\n[reconcile.clusters.fast]\ninterval = \"1s\"\n",
    )
    .unwrap();
    let mut all = s.moto.env();
    all.push(("CSS_SOURCE__WAIT_TIME", "1s".into()));
    let data = s.dir.path().join("data");
    let p = Proc::spawn(
        &[
            "--queue",
            "events",
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ],
        &all,
    );
    p.wait_ready(Duration::from_secs(20)).await;
    let slow_calls = p
        .metric("css_reconcile_api_calls_total{cluster=\"slow\"}")
        .await;
    let fast_sweeps = || async {
        p.metric("css_reconcile_sweeps_total{cluster=\"fast\"}")
            .await
    };
    eventually(Duration::from_secs(20), || async {
        fast_sweeps().await >= 4.0
    })
    .await;
    let fast = fast_sweeps().await;
    let slow = p
        .metric("css_reconcile_sweeps_total{cluster=\"slow\"}")
        .await;
    assert!(fast >= 4.0, "fast swept {fast} times");
    assert_eq!(slow, 1.0, "slow swept more than once");
    assert_eq!(
        p.metric("css_reconcile_api_calls_total{cluster=\"slow\"}")
            .await,
        slow_calls
    );
}

/// A local stub ECS: pages of 40 ARNs, the first `throttle` calls answered
/// `ThrottlingException`, clusters in `broken` always failing.
struct StubEcs {
    tasks: std::sync::Mutex<HashMap<String, Vec<Entry>>>,
    throttle: AtomicUsize,
    broken: Vec<String>,
    calls: AtomicUsize,
    faults: std::sync::Mutex<StubFaults>,
}

/// Faults the stub ECS plays on demand, and when each call came.
#[derive(Default)]
struct StubFaults {
    /// Every call is throttled.
    storm: bool,
    /// This many more calls fail as a 500 does.
    errors: usize,
    /// A RUNNING listing fails at its page of this index (0-based).
    failing_page: Option<usize>,
    times: Vec<Instant>,
}

const PAGE: usize = 40;

fn stub_task(cluster: &str, i: usize) -> Entry {
    match decode(&task_event(cluster, &format!("t{i:04}"), 1, "RUNNING")) {
        Ok(Decoded::Entity(e)) => e,
        other => panic!("{other:?}"),
    }
}

impl StubEcs {
    fn gate(&self, cluster: &str) -> ecs::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        {
            let mut f = self.faults.lock().unwrap();
            f.times.push(Instant::now());
            if f.storm {
                return Err(ecs::Error::Throttled("Rate exceeded".into()));
            }
            if f.errors > 0 {
                f.errors -= 1;
                return Err(ecs::Error::Other("InternalServerError (HTTP 500)".into()));
            }
        }
        if self
            .throttle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(ecs::Error::Throttled("Rate exceeded".into()));
        }
        if self.broken.iter().any(|b| cluster.ends_with(b.as_str())) {
            return Err(ecs::Error::Other("AccessDeniedException".into()));
        }
        // As ECS answers for a cluster deleted while a sweep of it runs.
        let name = cluster.rsplit('/').next().unwrap_or(cluster);
        if !self.tasks.lock().unwrap().contains_key(name) {
            return Err(ecs::Error::ClusterNotFound(cluster.to_owned()));
        }
        Ok(())
    }

    fn page(&self, arns: Vec<String>, next: Option<String>) -> Page {
        let start: usize = next.and_then(|n| n.parse().ok()).unwrap_or(0);
        let end = (start + PAGE).min(arns.len());
        Page {
            arns: arns[start..end].to_vec(),
            next: (end < arns.len()).then(|| end.to_string()),
        }
    }
}

fn now<T: Send + 'static>(v: ecs::Result<T>) -> BoxFuture<'static, ecs::Result<T>> {
    Box::pin(async move { v })
}

impl Ecs for StubEcs {
    fn list_clusters(&self, _: Option<String>) -> BoxFuture<'_, ecs::Result<Page>> {
        let arns = self
            .tasks
            .lock()
            .unwrap()
            .keys()
            .map(|c| stub_arn(c))
            .collect();
        now(Ok(Page { arns, next: None }))
    }
    fn list_container_instances(
        &self,
        cluster: &str,
        _: Option<String>,
    ) -> BoxFuture<'_, ecs::Result<Page>> {
        now(self.gate(cluster).map(|_| Page::default()))
    }
    fn describe_container_instances(
        &self,
        cluster: &str,
        _: Vec<String>,
    ) -> BoxFuture<'_, ecs::Result<Described>> {
        now(self.gate(cluster).map(|_| Described::default()))
    }
    fn list_tasks(
        &self,
        cluster: &str,
        status: TaskStatus,
        next: Option<String>,
    ) -> BoxFuture<'_, ecs::Result<Page>> {
        let r = self.gate(cluster).map(|_| {
            let name = cluster.rsplit('/').next().unwrap_or(cluster);
            let arns = match status {
                TaskStatus::Running => self
                    .tasks
                    .lock()
                    .unwrap()
                    .get(name)
                    .map(|t| t.iter().map(|e| e.arn.clone()).collect())
                    .unwrap_or_default(),
                TaskStatus::Stopped => Vec::new(),
            };
            (self.page(arns, next.clone()), next)
        });
        // The listing breaks at its failing page (RUNNING only: 40 per page).
        let failing = self.faults.lock().unwrap().failing_page;
        let r = r.and_then(|(page, next)| {
            let index = next.and_then(|n| n.parse::<usize>().ok()).unwrap_or(0) / PAGE;
            match failing {
                Some(f) if status == TaskStatus::Running && index == f => {
                    Err(ecs::Error::Other("InternalServerError (HTTP 500)".into()))
                }
                _ => Ok(page),
            }
        });
        now(r)
    }
    fn list_services(&self, cluster: &str, _: Option<String>) -> BoxFuture<'_, ecs::Result<Page>> {
        now(self.gate(cluster).map(|()| Page::default()))
    }

    fn describe_services(
        &self,
        _: &str,
        services: Vec<String>,
    ) -> BoxFuture<'_, ecs::Result<Described>> {
        now(Ok(Described {
            entries: Vec::new(),
            failures: services
                .into_iter()
                .map(|s| (s, ecs::Failure::Missing))
                .collect(),
        }))
    }

    fn describe_tasks(
        &self,
        cluster: &str,
        arns: Vec<String>,
    ) -> BoxFuture<'_, ecs::Result<Described>> {
        assert!(arns.len() <= 100, "describe batches are at most 100");
        let r = self.gate(cluster).map(|_| {
            let name = cluster.rsplit('/').next().unwrap_or(cluster);
            Described {
                entries: self
                    .tasks
                    .lock()
                    .unwrap()
                    .get(name)
                    .into_iter()
                    .flatten()
                    .filter(|e| arns.contains(&e.arn))
                    .cloned()
                    .collect(),
                failures: Vec::new(),
            }
        });
        now(r)
    }
}

#[actix_web::test]
async fn paging_throttling_and_a_failing_cluster_against_a_stub_ecs() {
    let stub = Arc::new(StubEcs {
        tasks: std::sync::Mutex::new(HashMap::from([
            (
                "paged".to_owned(),
                (0..250).map(|i| stub_task("paged", i)).collect(),
            ),
            ("broken".to_owned(), Vec::new()),
        ])),
        throttle: AtomicUsize::new(3),
        broken: vec!["broken".into()],
        calls: AtomicUsize::new(0),
        faults: Default::default(),
    });
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let settings = Settings {
        base: Tuning {
            interval: Duration::from_secs(3600),
            max_requests_per_second: 1000.0,
            grace_period: Duration::ZERO,
            ..Tuning::default()
        },
        ..Settings::default()
    };
    let p = reconciling(dir.path(), settings, stub.clone(), &metrics);
    // Something the failing cluster's sweep must not delete.
    let kept = p
        .decoder
        .send(actors::decoder::Decode {
            messages: vec![actors::decoder::RawMessage::new(
                "1",
                task_event("broken", "keep", 1, "RUNNING"),
            )],
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept, [actors::decoder::MessageOutcome::Applied]);

    let paged = metrics.cluster(&stub_arn("paged"));
    let broken = metrics.cluster(&stub_arn("broken"));
    let done = eventually(Duration::from_secs(30), || async {
        paged.sweeps.get() >= 1 && broken.sweeps.get() >= 1
    })
    .await;
    assert!(done, "sweeps did not finish");
    let snap = p.reader.snapshot().unwrap();
    let in_cluster = |c: &str| {
        snap.of(Kind::Task)
            .values()
            .filter(|e| e.cluster_arn.ends_with(c))
            .count()
    };
    assert_eq!(in_cluster("/paged"), 250, "every page followed");
    assert_eq!(in_cluster("/broken"), 1, "a failed sweep deletes nothing");
    assert_eq!(paged.added.get(), 250);
    assert_eq!(
        paged.sweep_errors.get(),
        0,
        "throttling was retried, not fatal"
    );
    assert!(broken.sweep_errors.get() >= 1);
    assert_eq!(paged.throttles.get() + broken.throttles.get(), 3);
    // 1 instance list + 7 pages of RUNNING + 1 of STOPPED + 3 describes of ≤ 100
    // + 1 service list (no services: nothing to describe), plus retries.
    assert_eq!(paged.api_calls.get() - paged.throttles.get(), 13);
    // The failing cluster keeps the service from being ready; the other does not.
    let pending_one = eventually(Duration::from_secs(2), || async {
        p.reader.health().reconcile_pending() == 1
    })
    .await;
    assert!(pending_one, "pending: {:?}", p.reader.health());
    // A failed sweep is tried again within seconds (the interval is an
    // hour), and still deletes nothing.
    let retried = eventually(Duration::from_secs(5), || async {
        broken.sweep_errors.get() >= 2
    })
    .await;
    assert!(retried, "a failed sweep waits for the next interval");
    let snap = p.reader.snapshot().unwrap();
    assert!(snap
        .of(Kind::Task)
        .values()
        .any(|e| e.cluster_arn.ends_with("/broken")));
    assert_eq!(paged.sweeps.get(), 1, "a good sweep keeps its interval");
}

/// ECS failing under a sweep (issue 28): a storm of throttling, then 500s,
/// then a listing that fails on its third page. The request budget holds
/// (measured from when the calls came), a sweep that saw only part of the
/// cluster deletes nothing, and the cluster is repaired once ECS answers.
#[actix_web::test]
async fn ecs_faults_keep_the_budget_delete_nothing_and_are_repaired() {
    const RATE: f64 = 20.0;
    let stub = Arc::new(StubEcs {
        tasks: std::sync::Mutex::new(HashMap::from([(
            "storm".to_owned(),
            (0..250).map(|i| stub_task("storm", i)).collect(),
        )])),
        throttle: AtomicUsize::new(0),
        broken: Vec::new(),
        calls: AtomicUsize::new(0),
        faults: std::sync::Mutex::new(StubFaults {
            storm: true,
            ..StubFaults::default()
        }),
    });
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let settings = Settings {
        base: Tuning {
            interval: Duration::from_secs(3600),
            max_requests_per_second: RATE,
            grace_period: Duration::ZERO,
            ..Tuning::default()
        },
        clusters: Some(vec!["storm".into()]),
        ..Settings::default()
    };
    let p = reconciling(dir.path(), settings, stub.clone(), &metrics);
    // In the store, not in ECS: only a complete sweep may remove it.
    let ghost = actors::decoder::RawMessage::new("1", task_event("storm", "ghost", 1, "RUNNING"));
    let decode = actors::decoder::Decode {
        messages: vec![ghost],
    };
    let stored = p.decoder.send(decode).await.unwrap().unwrap();
    assert_eq!(stored, [actors::decoder::MessageOutcome::Applied]);
    let stats = metrics.cluster("storm");
    let tasks = || {
        let snap = p.reader.snapshot().unwrap();
        let all = snap.of(Kind::Task);
        (all.len(), all.values().any(|e| e.arn.ends_with("/ghost")))
    };
    let set = |edit: &dyn Fn(&mut StubFaults)| edit(&mut stub.faults.lock().unwrap());

    // 1. A storm of throttling: each call backs off (from 200 ms, doubling)
    // and the sweep fails after 8 throttles in a row.
    let failed = eventually(Duration::from_secs(40), || async {
        stats.sweep_errors.get() >= 1
    })
    .await;
    assert!(failed, "a sweep throttled throughout did not fail");
    assert!(
        stats.throttles.get() >= 8,
        "{} throttles",
        stats.throttles.get()
    );
    // 2. 500s: each fails the sweep it hits (retried after 1 s, doubling).
    let errors_before = stats.sweep_errors.get();
    set(&|f| {
        f.storm = false;
        f.errors = 2;
    });
    let failed = eventually(Duration::from_secs(30), || async {
        stats.sweep_errors.get() >= errors_before + 2
    })
    .await;
    assert!(failed, "the 500s failed no sweep");
    assert_eq!(tasks(), (1, true), "failed sweeps change nothing");
    // 3. The listing fails on its third page.
    let errors_before = stats.sweep_errors.get();
    set(&|f| f.failing_page = Some(2));
    let partial = eventually(Duration::from_secs(30), || async {
        stats.sweep_errors.get() > errors_before
    })
    .await;
    assert!(
        partial,
        "a sweep that failed on page 3 was not counted as failed"
    );
    assert!(
        tasks().1,
        "a sweep that saw only part of the cluster deleted the ghost"
    );
    // (Every sweep is counted; the failed ones also as errors.)
    assert_eq!(stats.removed.get(), 0, "nothing was removed");

    // ECS answers again: the next sweep repairs the cluster.
    set(&|f| f.failing_page = None);
    let repaired = eventually(Duration::from_secs(60), || async {
        tasks() == (250, false)
    })
    .await;
    assert!(repaired, "not repaired after ECS came back: {:?}", tasks());
    // The repairs are counted once the whole sweep (services last) is done.
    let counted = eventually(Duration::from_secs(10), || async {
        (stats.added.get(), stats.removed.get()) == (250, 1)
    })
    .await;
    let repairs = (stats.added.get(), stats.removed.get());
    assert!(counted, "repairs counted: {repairs:?}, not (250, 1)");

    // The budget: calls come at most RATE per second, in any second.
    let times = stub.faults.lock().unwrap().times.clone();
    let busiest = (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t - times[i] < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    let span = (times[times.len() - 1] - times[0]).as_secs_f64();
    let mean = times.len() as f64 / span;
    println!(
        "{} ECS calls in {span:.1} s ({mean:.1}/s, busiest second {busiest}) at a budget of {RATE}/s; \
         {} throttled, {} failed sweeps, then repaired",
        times.len(),
        stats.throttles.get(),
        stats.sweep_errors.get()
    );
    assert!(mean <= RATE, "{mean:.1} calls/s");
    assert!(
        busiest as f64 <= RATE + 2.0,
        "{busiest} calls in one second"
    );
}

#[actix_web::test]
async fn simulate_with_dropped_events_converges_to_the_simulators_truth() {
    use css::config::Feed;
    let t = start_with(Feed::Simulate, |s| {
        // A still world after the initial state, so "converged" is exact.
        s.simulate = actors::source::simulate::Config {
            drop_rate: 0.2,
            ..world(2, 3, 5, 0.0)
        };
        s.reconcile.interval = Duration::from_secs(1);
    })
    .await;
    let actors::pipeline::SourceAddr::Simulate(sim) = t.svc.pipeline.source.clone() else {
        panic!("no simulator")
    };
    let truth = sim.send(actors::source::simulate::GetTruth).await.unwrap();
    assert_eq!((truth.tasks, truth.instances, truth.services), (30, 6, 6));
    let converged = eventually(Duration::from_secs(15), || async {
        let tasks = t.count("/v1/tasks").await;
        let instances = t.count("/v1/instances").await;
        let services = t.count("/v1/services").await;
        tasks == truth.tasks && instances == truth.instances && services == truth.services
    })
    .await;
    assert!(converged, "the store never matched the simulator");
    // `/v1/clusters` lists the simulator's clusters, each reconciled.
    let clusters = t.get("/v1/clusters").await.ok_json("clusters");
    let items = clusters["items"].as_array().unwrap();
    let mut names: Vec<&str> = items
        .iter()
        .map(|c| c["clusterName"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    let mut truth_names: Vec<&str> = truth.clusters.iter().map(String::as_str).collect();
    truth_names.sort_unstable();
    assert_eq!(names, truth_names);
    assert!(items.iter().all(|c| c["reconciled"] == true), "{clusters}");
    let tasks: u64 = items
        .iter()
        .flat_map(|c| c["tasks"].as_object().unwrap().values())
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert_eq!(tasks as usize, truth.tasks);
    // Summed over every cluster's css_reconcile_added_total.
    let metrics = String::from_utf8(t.get("/metrics").await.body).unwrap();
    let added: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("css_reconcile_added_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    let applied = t.svc.pipeline.metrics.events_applied.get();
    assert!(added > 0, "nothing was repaired: were events dropped?");
    // Services come from sweeps only: no event carries one.
    assert_eq!(
        applied + added,
        36 + 6,
        "events and repairs together make the whole world"
    );
}

/// The simulator in two accounts and two regions, events dropped: every
/// cluster gets its own reconciler (by ARN: the names repeat), and the view
/// converges to the simulator's truth in each place.
#[actix_web::test]
async fn several_accounts_and_regions_are_each_reconciled() {
    use css::config::Feed;
    let t = start_with(Feed::Simulate, |s| {
        s.simulate = actors::source::simulate::Config {
            drop_rate: 0.2,
            accounts: 2,
            regions: vec!["us-west-2".into(), "eu-west-1".into()],
            ..world(1, 2, 3, 0.0)
        };
        s.reconcile.interval = Duration::from_secs(1);
    })
    .await;
    let converged = eventually(Duration::from_secs(20), || async {
        t.count("/v1/tasks").await == 24
    })
    .await;
    assert!(converged, "{} of 24 tasks", t.count("/v1/tasks").await);
    let clusters = t.get("/v1/clusters").await.ok_json("clusters");
    let items = clusters["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{clusters}");
    for c in items {
        assert_eq!(c["reconciled"], true, "{c}");
        let tasks: u64 = c["tasks"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(Value::as_u64)
            .sum();
        assert_eq!(tasks, 6, "{c}");
    }
    let second = "?account=123456789013&region=eu-west-1";
    assert_eq!(t.count(&format!("/v1/tasks{second}")).await, 6);
    assert_eq!(t.count(&format!("/v1/instances{second}")).await, 2);
    let here = t
        .get(&format!("/v1/clusters{second}"))
        .await
        .ok_json("one place");
    assert_eq!(here["items"].as_array().unwrap().len(), 1, "{here}");
}

#[actix_web::test]
async fn with_two_replicas_each_cluster_is_swept_by_one_and_the_other_takes_over() {
    let _alone = heavy().await;
    let s = EcsStack::new().await;
    moto_ecs(
        &s.moto,
        serde_json::json!({"clusters": {"alpha": {"instances": 1, "tasks": 1}, "beta": {"instances": 1, "tasks": 1}}}),
    );
    let etcd = crate::servers::Etcd::start();
    let mut env = s.moto.env();
    env.push(("CSS_SOURCE__WAIT_TIME", "1s".into()));
    env.push(("CSS_RECONCILE__INTERVAL", "1s".into()));
    let args = ["--queue", "events", "--etcd-endpoint", &etcd.endpoint()];
    let mut replicas = vec![Proc::spawn(&args, &env), Proc::spawn(&args, &env)];
    for r in &replicas {
        r.wait_ready(Duration::from_secs(20)).await;
    }
    // Until each cluster has a leader that swept twice (checked below).
    eventually(Duration::from_secs(20), || async {
        for cluster in ["alpha", "beta"] {
            let leading = format!("css_reconcile_leader{{cluster=\"{cluster}\"}}");
            let sweeps = format!("css_reconcile_sweeps_total{{cluster=\"{cluster}\"}}");
            let mut led = false;
            for r in &replicas {
                led |= r.metric(&leading).await == 1.0 && r.metric(&sweeps).await >= 2.0;
            }
            if !led {
                return false;
            }
        }
        true
    })
    .await;
    let mut leader_of_alpha = None;
    for cluster in ["alpha", "beta"] {
        let leading = format!("css_reconcile_leader{{cluster=\"{cluster}\"}}");
        let sweeps = format!("css_reconcile_sweeps_total{{cluster=\"{cluster}\"}}");
        let mut leaders = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            let (lead, swept) = (r.metric(&leading).await, r.metric(&sweeps).await);
            if lead == 1.0 {
                assert!(swept >= 2.0, "{cluster}: the leader swept {swept} times");
                leaders.push(i);
            } else {
                assert_eq!(swept, 0.0, "{cluster}: a replica that does not lead swept");
            }
        }
        assert_eq!(leaders.len(), 1, "{cluster}: leaders {leaders:?}");
        if cluster == "alpha" {
            leader_of_alpha = Some(leaders[0]);
        }
    }

    // Kill alpha's leader: the other replica takes over within the lease's TTL.
    let dead = leader_of_alpha.unwrap();
    replicas[dead].kill();
    let survivor = &replicas[1 - dead];
    let took_over = eventually(Duration::from_secs(20), || async {
        survivor
            .metric("css_reconcile_sweeps_total{cluster=\"alpha\"}")
            .await
            >= 1.0
    })
    .await;
    assert!(took_over, "no replica took over alpha");
    assert_eq!(
        survivor
            .metric("css_reconcile_leader{cluster=\"alpha\"}")
            .await,
        1.0
    );
    // Beta's standby retries on its own schedule.
    let leads_beta = eventually(Duration::from_secs(20), || async {
        survivor
            .metric("css_reconcile_leader{cluster=\"beta\"}")
            .await
            == 1.0
    })
    .await;
    assert!(leads_beta, "the survivor does not lead beta");
}

#[actix_web::test]
async fn a_cluster_that_vanishes_loses_its_reconciler_and_its_entities() {
    let stub = Arc::new(StubEcs {
        tasks: std::sync::Mutex::new(HashMap::from([
            (
                "stays".to_owned(),
                (0..3).map(|i| stub_task("stays", i)).collect(),
            ),
            (
                "goes".to_owned(),
                (0..4).map(|i| stub_task("goes", i)).collect(),
            ),
        ])),
        throttle: AtomicUsize::new(0),
        broken: Vec::new(),
        calls: AtomicUsize::new(0),
        faults: Default::default(),
    });
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let settings = Settings {
        base: Tuning {
            interval: Duration::from_secs(1),
            max_requests_per_second: 1000.0,
            ..Tuning::default()
        },
        ..Settings::default()
    };
    let p = reconciling(dir.path(), settings, stub.clone(), &metrics);
    let count = |c: &'static str| {
        let r = p.reader.clone();
        async move {
            r.wait_for(|h| h.loaded).await;
            let snap = r.snapshot().unwrap();
            snap.of(Kind::Task)
                .values()
                .filter(|e| e.cluster_arn.ends_with(c))
                .count()
        }
    };
    let both = eventually(Duration::from_secs(10), || async {
        count("/goes").await == 4 && count("/stays").await == 3
    })
    .await;
    assert!(both);
    stub.tasks.lock().unwrap().remove("goes");
    let removed = eventually(Duration::from_secs(10), || async {
        count("/goes").await == 0
    })
    .await;
    assert!(removed, "the vanished cluster's entities stayed");
    assert_eq!(count("/stays").await, 3);
    // Only the cluster that stays still has a reconciler.
    let reconciled = p.reader.health().reconciled;
    let has = |c: &str| reconciled.iter().any(|r| r.ends_with(c));
    assert!(has("/stays") && !has("/goes"), "{reconciled:?}");
    assert!(metrics.cluster(&stub_arn("stays")).sweeps.get() >= 1);
}

/// An HTTP ECS stand-in speaking the real wire protocol (JSON 1.1): it answers
/// `ThrottlingException` to the first `throttle` calls, then one cluster with
/// one task.
async fn ecs_stub(throttle: usize) -> (String, Arc<AtomicUsize>, actix_web::dev::ServerHandle) {
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    let left = Arc::new(AtomicUsize::new(throttle));
    let calls = Arc::new(AtomicUsize::new(0));
    let (l, c) = (left.clone(), calls.clone());
    let server = HttpServer::new(move || {
        let (left, calls) = (l.clone(), c.clone());
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let (left, calls) = (left.clone(), calls.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let json = |v: Value| {
                    HttpResponse::Ok()
                        .content_type("application/x-amz-json-1.1")
                        .body(v.to_string())
                };
                if left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                    return HttpResponse::BadRequest()
                        .content_type("application/x-amz-json-1.1")
                        .body(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#);
                }
                let cluster = "arn:aws:ecs:us-west-2:123456789012:cluster/stubbed";
                let task = "arn:aws:ecs:us-west-2:123456789012:task/stubbed/0123456789abcdef";
                let target = req.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
                let running = String::from_utf8_lossy(&body).contains("RUNNING");
                match target.rsplit('.').next().unwrap_or("") {
                    "ListClusters" => json(serde_json::json!({"clusterArns": [cluster]})),
                    "ListContainerInstances" => json(serde_json::json!({"containerInstanceArns": []})),
                    "DescribeContainerInstances" => json(serde_json::json!({"containerInstances": [], "failures": []})),
                    "ListTasks" => json(serde_json::json!({"taskArns": if running { vec![task] } else { vec![] }})),
                    "ListServices" => json(serde_json::json!({"serviceArns": []})),
                    "DescribeTasks" => json(serde_json::json!({"tasks": [{
                        "taskArn": task, "clusterArn": cluster, "lastStatus": "RUNNING",
                        "desiredStatus": "RUNNING", "version": 7, "launchType": "FARGATE",
                        "taskDefinitionArn": "arn:aws:ecs:us-west-2:123456789012:task-definition/web:1",
                        "createdAt": 1_763_000_000.5, "containers": []}], "failures": []})),
                    other => HttpResponse::BadRequest().body(format!("unknown operation {other}")),
                }
            }
        }))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (format!("http://{addr}"), calls, handle)
}

#[actix_web::test]
async fn ecs_throttling_over_the_wire_backs_off_and_then_succeeds() {
    let (url, calls, server) = ecs_stub(4).await;
    let config = aws_sdk_ecs::Config::builder()
        .behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
        .region(aws_sdk_ecs::config::Region::new("us-west-2"))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_ecs::config::Credentials::new(
            "t", "t", None, None, "t",
        ))
        // The SDK's own retries off: the reconciler's backoff is under test.
        .retry_config(aws_sdk_ecs::config::retry::RetryConfig::disabled())
        .build();
    let ecs = Arc::new(actors::ecs_client::AwsEcs::new(
        aws_sdk_ecs::Client::from_conf(config),
    ));
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let settings = Settings {
        base: Tuning {
            interval: Duration::from_secs(3600),
            ..Tuning::default()
        },
        // Named, so discovery makes no call and the throttled ones are the sweep's.
        clusters: Some(vec!["stubbed".into()]),
        ..Settings::default()
    };
    let p = reconciling(dir.path(), settings, ecs, &metrics);
    let stats = metrics.cluster("stubbed");
    let done = eventually(Duration::from_secs(30), || async {
        stats.sweeps.get() >= 1
    })
    .await;
    assert!(done, "no sweep finished");
    assert_eq!(
        stats.sweep_errors.get(),
        0,
        "throttling must be retried, not fail the sweep"
    );
    assert_eq!(stats.throttles.get(), 4);
    assert!(calls.load(Ordering::SeqCst) >= 8);
    let snap = p.reader.snapshot().unwrap();
    let task = snap
        .of(Kind::Task)
        .values()
        .next()
        .expect("the stub's task is stored");
    assert_eq!(task.version, Some(7));
    assert_eq!(task.launch_type.as_deref(), Some("FARGATE"));
    let entity: Value = serde_json::from_str(task.entity.get()).unwrap();
    assert_eq!(entity["createdAt"], "2025-11-13T02:13:20.500Z");
    server.stop(false).await;
}

#[actix_web::test]
async fn a_frozen_leader_loses_the_lead_and_knows_it_before_it_sweeps_again() {
    let _alone = heavy().await;
    let s = EcsStack::new().await;
    moto_ecs(
        &s.moto,
        serde_json::json!({"clusters": {"alpha": {"instances": 1, "tasks": 1}}}),
    );
    let etcd = crate::servers::EtcdCluster::start();
    let mut env = s.moto.env();
    env.push(("CSS_SOURCE__WAIT_TIME", "1s".into()));
    env.push(("CSS_RECONCILE__INTERVAL", "1s".into()));
    let endpoints = etcd.endpoints().join(",");
    let args = ["--queue", "events", "--etcd-endpoint", &endpoints];
    let replicas = [Proc::spawn(&args, &env), Proc::spawn(&args, &env)];
    for r in &replicas {
        r.wait_ready(Duration::from_secs(20)).await;
    }
    const LEADER: &str = "css_reconcile_leader{cluster=\"alpha\"}";
    const SWEEPS: &str = "css_reconcile_sweeps_total{cluster=\"alpha\"}";
    let mut leader = None;
    for _ in 0..100 {
        for (i, r) in replicas.iter().enumerate() {
            if r.metric(LEADER).await == 1.0 {
                leader = Some(i);
            }
        }
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let frozen = leader.expect("a replica leads alpha");
    let other = &replicas[1 - frozen];
    // Frozen for longer than its lease: the other takes over within the
    // lease's TTL plus one standby check.
    replicas[frozen].signal("STOP");
    let took_over = eventually(Duration::from_secs(12), || async {
        other.metric(LEADER).await == 1.0 && other.metric(SWEEPS).await >= 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    replicas[frozen].signal("CONT");
    assert!(took_over, "the other replica did not take over");
    // Thawed, it knows at once that it does not lead, and never sweeps again:
    // never two leaders at once.
    let swept_before = replicas[frozen].metric(SWEEPS).await;
    for _ in 0..30 {
        let leads: Vec<f64> = vec![
            replicas[0].metric(LEADER).await,
            replicas[1].metric(LEADER).await,
        ];
        assert_eq!(leads[frozen], 0.0, "the thawed replica believes it leads");
        assert_eq!(leads[1 - frozen], 1.0, "the new leader lost the lead");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(replicas[frozen].metric(SWEEPS).await, swept_before);
}

/// Issue 25: `--simulate` (which forgets a stopped task as soon as its slot
/// is reused) with a sweep every second. With the default retention, no
/// sweep deletes a STOPPED task: every one seen stays listed. With a
/// retention of 5 s, each STOPPED task is deleted (a stream deletion) once
/// it has been stopped for 5 s, not earlier, and never by a sweep.
#[actix_web::test]
async fn sweeps_keep_stopped_tasks_until_their_retention() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let spawn = |dir: &tempfile::TempDir, retention: &str| {
        let data = dir.path().join("data");
        let env = [
            ("CSS_SIMULATE__CLUSTERS", "1".to_owned()),
            ("CSS_SIMULATE__INSTANCES_PER_CLUSTER", "2".into()),
            ("CSS_SIMULATE__TASKS_PER_INSTANCE", "4".into()),
            ("CSS_SIMULATE__EVENTS_PER_SECOND", "20".into()),
            // No late events: a task left STOPPING by one could be removed.
            ("CSS_SIMULATE__REORDER_RATE", "0".into()),
            ("CSS_RECONCILE__INTERVAL", "1s".into()),
            ("CSS_RECONCILE__JITTER", "0".into()),
            ("CSS_RECONCILE__GRACE_PERIOD", "1s".into()),
            ("CSS_STORE__STOPPED_TASK_RETENTION", retention.into()),
        ];
        Proc::spawn(&["--simulate", "--data-dir", data.to_str().unwrap()], &env)
    };
    let (kept, expiring) = (spawn(&dirs[0], "24h"), spawn(&dirs[1], "5s"));
    kept.wait_ready(Duration::from_secs(30)).await;
    expiring.wait_ready(Duration::from_secs(30)).await;
    // The simulator's first cluster.
    let sweeps = "css_reconcile_sweeps_total{cluster=\"prod-web\"}";
    let removed = "css_reconcile_removed_total{cluster=\"prod-web\"}";

    // Kept: STOPPED tasks seen on the stream, then three more sweeps.
    let mut stream = StreamClient::open(kept.addr, "/v1/stream/tasks?snapshot=true", "").await;
    let mut stopped = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while stopped.len() < 10 && std::time::Instant::now() < deadline {
        let Some(line) = stream.next_json(Duration::from_secs(5)).await else {
            break;
        };
        assert_ne!(line["metadata"]["deleted"], true, "deleted: {line}");
        if line["entity"]["lastStatus"] == "STOPPED" {
            stopped.insert(line["entity"]["taskARN"].as_str().unwrap().to_owned());
        }
    }
    assert!(stopped.len() >= 10, "only {} tasks stopped", stopped.len());
    let first = kept.metric(sweeps).await;
    let swept = eventually(Duration::from_secs(30), || async {
        kept.metric(sweeps).await >= first + 3.0
    })
    .await;
    assert!(swept, "three more sweeps");
    let listed = kept.get("/v1/tasks?status=STOPPED").await.json();
    let listed: std::collections::BTreeSet<String> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["entity"]["taskARN"].as_str().unwrap().to_owned())
        .collect();
    let lost: Vec<_> = stopped.difference(&listed).collect();
    assert!(
        lost.is_empty(),
        "STOPPED tasks deleted by a sweep: {lost:?}"
    );
    assert_eq!(kept.metric(removed).await, 0.0, "a sweep removed something");
    while let Some(line) = stream.next_json(Duration::from_millis(100)).await {
        assert_ne!(line["metadata"]["deleted"], true, "deleted: {line}");
    }

    // Expiring: each deletion comes 5 s after the task's stoppedAt.
    let mut stream = StreamClient::open(expiring.addr, "/v1/stream/tasks?snapshot=true", "").await;
    let mut stopped_at = HashMap::new();
    let mut deleted = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while deleted < 5 && std::time::Instant::now() < deadline {
        let Some(line) = stream.next_json(Duration::from_secs(5)).await else {
            break;
        };
        let e = &line["entity"];
        let Some(arn) = e["taskARN"].as_str() else {
            continue; // a bookmark
        };
        if line["metadata"]["deleted"] == true {
            let now = actors::time::now_ms();
            let at = stopped_at.get(arn).copied();
            let at = at.expect("only a STOPPED task is deleted");
            assert!(
                now >= at + 5000,
                "{arn} deleted {} ms after it stopped",
                now - at
            );
            deleted += 1;
        } else if e["lastStatus"] == "STOPPED" {
            let at = e["stoppedAt"].as_str().and_then(actors::time::parse_ms);
            stopped_at.insert(arn.to_owned(), at.expect("a stoppedAt"));
        }
    }
    assert!(deleted >= 5, "only {deleted} STOPPED tasks expired");
    // Sweeps ran meanwhile (under load the deletions can come first).
    let swept = eventually(Duration::from_secs(30), || async {
        expiring.metric(sweeps).await >= 5.0 && kept.metric(sweeps).await >= 5.0
    })
    .await;
    assert!(swept, "sweeps ran meanwhile");
    assert_eq!(
        expiring.metric(removed).await,
        0.0,
        "a sweep removed something"
    );
}
