//! Change streams (`api.md`, Streams): live delivery, resume from a version
//! with an exact hand-over from history to live, snapshots, deletions,
//! heartbeats, slow clients, SSE, limits; on both stores.

use crate::support::*;
use css::config::Feed;
use serde_json::Value;
use std::time::{Duration, Instant};

on_both_backends!(
    a_change_reaches_an_open_stream_promptly,
    the_v03_scenario_replays_every_version_of_a_task,
    a_catch_up_under_a_concurrent_writer_is_complete_and_ordered,
    a_client_that_stops_reading_is_cut_and_resumes_without_loss,
    a_fast_client_takes_a_commit_larger_than_its_buffer_whole,
    out_of_range_and_bad_parameters,
    sse_carries_ids_and_resumes_after_last_event_id,
    snapshot_deletions_and_heartbeats,
);

const SECOND: Duration = Duration::from_secs(1);

fn path(kind: &str, query: &str) -> String {
    format!("/v1/stream/{kind}{query}")
}

/// A task stream from `entityVersion` `from` on `addr`.
async fn tasks_from(addr: std::net::SocketAddr, from: impl std::fmt::Display) -> StreamClient {
    StreamClient::open(addr, &path("tasks", &format!("?entityVersion={from}")), "").await
}

/// Reads items until one has `entityVersion` `last` (or the stream stalls
/// for 10 s); returns their versions.
async fn versions_until(c: &mut StreamClient, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    while let Some(item) = c.next_json(10 * SECOND).await {
        let v = version_of(&item);
        seen.push(v);
        if v >= last {
            break;
        }
    }
    seen
}

/// `rounds` × `tasks` changes: every task of cluster `c` moved to the next
/// version, `batch` events per injection.
async fn write_changes(t: &TestService, tasks: usize, rounds: u64, batch: usize) {
    for version in 1..=rounds {
        write_round(t, tasks, version, batch, 0).await;
    }
}

/// Every task of cluster `c` at `version`, each with a `stoppedReason` of
/// `pad` bytes (to make big items).
async fn write_round(t: &TestService, tasks: usize, version: u64, batch: usize, pad: usize) {
    let events: Vec<String> = (0..tasks)
        .map(|i| {
            let event = task_event("c", &format!("t{i:04}"), version, "RUNNING");
            if pad == 0 {
                return event;
            }
            let mut v: Value = serde_json::from_str(&event).unwrap();
            v["detail"]["stoppedReason"] = "x".repeat(pad).into();
            v.to_string()
        })
        .collect();
    for chunk in events.chunks(batch) {
        t.inject(chunk).await;
    }
}

async fn a_change_reaches_an_open_stream_promptly(b: Backend) {
    let t = start_on(b).await;
    let mut tasks = StreamClient::open(t.addr(), "/v1/stream/tasks", "").await;
    let mut instances = StreamClient::open(t.addr(), "/v1/stream/instances", "").await;
    assert_eq!(tasks.status, 200);
    assert_eq!(tasks.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(tasks.header("transfer-encoding"), Some("chunked"));

    let sent = Instant::now();
    t.inject(&[task_event("c", "a", 1, "RUNNING")]).await;
    let item = tasks
        .next_json(SECOND)
        .await
        .expect("the change within 1 s");
    println!("stream delivery after {:?}", sent.elapsed());
    assert_eq!(version_of(&item), t.base + 1);
    assert_eq!(item["entity"]["lastStatus"], "RUNNING");
    assert_eq!(
        item["entity"]["taskARN"],
        "arn:aws:ecs:us-west-2:111122223333:task/c/a"
    );
    assert!(item["metadata"].get("deleted").is_none());
    // The item is what a describe returns.
    let described = t
        .get("/v1/tasks/c/arn:aws:ecs:us-west-2:111122223333:task/c/a")
        .await
        .json();
    assert_eq!(item, described);

    t.inject(&[fixture("instance-active.json")]).await;
    let inst = instances.next_json(SECOND).await.expect("instance change");
    assert_eq!(version_of(&inst), t.base + 2);
    assert!(inst["entity"]["containerInstanceARN"].is_string());
    // Each stream has only its own kind.
    assert!(tasks.next_json(Duration::from_millis(300)).await.is_none());
}

async fn the_v03_scenario_replays_every_version_of_a_task(b: Backend) {
    let t = start_on(b).await;
    t.inject(&[task_event("c", "web", 1, "RUNNING")]).await;
    let read = t
        .get("/v1/tasks/c/arn:aws:ecs:us-west-2:111122223333:task/c/web")
        .await
        .json();
    let noted = version_of(&read);
    t.inject(&[task_event("c", "web", 2, "STOPPED")]).await;

    let mut c = tasks_from(t.addr(), noted).await;
    assert_eq!(c.status, 200);
    let first = c.next_json(5 * SECOND).await.expect("RUNNING version");
    let second = c.next_json(5 * SECOND).await.expect("STOPPED version");
    assert_eq!(
        (first["entity"]["lastStatus"].as_str(), version_of(&first)),
        (Some("RUNNING"), noted)
    );
    assert_eq!(
        (second["entity"]["lastStatus"].as_str(), version_of(&second)),
        (Some("STOPPED"), noted + 1)
    );
    // Then it is live: a later change follows without a duplicate.
    t.inject(&[task_event("c", "web", 3, "STOPPED")]).await;
    assert_eq!(
        version_of(&c.next_json(5 * SECOND).await.unwrap()),
        noted + 2
    );
}

async fn a_catch_up_under_a_concurrent_writer_is_complete_and_ordered(b: Backend) {
    let t = start_on(b).await;
    let (tasks, rounds) = (500, 10);
    let last = t.base + (tasks * rounds as usize) as u64;
    let reader = async {
        // Join in the middle of the writing.
        let deadline = Instant::now() + 60 * SECOND;
        let middle = loop {
            let list = t.get("/v1/instances").await.json();
            let next = version_of(&list) + 1;
            if next > t.base + 2500 {
                break next;
            }
            assert!(Instant::now() < deadline, "the writer never got half way");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut c = tasks_from(t.addr(), middle).await;
        assert_eq!(c.status, 200);
        (middle, versions_until(&mut c, last).await)
    };
    let ((), (middle, seen)) = tokio::join!(write_changes(&t, tasks, rounds, 100), reader);
    assert!(middle < last, "joined after the end ({middle})");
    let expected: Vec<u64> = (middle..=last).collect();
    assert_eq!(
        seen.len(),
        expected.len(),
        "complete from {middle} to {last}"
    );
    assert_eq!(seen, expected, "strictly increasing, no gap, no duplicate");

    // The store's history says the same: a stream read after the fact.
    let mut again = tasks_from(t.addr(), middle).await;
    assert_eq!(versions_until(&mut again, last).await, expected);
}

async fn a_client_that_stops_reading_is_cut_and_resumes_without_loss(b: Backend) {
    let t = start_with_on(b, Feed::None, |s| s.server.stream_buffer = 16).await;
    // A small receive window, so the server's buffer is what fills up.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let conn = sock.connect(t.addr()).await.unwrap();
    let mut slow = StreamClient::open_on(conn, "/v1/stream/tasks", "").await;
    assert_eq!(slow.status, 200);

    // Big items (8 KB), until the kernel's socket buffers and the stream's
    // own 16 are full; far less than the 40 MB this may write.
    let too_slow = "css_streams_dropped_total{reason=\"too_slow\"}";
    let mut total = 0;
    for version in 1..=50 {
        write_round(&t, 100, version, 100, 8000).await;
        total += 100;
        if t.metric(too_slow).await == 1.0 {
            break;
        }
    }
    let last = t.base + total;
    assert_eq!(
        t.metric(too_slow).await,
        1.0,
        "a stalled stream was not cut"
    );
    println!("cut after {total} changes of 8 KB");

    // What it still gets: a prefix of the changes, then the TooSlow line.
    let mut got = Vec::new();
    let end = loop {
        let line = slow.next_json(10 * SECOND).await.expect("TooSlow line");
        if line.get("error").is_some() {
            break line;
        }
        got.push(version_of(&line));
    };
    assert_eq!(end["error"]["code"], "TooSlow", "{end}");
    assert!(end["error"]["message"].is_string());
    let resume: u64 = end["error"]["resumeFrom"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        slow.next_json(SECOND).await.is_none() && slow.ended,
        "it ends"
    );
    assert_eq!(got, (t.base + 1..resume).collect::<Vec<_>>());
    assert!(resume < last, "cut before the end");

    let mut c = tasks_from(t.addr(), resume).await;
    got.extend(versions_until(&mut c, last).await);
    assert_eq!(got, (t.base + 1..=last).collect::<Vec<_>>());
}

/// Issue 25: one commit is one entry of a stream's buffer, so a client that
/// keeps reading gets a commit of many times `stream_buffer` items (here 200
/// creations, then 200 deletions, as a sweep writes them) without a cut.
async fn a_fast_client_takes_a_commit_larger_than_its_buffer_whole(b: Backend) {
    use actors::store::Op;
    let t = start_with_on(b, Feed::None, |s| s.server.stream_buffer = 16).await;
    let mut c = StreamClient::open(t.addr(), "/v1/stream/tasks", "").await;
    assert_eq!(c.status, 200);
    let events: Vec<String> = (0..200)
        .map(|i| task_event("c", &format!("t{i:04}"), 1, "RUNNING"))
        .collect();
    t.inject(&events).await;
    let list = t.get("/v1/tasks").await.json();
    let deletes: Vec<Op> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| Op::Delete {
            arn: i["entity"]["taskARN"].as_str().unwrap().to_owned(),
            if_revision: version_of(i),
        })
        .collect();
    assert_eq!(deletes.len(), 200);
    let last = t.base + 400;
    t.apply(deletes).await;

    let mut seen = Vec::new();
    let mut deleted = 0;
    while let Some(item) = c.next_json(10 * SECOND).await {
        assert!(item.get("error").is_none(), "cut: {item}");
        deleted += usize::from(item["metadata"]["deleted"] == true);
        let v = version_of(&item);
        seen.push(v);
        if v >= last {
            break;
        }
    }
    assert_eq!(
        seen,
        (t.base + 1..=last).collect::<Vec<_>>(),
        "in order, none missing"
    );
    assert_eq!(deleted, 200);
    let too_slow = "css_streams_dropped_total{reason=\"too_slow\"}";
    assert_eq!(t.metric(too_slow).await, 0.0);
}

async fn out_of_range_and_bad_parameters(b: Backend) {
    let t = start_with_on(b, Feed::None, |s| {
        s.store.history_retention = Some(SECOND);
    })
    .await;
    age_out_two_writes(&t).await;

    let compacted = path("tasks", &format!("?entityVersion={}", t.base + 1));
    // (Compaction runs in the background of the housekeeping.)
    let gone = eventually(5 * SECOND, || async {
        StreamClient::open(t.addr(), &compacted, "").await.status == 410
    })
    .await;
    assert!(gone, "a compacted version must give 410");
    let r = t.get(&compacted).await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("Entity version is out of range"));

    // The newest change and the next revision are fine.
    for ok in [t.base + 3, t.base + 4] {
        let c = tasks_from(t.addr(), ok).await;
        assert_eq!(c.status, 200, "entityVersion={ok}");
    }
    let r = t
        .get(&path("tasks", &format!("?entityVersion={}", t.base + 5)))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("Entity version is out of range"));

    let cases: &[(&str, &str)] = &[
        ("?entityVersion=abc", "Invalid entity version"),
        ("?entityVersion=-1", "Invalid entity version"),
        ("?entityVersion=1.5", "Invalid entity version"),
        ("?entityVersion=%2B3", "Invalid entity version"),
        (
            "?entityVersion=99999999999999999999999",
            "Invalid entity version",
        ),
        (
            "?entityVersion=1&entityVersion=2",
            "specified multiple times",
        ),
        (
            "?limit=5",
            "At least one of the filters provided is unsupported",
        ),
        ("?status=bogus", "Invalid status"),
        ("?cluster=bad%20name", "Invalid cluster ARN or name"),
        ("?snapshot=maybe", "Invalid snapshot"),
        ("?snapshot=true&entityVersion=1", "Invalid snapshot"),
        ("?heartbeat=0", "Invalid heartbeat"),
        ("?heartbeat=301", "Invalid heartbeat"),
        ("?heartbeat=x", "Invalid heartbeat"),
    ];
    for (query, message) in cases {
        let r = t.get(&path("tasks", query)).await;
        assert_eq!(r.status, 400, "{query}");
        let body = r.json();
        assert!(
            body["message"].as_str().unwrap().contains(message),
            "{query}: {body}"
        );
        assert!(body["code"].is_string());
    }
    let r = t.get(&path("instances", "?launchType=EC2")).await;
    assert_eq!(r.status, 400, "task filters are not instance filters");
    let r = request(t.addr(), "POST", "/v1/stream/tasks").await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    assert_eq!(t.get("/v1/stream/other").await.status, 404);
}

/// One SSE event as (id, event, data).
fn sse_fields(record: &str) -> (Option<String>, String, String) {
    let mut id = None;
    let (mut event, mut data) = (String::new(), String::new());
    for line in record.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = v.to_owned();
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = v.to_owned();
        }
    }
    (id, event, data)
}

async fn sse_carries_ids_and_resumes_after_last_event_id(b: Backend) {
    let t = start_on(b).await;
    t.inject(&[
        task_event("c", "a", 1, "PENDING"),
        task_event("c", "a", 2, "RUNNING"),
        task_event("c", "a", 3, "STOPPED"),
    ])
    .await;
    let url = path("tasks", &format!("?entityVersion={}", t.base + 1));
    let accept = "Accept: text/event-stream\r\n";
    let mut c = StreamClient::open(t.addr(), &url, accept).await;
    assert_eq!(c.status, 200);
    assert_eq!(c.header("content-type"), Some("text/event-stream"));
    for n in 1..=3 {
        let record = c.next_record(b"\n\n", 5 * SECOND).await.expect("event");
        let (id, event, data) = sse_fields(&record);
        assert_eq!(id, Some(t.rev(n)), "{record}");
        assert_eq!(event, "task");
        let item: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(
            item["metadata"]["entityVersion"].as_str(),
            Some(t.rev(n).as_str())
        );
    }
    // An EventSource reconnects with the same URL and the last id it saw.
    let header = format!("{accept}Last-Event-ID: {}\r\n", t.rev(2));
    let mut again = StreamClient::open(t.addr(), &url, &header).await;
    let (id, _, data) = sse_fields(&again.next_record(b"\n\n", 5 * SECOND).await.unwrap());
    assert_eq!(id, Some(t.rev(3)));
    assert!(data.contains("STOPPED"));
    // Not an NDJSON line in sight.
    assert!(!data.ends_with('\n'));
    let bad = format!("{accept}Last-Event-ID: yesterday\r\n");
    let r = StreamClient::open(t.addr(), &url, &bad).await;
    assert_eq!(r.status, 400);
    assert!(r.body_json()["message"]
        .as_str()
        .unwrap()
        .contains("Invalid entity version"));
}

async fn snapshot_deletions_and_heartbeats(b: Backend) {
    let t = start_with_on(b, Feed::None, |s| {
        s.store.stopped_task_retention = Duration::from_secs(3600);
    })
    .await;
    t.inject(&[
        task_event("c", "b", 1, "RUNNING"),
        task_event("c", "a", 1, "RUNNING"),
    ])
    .await;
    let mut c =
        StreamClient::open(t.addr(), "/v1/stream/tasks?snapshot=true&heartbeat=1", "").await;
    // A filtered stream that matches nothing still learns how far it has seen.
    let mut other =
        StreamClient::open(t.addr(), "/v1/stream/tasks?cluster=other&heartbeat=1", "").await;
    let first = c.next_json(5 * SECOND).await.unwrap();
    let second = c.next_json(5 * SECOND).await.unwrap();
    assert!(first["entity"]["taskARN"].as_str().unwrap().ends_with("/a"));
    assert!(second["entity"]["taskARN"]
        .as_str()
        .unwrap()
        .ends_with("/b"));
    let bookmark = c.next_json(5 * SECOND).await.unwrap();
    assert_eq!(
        bookmark,
        serde_json::json!({"bookmark": {"entityVersion": t.rev(2)}})
    );

    // A STOPPED task long past its retention: stored, then expired.
    t.inject(&[fixture("task-stopped-ec2.json")]).await;
    let stopped = c.next_json(5 * SECOND).await.unwrap();
    assert_eq!(version_of(&stopped), t.base + 3);
    assert_eq!(stopped["entity"]["lastStatus"], "STOPPED");
    t.housekeep().await;
    let deleted = c.next_json(5 * SECOND).await.expect("the deletion");
    assert_eq!(deleted["metadata"]["deleted"], true, "{deleted}");
    assert_eq!(version_of(&deleted), t.base + 4);
    assert_eq!(deleted["entity"]["taskARN"], stopped["entity"]["taskARN"]);

    // Idle: a bookmark at the newest revision within the heartbeat.
    let beat = c.next_json(3 * SECOND).await.expect("heartbeat");
    assert_eq!(
        beat,
        serde_json::json!({"bookmark": {"entityVersion": t.rev(4)}})
    );
    let mut last_other = None;
    for _ in 0..4 {
        let line = other.next_json(3 * SECOND).await.expect("heartbeat");
        assert!(line.get("bookmark").is_some(), "filtered out: {line}");
        last_other = line["bookmark"]["entityVersion"]
            .as_str()
            .map(str::to_owned);
        if last_other.as_deref() == Some(t.rev(4).as_str()) {
            break;
        }
    }
    assert_eq!(last_other, Some(t.rev(4)));
    // Without heartbeat=S no extra line is ever sent.
    let mut plain = StreamClient::open(t.addr(), "/v1/stream/tasks", "").await;
    assert!(plain.next_json(Duration::from_millis(1500)).await.is_none());
}

#[actix_web::test]
async fn a_stream_on_one_replica_sees_changes_ingested_by_the_other() {
    let a = start_on(Backend::Etcd).await;
    let endpoint = a._etcd.as_ref().unwrap().endpoint();
    let b = start_with_on(Backend::Embedded, Feed::None, |s| {
        s.store.backend = actors::store::Backend::Etcd;
        s.store.etcd_endpoints = vec![endpoint];
    })
    .await;
    let mut on_b = StreamClient::open(b.addr(), "/v1/stream/tasks", "").await;
    a.inject(&[task_event("c", "x", 1, "RUNNING")]).await;
    let item = on_b
        .next_json(2 * SECOND)
        .await
        .expect("change from replica a");
    assert_eq!(version_of(&item), a.base + 1);
    assert!(item["entity"]["taskARN"].as_str().unwrap().ends_with("/x"));
    // And resuming on b replays what a wrote.
    let mut from = tasks_from(b.addr(), a.base + 1).await;
    assert_eq!(
        version_of(&from.next_json(2 * SECOND).await.unwrap()),
        a.base + 1
    );
}

#[actix_web::test]
async fn closing_a_thousand_streams_frees_them_all() {
    let t = start_with_on(Backend::Embedded, Feed::None, |s| {
        s.server.max_streams = 1000
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..1000 {
        let kind = if i % 2 == 0 { "tasks" } else { "instances" };
        let c = StreamClient::open(t.addr(), &path(kind, ""), "").await;
        assert_eq!(c.status, 200, "stream {i}");
        clients.push(c);
    }
    assert_eq!(t.metric("css_streams_open ").await, 1000.0);
    // One more is refused, as JSON.
    let r = t.get("/v1/stream/tasks").await;
    assert_eq!(r.status, 503);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("Too many streams"));
    // Every open stream gets a change.
    t.inject(&[task_event("c", "a", 1, "RUNNING")]).await;
    for c in clients.iter_mut().step_by(2) {
        assert!(c.next_json(5 * SECOND).await.is_some());
    }
    drop(clients);
    let freed = eventually(5 * SECOND, || async {
        t.metric("css_streams_open ").await == 0.0
    })
    .await;
    assert!(
        freed,
        "streams still open: {}",
        t.metric("css_streams_open ").await
    );
    // The hub forgets them too: a new change reaches a new stream only.
    let mut c = StreamClient::open(t.addr(), "/v1/stream/tasks", "").await;
    t.inject(&[task_event("c", "a", 2, "RUNNING")]).await;
    assert!(c.next_json(5 * SECOND).await.is_some());
    assert_eq!(t.metric("css_streams_open ").await, 1.0);
}

#[actix_web::test]
async fn stopping_the_service_ends_open_streams_cleanly() {
    let t = start().await;
    write_changes(&t, 10, 1, 10).await;
    let mut live = StreamClient::open(t.addr(), "/v1/stream/tasks", "").await;
    let mut sse = StreamClient::open(
        t.addr(),
        "/v1/stream/instances",
        "Accept: text/event-stream\r\n",
    )
    .await;
    let mut replay = StreamClient::open(
        t.addr(),
        &path("tasks", &format!("?entityVersion={}", t.base + 1)),
        "",
    )
    .await;
    assert_eq!(versions_until(&mut replay, t.base + 10).await.len(), 10);
    let TestService {
        svc, _dir, _etcd, ..
    } = t;
    let started = Instant::now();
    let stopping = actix_web::rt::spawn(svc.stop());
    for c in [&mut live, &mut sse, &mut replay] {
        assert!(c.next_record(b"\n", 5 * SECOND).await.is_none());
        assert!(
            c.terminated,
            "a stream must end with the chunked terminator"
        );
    }
    stopping.await.unwrap();
    println!("stopped in {:?}", started.elapsed());
}
