//! The actor pipeline itself: the version rule under any order, supervised
//! restarts, hostile message bodies, and the replay and simulate sources.

use crate::support::*;
use actors::decoder::{Decode, MessageOutcome, RawMessage};
use actors::metrics::Metrics;
use actors::model::Kind;
use actors::pipeline::{Pipeline, Source, SourceAddr};
use actors::store::{self, BoxFuture, Embedded, Loaded, Op, Outcome, Store};
use actors::writer;
use css::config::Feed;
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn messages(bodies: &[String]) -> Vec<RawMessage> {
    bodies
        .iter()
        .enumerate()
        .map(|(i, b)| RawMessage::new(format!("m{i}"), b.clone()))
        .collect()
}

/// Events for entity `e` at `version`; `startedBy` records the version so the
/// final content can be checked, not only the version number.
fn event(e: usize, version: u64) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&task_event("prop", &format!("e{e}"), version, "RUNNING")).unwrap();
    v["detail"]["startedBy"] = serde_json::json!(format!("v{version}"));
    v.to_string()
}

fn orders() -> impl Strategy<Value = (Vec<(usize, u64)>, usize)> {
    (
        proptest::collection::hash_set((0usize..4, 1u64..12), 1..25),
        proptest::collection::vec(any::<proptest::sample::Index>(), 0..15),
        1usize..8,
    )
        .prop_flat_map(|(set, dups, batch)| {
            let mut events: Vec<(usize, u64)> = set.into_iter().collect();
            let extra: Vec<_> = dups.iter().map(|i| events[i.index(events.len())]).collect();
            events.extend(extra);
            (Just(events).prop_shuffle(), Just(batch))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any permutation of a set of events, with duplicates, in batches of any
    /// size, leaves each entity at its highest version; exactly the events
    /// that were not newer than what was stored are counted stale.
    #[test]
    fn any_order_ends_at_the_highest_version((events, batch) in orders()) {
        actix_web::rt::System::new().block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(Embedded::open(dir.path()).unwrap());
            let metrics = Arc::new(Metrics::default());
            let p = Pipeline::start(store, writer::Config::default(), Source::None, None, metrics.clone(),
                &css::logging::discard());
            let bodies: Vec<String> = events.iter().map(|&(e, v)| event(e, v)).collect();
            for chunk in bodies.chunks(batch) {
                p.decoder.send(Decode { messages: messages(chunk) }).await.unwrap().unwrap();
            }
            let mut max: HashMap<usize, u64> = HashMap::new();
            let mut expected_applied = 0;
            for &(e, v) in &events {
                if max.get(&e).is_none_or(|&m| v > m) {
                    expected_applied += 1;
                    max.insert(e, v);
                }
            }
            let snap = p.reader.snapshot().unwrap();
            prop_assert_eq!(snap.of(Kind::Task).len(), max.len());
            for (e, v) in &max {
                let entry = snap.of(Kind::Task).values().find(|x| x.arn.ends_with(&format!("/e{e}"))).unwrap();
                prop_assert_eq!(entry.version, Some(*v));
                prop_assert_eq!(entry.started_by.clone(), Some(format!("v{v}")));
            }
            prop_assert_eq!(metrics.events_applied.get(), expected_applied);
            prop_assert_eq!(metrics.events_stale.get(), events.len() as u64 - expected_applied);
            prop_assert_eq!(snap.revision, expected_applied);
            Ok(())
        })?;
    }
}

/// The `Store` methods a fault-injecting wrapper hands to its `inner` store
/// unchanged.
macro_rules! passed_to_inner {
    () => {
        fn purge_tombstones(&self, before: i64) -> BoxFuture<'_, store::Result<usize>> {
            self.inner.purge_tombstones(before)
        }
        fn compact_history(&self, now: i64, keep: Duration) -> BoxFuture<'_, store::Result<()>> {
            self.inner.compact_history(now, keep)
        }
        fn check_resume(&self, from: u64) -> BoxFuture<'_, store::Result<store::Resume>> {
            self.inner.check_resume(from)
        }
        fn history(&self, from: u64) -> store::Feed {
            self.inner.history(from)
        }
        fn retained(&self) -> BoxFuture<'_, store::Result<store::Retained>> {
            self.inner.retained()
        }
        fn revision_at(&self, at_ms: i64) -> BoxFuture<'_, store::Result<Option<u64>>> {
            self.inner.revision_at(at_ms)
        }
        fn state_at(
            &self,
            revision: u64,
            kind: actors::model::Kind,
            cluster_arn: Option<String>,
        ) -> BoxFuture<'_, store::Result<Vec<actors::model::SharedEntry>>> {
            self.inner.state_at(revision, kind, cluster_arn)
        }
        fn versions(
            &self,
            kind: actors::model::Kind,
            cluster_arn: String,
            arn: String,
        ) -> BoxFuture<'_, store::Result<Vec<store::Version>>> {
            self.inner.versions(kind, cluster_arn, arn)
        }
        fn versions_in(
            &self,
            kind: actors::model::Kind,
            cluster_arn: String,
        ) -> BoxFuture<'_, store::Result<Vec<store::Version>>> {
            self.inner.versions_in(kind, cluster_arn)
        }
    };
}

/// Commits to the real store, then (once armed) reports failure anyway: as if
/// the process lost the reply after the fsync.
struct LosesReply {
    inner: Embedded,
    armed: AtomicBool,
}

impl Store for LosesReply {
    fn load(&self) -> BoxFuture<'_, store::Result<Loaded>> {
        self.inner.load()
    }
    fn commit(&self, ops: Vec<Op>, now: i64) -> BoxFuture<'_, store::Result<Vec<Outcome>>> {
        Box::pin(async move {
            let res = self.inner.commit(ops, now).await;
            if self.armed.swap(false, Ordering::SeqCst) {
                return Err(store::Error::Indeterminate("reply lost".into()));
            }
            res
        })
    }
    passed_to_inner!();
}

/// A pipeline on `store`, fed by nothing but the test.
fn plain(store: Arc<dyn Store>, metrics: &Arc<Metrics>) -> Pipeline {
    Pipeline::start(
        store,
        writer::Config::default(),
        Source::None,
        None,
        metrics.clone(),
        &css::logging::discard(),
    )
}

/// Hands `bodies` to the pipeline's decoder; what became of each.
async fn decode(p: &Pipeline, bodies: &[String]) -> Vec<MessageOutcome> {
    p.decoder
        .send(Decode {
            messages: messages(bodies),
        })
        .await
        .unwrap()
        .unwrap()
}

#[actix_web::test]
async fn a_commit_of_unknown_outcome_reloads_the_view_while_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LosesReply {
        inner: Embedded::open(dir.path()).unwrap(),
        armed: AtomicBool::new(false),
    });
    let metrics = Arc::new(Metrics::default());
    let p = plain(store.clone(), &metrics);
    let first = vec![event(1, 1), event(2, 1)];
    let r = decode(&p, &first).await;
    assert_eq!(r, [MessageOutcome::Applied, MessageOutcome::Applied]);

    store.armed.store(true, Ordering::SeqCst);
    let second = vec![event(3, 1)];
    let r = p
        .decoder
        .send(Decode {
            messages: messages(&second),
        })
        .await
        .unwrap();
    assert!(
        r.is_err(),
        "the caller must hear of the failure, so it does not ack"
    );

    // The writer reads the store again, serving the old view meanwhile:
    // the write whose reply was lost is there.
    let mut snap = None;
    for _ in 0..100 {
        let s = p.reader.snapshot().expect("the view serves throughout");
        if s.revision == 3 {
            snap = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let snap = snap.expect("the view was reloaded");
    assert_eq!(metrics.writer_restarts.get(), 0, "reloaded in place");
    assert_eq!(snap.of(Kind::Task).len(), 3);
    assert_eq!(snap.revision, 3);

    // The redelivered message is a no-op; new ones apply as usual.
    let r = decode(&p, &second).await;
    assert_eq!(r, [MessageOutcome::Stale]);
    let r = decode(&p, &[event(4, 1)]).await;
    assert_eq!(r, [MessageOutcome::Applied]);
    let snap = p.reader.snapshot().unwrap();
    assert_eq!((snap.of(Kind::Task).len(), snap.revision), (4, 4));
}

#[actix_web::test]
async fn hostile_bodies_are_invalid_and_never_stop_the_good_ones() {
    let t = start().await;
    let task = fixture("task-running-ec2.json");
    let deep_array = "[".repeat(100_000);
    let deep_object = format!("{{\"a\":{}", "[".repeat(100_000));
    let sns_in_sns = serde_json::json!({"Type": "Notification",
        "Message": serde_json::json!({"Type": "Notification", "Message": task}).to_string()})
    .to_string();
    let hostile: Vec<String> = vec![
        String::new(),
        "   ".into(),
        "null".into(),
        "[]".into(),
        "\"just a string\"".into(),
        "{".into(),
        deep_array,
        deep_object,
        "x".repeat(300 * 1024),
        r#"{"detail-type":"ECS Task State Change","detail":"a string"}"#.into(),
        r#"{"detail-type":"ECS Task State Change","detail":{"taskArn":"arn:aws:ecs:r:1:task/c/t","lastStatus":"RUNNING","version":1e30}}"#.into(),
        r#"{"detail-type":"ECS Task State Change","detail":{"taskArn":"arn:aws:ecs:r:1:task/c/t","lastStatus":"RUNNING","version":18446744073709551616}}"#.into(),
        r#"{"detail-type":"ECS Task State Change","detail":{"taskArn":"arn:aws:ecs:r:1:task/c/t\ud800","lastStatus":"RUNNING","version":1}}"#.into(),
        r#"{"detail-type":"ECS Task State Change","detail":{"taskArn":"arn:aws:ecs:r:1:task/c/t","lastStatus":"RUNNING","version":1,"containers":{"a":1}}}"#.into(),
        r#"{"detail-type":"ECS Task State Change","detail":{"taskArn":"arn:aws:ecs:r:1:task/c/t","lastStatus":"RUNNING","version":1,"containers":[{"exitCode":"zero"}]}}"#.into(),
        r#"{"detail-type":"ECS Container Instance State Change","detail":{"containerInstanceArn":"arn:aws:ecs:r:1:container-instance/c/i","status":"ACTIVE","version":1,"registeredResources":[{"type":"INTEGER","integerValue":"many"}]}}"#.into(),
        r#"{"detail-type":"ECS Task State Change","detail":{"taskArn":"arn:aws:ecs:r:1:task/c/t","clusterArn":"arn:aws:ecs:r:1:cluster/bad name","lastStatus":"RUNNING","version":1}}"#.into(),
        r#"{"Type":"Notification","Message":42}"#.into(),
        sns_in_sns,
        "\u{feff}{}".into(),
    ];
    let mut batch = vec![task.clone()];
    batch.extend(hostile.iter().cloned());
    batch.push(fixture("instance-active.json"));
    let outcomes = t.inject(&batch).await;
    assert_eq!(outcomes[0], MessageOutcome::Applied);
    assert_eq!(outcomes[outcomes.len() - 1], MessageOutcome::Applied);
    for (body, o) in hostile.iter().zip(&outcomes[1..]) {
        assert!(
            matches!(o, MessageOutcome::Invalid(_)),
            "{o:?} for {:.80}",
            body
        );
    }
    let metrics = String::from_utf8(t.get("/metrics").await.body).unwrap();
    assert!(
        metrics.contains(&format!(
            "css_events_total{{outcome=\"invalid\"}} {}",
            hostile.len()
        )),
        "{metrics}"
    );
    // Still alive and serving.
    assert_eq!(
        t.inject(&[fixture("task-fargate-short-arn.json")]).await,
        [MessageOutcome::Applied]
    );
    assert_eq!(t.count("/v1/tasks").await, 2);
}

#[actix_web::test]
async fn a_replay_from_a_pipe_applies_lines_as_they_arrive() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("events.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let opener = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(fifo))
    };
    let t = start_with(Feed::Replay(fifo), |_| {}).await;
    let mut pipe = opener.join().unwrap().unwrap();
    let SourceAddr::Replay(src) = t.svc.pipeline.source.clone() else {
        panic!("no replay source")
    };
    let count = || async { t.count("/v1/tasks?cluster=piped").await };
    // Far fewer lines than a batch, and the pipe stays open: they are
    // applied as they arrive, not when a batch fills or the input ends.
    for (round, n) in [(0, 3), (3, 2)] {
        for i in round..round + n {
            writeln!(
                pipe,
                "{}",
                task_event("piped", &format!("t{i}"), 1, "RUNNING")
            )
            .unwrap();
        }
        pipe.flush().unwrap();
        let want = round + n;
        assert!(
            eventually(Duration::from_secs(5), || async { count().await == want }).await,
            "{want} lines written, {} applied",
            count().await
        );
    }
    let r = src.send(actors::source::replay::GetReport).await.unwrap();
    assert_eq!((r.applied, r.done), (5, false));
    drop(pipe);
    assert!(
        eventually(Duration::from_secs(5), || async {
            src.send(actors::source::replay::GetReport)
                .await
                .unwrap()
                .done
        })
        .await
    );
}

#[actix_web::test]
async fn replay_counts_bad_lines_and_applies_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    let one_line = |s: String| {
        serde_json::from_str::<serde_json::Value>(&s)
            .unwrap()
            .to_string()
    };
    let mut lines = vec![
        one_line(fixture("task-running-ec2.json")),
        "this is not json".into(),
        String::new(),
        one_line(fixture("instance-active.json")),
        format!("{{\"x\":\"{}\"}}", "y".repeat(300 * 1024)),
        one_line(fixture("service-action-ignored.json")),
        one_line(fixture("task-running-ec2.json")),
        // A service event without its service: invalid even where service
        // events are ignored.
        r#"{"detail-type":"ECS Deployment State Change","resources":[],"detail":{}}"#.into(),
    ];
    lines.extend((0..2500).map(|i| task_event("bulk", &format!("t{i}"), 1, "RUNNING")));
    std::fs::write(&file, lines.join("\n")).unwrap();

    let t = start_with(Feed::Replay(file), |_| {}).await;
    let SourceAddr::Replay(src) = t.svc.pipeline.source.clone() else {
        panic!("no replay source")
    };
    let mut report = None;
    for _ in 0..300 {
        let r = src.send(actors::source::replay::GetReport).await.unwrap();
        if r.done {
            report = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = report.expect("replay finished");
    assert_eq!(r.lines, 2508);
    assert_eq!(
        (r.applied, r.stale, r.ignored, r.invalid, r.failed),
        (2502, 1, 1, 3, 0),
        "with no ECS to ask, a service event is ignored; a malformed one is invalid"
    );
    assert_eq!(t.count("/v1/tasks?cluster=bulk&limit=1").await, 1);
    let all = t.get("/v1/tasks").await.json();
    assert_eq!(all["items"].as_array().unwrap().len(), 2501);
    assert_eq!(t.count("/v1/instances").await, 1);
}

async fn truth(t: &TestService) -> actors::source::simulate::Truth {
    let SourceAddr::Simulate(sim) = t.svc.pipeline.source.clone() else {
        panic!("no simulator")
    };
    sim.send(actors::source::simulate::GetTruth).await.unwrap()
}

#[actix_web::test]
async fn simulate_with_duplicates_and_reordering_converges_to_the_truth() {
    let t = simulated(actors::source::simulate::Config {
        duplicate_rate: 0.3,
        reorder_rate: 0.3,
        ..world(2, 3, 4, 0.0)
    })
    .await;
    let mut ok = false;
    for _ in 0..200 {
        let tr = truth(&t).await;
        let tasks = t.count("/v1/tasks").await;
        let instances = t.count("/v1/instances").await;
        if tr.settled && tasks == tr.tasks && instances == tr.instances {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ok, "view never matched the simulator");
    let tr = truth(&t).await;
    assert_eq!((tr.tasks, tr.instances), (24, 6));
    let metrics = String::from_utf8(t.get("/metrics").await.body).unwrap();
    let stale: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("css_events_total{outcome=\"stale\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(stale > 0, "duplicates must show up as stale: {metrics}");
    for c in &tr.clusters {
        let r = t.get(&format!("/v1/tasks?cluster={c}")).await;
        assert_eq!(r.json()["items"].as_array().unwrap().len(), 12, "{c}");
    }
}

#[actix_web::test]
async fn malformed_simulated_messages_do_not_stop_the_pipeline() {
    let t = simulated(actors::source::simulate::Config {
        malformed_rate: 0.3,
        ..world(1, 2, 2, 200.0)
    })
    .await;
    let counter = |m: &str, outcome: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("css_events_total{{outcome=\"{outcome}\"}} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut seen = (0, 0);
    for _ in 0..200 {
        let m = String::from_utf8(t.get("/metrics").await.body).unwrap();
        seen = (counter(&m, "invalid"), counter(&m, "applied"));
        if seen.0 >= 20 && seen.1 >= 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        seen.0 >= 20 && seen.1 >= 60,
        "invalid and applied must both keep growing: {seen:?}"
    );
    // And after all that, still growing.
    let growing = eventually(Duration::from_secs(10), || async {
        let m = String::from_utf8(t.get("/metrics").await.body).unwrap();
        counter(&m, "applied") > seen.1
    })
    .await;
    assert!(growing, "nothing applied after {seen:?}");
}

/// The embedded store, but claiming a feed that never delivers anything: as
/// if a watch had silently stalled.
struct StalledFeed {
    inner: Embedded,
    senders: std::sync::Mutex<Vec<tokio::sync::mpsc::Sender<store::Result<Vec<store::Change>>>>>,
}

impl Store for StalledFeed {
    fn load(&self) -> BoxFuture<'_, store::Result<Loaded>> {
        self.inner.load()
    }
    fn commit(&self, ops: Vec<Op>, now: i64) -> BoxFuture<'_, store::Result<Vec<Outcome>>> {
        self.inner.commit(ops, now)
    }
    passed_to_inner!();
    fn feed(&self, _: u64) -> Option<actors::store::Feed> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        // Keep the sender so the feed neither ends nor delivers.
        self.senders.lock().unwrap().push(tx);
        Some(rx)
    }
}

#[actix_web::test]
async fn a_stalled_feed_is_replaced_by_a_reload_and_writers_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(StalledFeed {
        inner: Embedded::open(dir.path()).unwrap(),
        senders: Default::default(),
    });
    let metrics = Arc::new(Metrics::default());
    let p = plain(store.clone(), &metrics);
    let started = std::time::Instant::now();
    let r = decode(&p, &[event(1, 1)]).await;
    assert_eq!(r, [MessageOutcome::Applied]);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4),
        "answered before the feed could show it ({waited:?})"
    );
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    assert_eq!(metrics.feed_reloads.get(), 1);
    assert_eq!(
        store.senders.lock().unwrap().len(),
        2,
        "a new feed after the reload"
    );
    // The view is swapped in just after the new feed is opened.
    let reloaded = eventually(Duration::from_secs(2), || async {
        p.reader
            .snapshot()
            .is_ok_and(|s| s.of(Kind::Task).len() == 1)
    })
    .await;
    assert!(reloaded, "the reloaded view has the write");
}
