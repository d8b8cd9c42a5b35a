//! Real ingest into real storage: the binary reading moto's SQS into the
//! embedded store and into a real etcd, through crashes, outages and with two
//! replicas.

use crate::servers::{Etcd, Fault, FaultProxy, Moto, SmallDisk};
use crate::support::*;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

on_both_backends!(
    events_reach_the_api_at_their_highest_version,
    sigkill_mid_ingest_loses_nothing,
);

/// Everything a scenario runs against.
struct Stack {
    moto: Moto,
    etcd: Option<Etcd>,
    dir: tempfile::TempDir,
    sqs: aws_sdk_sqs::Client,
}

impl Stack {
    fn new(backend: Backend) -> Stack {
        let moto = Moto::start();
        let sqs = moto.sqs();
        Stack {
            moto,
            etcd: (backend == Backend::Etcd).then(Etcd::start),
            dir: tempfile::tempdir().unwrap(),
            sqs,
        }
    }

    /// The store revision before any write: 0 embedded; a fresh etcd is at 1.
    fn base(&self) -> u64 {
        u64::from(self.etcd.is_some())
    }

    /// Starts the service on this stack's store, reading `queue` if given.
    fn service(&self, queue: Option<&str>, extra_env: &[(&str, String)]) -> Proc {
        let mut args: Vec<String> = vec![
            "--data-dir".into(),
            self.dir.path().join("data").display().to_string(),
        ];
        if let Some(e) = &self.etcd {
            args.extend(["--etcd-endpoint".into(), e.endpoint()]);
        }
        if let Some(q) = queue {
            args.extend(["--queue".into(), q.to_owned()]);
        }
        let mut env = self.moto.env();
        env.push(("CSS_SOURCE__WAIT_TIME", "1s".into()));
        env.push(("CSS_SOURCE__VISIBILITY_TIMEOUT", "3s".into()));
        env.push(("CSS_SOURCE__POLLERS", "4".into()));
        env.extend(extra_env.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::spawn(&args, &env)
    }

    async fn queue(&self, name: &str, attrs: &[(QueueAttributeName, String)]) -> String {
        let mut req = self.sqs.create_queue().queue_name(name);
        for (k, v) in attrs {
            req = req.attributes(k.clone(), v);
        }
        req.send().await.unwrap().queue_url().unwrap().to_owned()
    }

    async fn arn(&self, url: &str) -> String {
        self.sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .unwrap()
    }

    async fn send(&self, url: &str, bodies: &[String]) {
        for chunk in bodies.chunks(10) {
            send_batch(&self.sqs, url, chunk).await;
        }
    }

    /// Messages visible and in flight.
    async fn depth(&self, url: &str) -> (u64, u64) {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .unwrap();
        let attrs = out.attributes().cloned().unwrap_or_default();
        let n = |k: QueueAttributeName| attrs.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
        (
            n(QueueAttributeName::ApproximateNumberOfMessages),
            n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    async fn drained(&self, url: &str, within: Duration) -> bool {
        eventually(within, || async { self.depth(url).await == (0, 0) }).await
    }
}

/// Sends `bodies` in batches of 10 while keeping at most about `max_depth`
/// messages waiting: moto's receive takes time in proportion to the queue's
/// length, so a producer that keeps pace is both realistic and fast here.
/// Task events of `n` RUNNING tasks `t0000`, `t0001`, … of `cluster`.
fn running_tasks(cluster: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| task_event(cluster, &format!("t{i:04}"), 1, "RUNNING"))
        .collect()
}

fn send_paced(
    sqs: aws_sdk_sqs::Client,
    url: String,
    bodies: Vec<String>,
    max_depth: u64,
) -> tokio::task::JoinHandle<()> {
    actix_web::rt::spawn(async move {
        let depth = |sqs: aws_sdk_sqs::Client, url: String| async move {
            sqs.get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .send()
                .await
                .ok()
                .and_then(|o| {
                    o.attributes()?
                        .get(&QueueAttributeName::ApproximateNumberOfMessages)?
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0)
        };
        for chunk in bodies.chunks(10) {
            while depth(sqs.clone(), url.clone()).await > max_depth {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            send_batch(&sqs, &url, chunk).await;
        }
    })
}

/// Sends up to 10 messages in one call.
async fn send_batch(sqs: &aws_sdk_sqs::Client, url: &str, bodies: &[String]) {
    let entries: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(b)
                .build()
                .unwrap()
        })
        .collect();
    let out = sqs
        .send_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .unwrap();
    assert!(out.failed().is_empty(), "send failed: {:?}", out.failed());
}

/// Tiny deterministic shuffle (no RNG crate needed for tests).
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.swap(i, (seed >> 33) as usize % (i + 1));
    }
}

impl Stack {
    /// A new service on `queue` once `producer` has sent everything: it
    /// and its `n` tasks (asserted: none lost).
    async fn restarted(
        &self,
        queue: &str,
        producer: tokio::task::JoinHandle<()>,
        n: usize,
    ) -> (Proc, Vec<(String, u64, u64)>) {
        let p = self.service(Some(queue), &[]);
        p.wait_ready(Duration::from_secs(20)).await;
        producer.await.unwrap();
        let tasks = wait_for_tasks(&p, n, Duration::from_secs(120)).await;
        assert_eq!(tasks.len(), n, "none lost");
        (p, tasks)
    }
}

async fn wait_for_tasks(p: &Proc, n: usize, within: Duration) -> Vec<(String, u64, u64)> {
    let deadline = Instant::now() + within;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        if let Some((items, _)) = tasks_of(p.addr).await {
            last = items;
        }
        if last.len() >= n {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("only {} of {n} tasks arrived", last.len());
}

async fn events_reach_the_api_at_their_highest_version(backend: Backend) {
    let s = Stack::new(backend);
    let url = s.queue("events", &[]).await;
    let mut bodies: Vec<String> = (0..20)
        .flat_map(|t| (1..=4).map(move |v| task_event("ingest", &format!("t{t:02}"), v, "RUNNING")))
        .collect();
    let dups: Vec<String> = bodies.iter().step_by(4).cloned().collect();
    bodies.extend(dups);
    shuffle(&mut bodies, 7);
    s.send(&url, &bodies).await;

    let p = s.service(
        Some("events"),
        &[("CSS_SOURCE__VISIBILITY_TIMEOUT", "30s".into())],
    );
    p.wait_ready(Duration::from_secs(20)).await;
    let ok = eventually(Duration::from_secs(30), || async {
        tasks_of(p.addr)
            .await
            .is_some_and(|(items, _)| items.len() == 20 && items.iter().all(|t| t.1 == 4))
    })
    .await;
    assert!(
        ok,
        "tasks did not all reach version 4: {:?}",
        tasks_of(p.addr).await
    );
    assert!(
        s.drained(&url, Duration::from_secs(15)).await,
        "queue not drained: {:?}",
        s.depth(&url).await
    );
    // At least once: a message whose visibility timeout (3 s here) ran out
    // under load may be received again; it is then a stale no-op.
    let received = p.metric("css_events_total{outcome=\"received\"}").await;
    assert!(received >= 100.0, "received {received}");
    let applied = p.metric("css_events_total{outcome=\"applied\"}").await;
    let stale = p.metric("css_events_total{outcome=\"stale\"}").await;
    assert_eq!(applied + stale, received);
    assert!((20.0..=80.0).contains(&applied), "applied {applied}");
    let (_, rev) = tasks_of(p.addr).await.unwrap();
    assert_eq!(
        rev,
        s.base() + applied as u64,
        "one revision per applied event"
    );
}

fn poison() -> Vec<String> {
    vec![
        "this is not JSON".into(),
        r#"{"detail-type":"ECS Task State Change","source":"aws.ecs"}"#.into(),
        r#"{"detail-type":"ECS Task State Change","detail":{"lastStatus":"RUNNING","version":1}}"#.into(),
        r#"{"detail-type":"ECS Task State Change","detail":{"taskArn":"arn:aws:ecs:us-west-2:1:task/c/t","lastStatus":"RUNNING","version":"abc"}}"#.into(),
        format!("{{\"detail-type\":\"ECS Task State Change\",\"pad\":\"{}\"}}", "x".repeat(300 * 1024)),
    ]
}

#[actix_web::test]
async fn poison_messages_are_dead_lettered_and_never_block_good_ones() {
    let s = Stack::new(Backend::Embedded);
    let url = s.queue("events", &[]).await;
    let dlq = s.queue("events-dead", &[]).await;
    let mut bodies = vec![task_event("poison", "before", 1, "RUNNING")];
    bodies.extend(poison());
    bodies.push(task_event("poison", "after", 1, "RUNNING"));
    s.send(&url, &bodies).await;

    let p = s.service(
        Some("events"),
        &[
            ("CSS_SOURCE__DEAD_LETTER_QUEUE", "events-dead".into()),
            ("CSS_SOURCE__VISIBILITY_TIMEOUT", "30s".into()),
        ],
    );
    p.wait_ready(Duration::from_secs(20)).await;
    let tasks = wait_for_tasks(&p, 2, Duration::from_secs(20)).await;
    assert_eq!(tasks.len(), 2);
    assert!(
        s.drained(&url, Duration::from_secs(15)).await,
        "poison came back: {:?}",
        s.depth(&url).await
    );
    // All five dead-lettered, each with its reason and its message id. (A
    // send the SDK retried after a lost answer can leave one twice: the
    // dead-letter queue is at least once, as SQS is.)
    let mut ids = std::collections::HashSet::new();
    let mut reasons = Vec::new();
    for _ in 0..10 {
        let got = s
            .sqs
            .receive_message()
            .queue_url(&dlq)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        for m in got.messages() {
            let attr = |name: &str| {
                m.message_attributes()
                    .and_then(|a| a.get(name)?.string_value().map(str::to_owned))
            };
            ids.insert(attr("css-message-id").expect("the original message id"));
            reasons.push(attr("css-error").expect("the reason"));
        }
        if ids.len() >= 5 {
            break;
        }
    }
    assert_eq!(ids.len(), 5, "all five poison messages dead-lettered");
    assert!(
        reasons.iter().any(|r| r.contains("not JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("larger than the limit")),
        "{reasons:?}"
    );
    assert_eq!(p.metric("css_events_total{outcome=\"invalid\"}").await, 5.0);
    assert_eq!(p.metric("css_events_dead_lettered_total").await, 5.0);
}

#[actix_web::test]
async fn without_a_dead_letter_queue_poison_goes_to_the_redrive_policy_and_is_counted_once() {
    let s = Stack::new(Backend::Embedded);
    let dlq = s.queue("redrive-dead", &[]).await;
    let policy = format!(
        r#"{{"deadLetterTargetArn":"{}","maxReceiveCount":"2"}}"#,
        s.arn(&dlq).await
    );
    let url = s
        .queue(
            "redriven",
            &[
                (QueueAttributeName::RedrivePolicy, policy),
                (QueueAttributeName::VisibilityTimeout, "1".into()),
            ],
        )
        .await;
    let mut bodies = poison()[..3].to_vec();
    bodies.push(task_event("redrive", "good", 1, "RUNNING"));
    s.send(&url, &bodies).await;

    let p = s.service(
        Some("redriven"),
        &[("CSS_SOURCE__VISIBILITY_TIMEOUT", "1s".into())],
    );
    p.wait_ready(Duration::from_secs(20)).await;
    wait_for_tasks(&p, 1, Duration::from_secs(20)).await;
    let moved = eventually(Duration::from_secs(30), || async {
        s.depth(&dlq).await.0 == 3
    })
    .await;
    assert!(
        moved,
        "redrive did not move the poison: {:?} / {:?}",
        s.depth(&url).await,
        s.depth(&dlq).await
    );
    assert!(s.drained(&url, Duration::from_secs(10)).await);
    assert!(
        p.metric("css_events_total{outcome=\"received\"}").await >= 7.0,
        "poison was received again"
    );
    assert_eq!(
        p.metric("css_events_total{outcome=\"invalid\"}").await,
        3.0,
        "counted once each"
    );
}

async fn sigkill_mid_ingest_loses_nothing(backend: Backend) {
    const N: usize = 2000;
    let s = Stack::new(backend);
    let url = s.queue("bulk", &[]).await;
    let producer = send_paced(s.sqs.clone(), url.clone(), running_tasks("bulk", N), 100);

    let mut p = s.service(Some("bulk"), &[]);
    p.wait_ready(Duration::from_secs(20)).await;
    let partial = wait_for_tasks(&p, N / 4, Duration::from_secs(120))
        .await
        .len();
    p.kill();
    assert!(
        partial < N,
        "killed too late to prove anything ({partial} stored)"
    );

    let (p, tasks) = s.restarted("bulk", producer, N).await;
    assert!(tasks.iter().all(|t| t.1 == 1));
    assert!(
        s.drained(&url, Duration::from_secs(20)).await,
        "queue not drained: {:?}",
        s.depth(&url).await
    );
    // None twice: exactly one store revision per event, across the crash.
    let (_, rev) = tasks_of(p.addr).await.unwrap();
    assert_eq!(rev, s.base() + N as u64);
    let mut versions: Vec<u64> = tasks.iter().map(|t| t.2).collect();
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), N);
}

#[actix_web::test]
async fn sigterm_mid_ingest_stops_within_the_grace_period_and_loses_nothing() {
    const N: usize = 1000;
    let s = Stack::new(Backend::Embedded);
    let url = s.queue("graceful", &[]).await;
    let producer = send_paced(
        s.sqs.clone(),
        url.clone(),
        running_tasks("graceful", N),
        100,
    );

    let mut p = s.service(Some("graceful"), &[]);
    p.wait_ready(Duration::from_secs(20)).await;
    let mut stream = StreamClient::open(p.addr, "/v1/stream/tasks", "").await;
    let partial = wait_for_tasks(&p, N / 4, Duration::from_secs(120))
        .await
        .len();
    let asked = Instant::now();
    p.terminate();
    let status = p
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("exits after SIGTERM");
    let took = asked.elapsed();
    println!("SIGTERM after {partial} events: exit {status} in {took:?}");
    assert!(status.success(), "a graceful stop exits 0: {status}");
    assert!(
        took < Duration::from_secs(10),
        "within the grace period: {took:?}"
    );
    assert!(partial < N, "stopped too late to prove anything");
    // Its stream was ended cleanly, not cut.
    while stream.next_json(Duration::from_secs(5)).await.is_some() {}
    assert!(
        stream.terminated,
        "the stream ends with the chunked terminator"
    );

    let (p, _) = s.restarted("graceful", producer, N).await;
    // Exactly once: one store revision per event, across the stop.
    let (_, rev) = tasks_of(p.addr).await.unwrap();
    assert_eq!(rev, N as u64);
    assert!(s.drained(&url, Duration::from_secs(20)).await);
}

impl Stack {
    /// A service on queue `name` with the source's default polling (5 s
    /// long polls, 60 s visibility, 2 pollers), over the shorter ones
    /// [`Stack::service`] sets for speed.
    fn polling(&self, name: &str) -> Proc {
        let defaults = [
            ("CSS_SOURCE__WAIT_TIME", "5s".to_owned()),
            ("CSS_SOURCE__VISIBILITY_TIMEOUT", "60s".into()),
            ("CSS_SOURCE__POLLERS", "2".into()),
        ];
        self.service(Some(name), &defaults)
    }
}

/// Rolling restarts while the pollers sit in their long polls strand
/// nothing: a stopping process lets its receives return (and applies what
/// they bring) instead of leaving SQS a poll whose client has gone, which
/// would hide an event sent meanwhile for the visibility timeout (60 s).
/// Three restarts, an event sent across each, each applied within 10 s.
#[actix_web::test]
async fn restarts_during_long_polls_strand_no_event() {
    let s = Stack::new(Backend::Etcd);
    let url = s.queue("rolling", &[]).await;
    let mut old = s.polling("rolling");
    old.wait_ready(20 * SECOND).await;
    for restart in 1..=3 {
        // A poll has come back empty: the pollers are in their next long polls.
        let polled = metric_reaches(old.addr, "css_sqs_receive_seconds_count", 2.0, 15 * SECOND);
        assert!(polled.await, "no receive came back");
        let asked = Instant::now();
        old.terminate();
        let new = s.polling("rolling");
        let event = task_event("rolling", &format!("t{restart}"), 1, "RUNNING");
        let sent = s.sqs.send_message().queue_url(&url).message_body(event);
        sent.send().await.expect("sent");
        let stopped = old.exited_cleanly(asked, 15 * SECOND).await;
        assert!(
            stopped < 10 * SECOND,
            "within the grace period: {stopped:?}"
        );
        new.wait_ready(20 * SECOND).await;
        let tasks = wait_for_tasks(&new, restart, 10 * SECOND).await;
        let took = asked.elapsed();
        println!("restart {restart}: stopped in {stopped:?}; the event sent with the signal was applied {took:?} after it");
        assert_eq!(
            tasks.len(),
            restart,
            "an event sent across restart {restart} was not applied"
        );
        assert!(
            took < 10 * SECOND,
            "applied only after {took:?}: it was stranded"
        );
        old = new;
    }
    assert!(
        s.drained(&url, 20 * SECOND).await,
        "every event was acknowledged"
    );
}

/// A batch that is still unwritten when a stop's grace period ends (etcd
/// froze) is handed back at once (`ChangeMessageVisibility` 0), not left
/// hidden for the visibility timeout: the next process applies it at once.
#[actix_web::test]
async fn a_batch_unwritten_when_the_grace_ends_is_handed_back() {
    let s = Stack::new(Backend::Etcd);
    let url = s.queue("handback", &[]).await;
    let mut old = s.polling("handback");
    old.wait_ready(Duration::from_secs(20)).await;
    let etcd = s.etcd.as_ref().unwrap();
    etcd.signal("STOP");
    let event = task_event("handback", "t1", 1, "RUNNING");
    let sent = s.sqs.send_message().queue_url(&url).message_body(event);
    sent.send().await.expect("sent");
    let received = "css_events_total{outcome=\"received\"}";
    let got = metric_reaches(old.addr, received, 1.0, 15 * SECOND).await;
    assert!(got, "the old process did not receive the event");

    let asked = Instant::now();
    old.terminate();
    let stopped = old.exited_cleanly(asked, 20 * SECOND).await;
    assert!(stopped < 12 * SECOND, "about the grace period: {stopped:?}");
    assert_eq!(
        s.depth(&url).await,
        (1, 0),
        "handed back: visible, not in flight"
    );

    etcd.signal("CONT");
    let new = s.polling("handback");
    new.wait_ready(20 * SECOND).await;
    let tasks = wait_for_tasks(&new, 1, 40 * SECOND).await;
    assert_eq!(tasks.len(), 1, "the event is stored");
    // The new process received it and acknowledged it (applied, or stale if
    // the frozen write landed when etcd thawed): long before its 60 s.
    assert!(s.drained(&url, 20 * SECOND).await, "not acknowledged");
    let took = asked.elapsed();
    println!(
        "old process stopped in {stopped:?}; the event was acknowledged {took:?} after the signal"
    );
}

/// The source's state as `/readyz` shows it.
async fn source_of(p: &Proc) -> String {
    let ready = p.get("/readyz").await.json();
    ready["source"].as_str().unwrap_or_default().to_owned()
}

/// What a service did while SQS was faulty (through a [`FaultProxy`]).
struct FaultRun {
    /// The source as `/readyz` showed it at the end of the fault.
    source: String,
    /// Failed receives during the fault, and how long it lasted (s).
    failed: f64,
    outage: f64,
}

/// A service reading queue `name` through a fault proxy in front of moto,
/// 10 events applied, then `fault` for `hold` while 20 more are sent to
/// SQS itself. Asserts what holds for every fault: the API keeps serving,
/// and once SQS is back every event is applied once, within one backoff
/// step (10 s, plus a quarter of jitter), and the source shows up again.
async fn under_sqs_fault(name: &str, fault: Fault, hold: Duration) -> FaultRun {
    let s = Stack::new(Backend::Embedded);
    let url = s.queue(name, &[]).await;
    let proxy = FaultProxy::start(s.moto.addr()).await;
    let p = s.service(Some(name), &[("AWS_ENDPOINT_URL", proxy.url())]);
    p.wait_ready(20 * SECOND).await;
    let tasks = |from: usize, to: usize| -> Vec<String> {
        let id = |i: usize| format!("t{i:04}");
        (from..to)
            .map(|i| task_event(name, &id(i), 1, "RUNNING"))
            .collect()
    };
    send_paced(s.sqs.clone(), url.clone(), tasks(0, 10), 100)
        .await
        .unwrap();
    wait_for_tasks(&p, 10, 20 * SECOND).await;
    assert_eq!(source_of(&p).await, "up");

    proxy.set(fault);
    let cut = Instant::now();
    let receive_errors = "css_sqs_errors_total{op=\"receive\"}";
    let errors_at_cut = p.metric(receive_errors).await;
    send_paced(s.sqs.clone(), url.clone(), tasks(10, 30), 100)
        .await
        .unwrap();
    assert!(
        count(p.addr, "/v1/tasks").await >= 10,
        "the API serves what it has"
    );
    assert_eq!(
        p.get("/readyz").await.status,
        200,
        "readiness is about serving"
    );
    if fault != Fault::Refuse {
        // Wait until it has shown the fault, whatever it shows.
        let _ = metric_reaches(p.addr, receive_errors, errors_at_cut + 1.0, hold).await;
    }
    // The fault lasts `hold`.
    tokio::time::sleep(hold.saturating_sub(cut.elapsed())).await;
    let run = FaultRun {
        source: source_of(&p).await,
        failed: p.metric(receive_errors).await - errors_at_cut,
        outage: cut.elapsed().as_secs_f64(),
    };
    proxy.set(Fault::None);
    let back = Instant::now();

    let applied = wait_for_tasks(&p, 30, 30 * SECOND).await;
    let took = back.elapsed();
    println!(
        "{fault:?} for {:.1} s: source {}, {} failed receives ({:.2}/s, 4 pollers); \
         every event applied {took:?} after SQS came back",
        run.outage,
        run.source,
        run.failed,
        run.failed / run.outage
    );
    assert!(took < 15 * SECOND, "applied {took:?} after SQS came back");
    assert_eq!(applied.len(), 30);
    let (_, revision) = tasks_of(p.addr).await.unwrap();
    assert_eq!(revision, 30, "each event applied once");
    let up = eventually(15 * SECOND, || async { source_of(&p).await == "up" }).await;
    assert!(up, "the source shows up again");
    assert_eq!(p.metric("css_source_up ").await, 1.0);
    assert!(
        s.drained(&url, 20 * SECOND).await,
        "every event acknowledged"
    );
    run
}

impl FaultRun {
    /// Asserts what `/readyz` showed and that the failed receives were
    /// within `min..=max` (bounded by the backoff: no busy loop).
    fn showed(&self, source: &str, min: f64, max: f64) {
        assert_eq!(self.source, source);
        let (failed, outage) = (self.failed, self.outage);
        assert!(
            (min..=max).contains(&failed),
            "{failed} failed receives in {outage:.1} s"
        );
    }
}

/// SQS refusing connections for 30 s: the source shows down (`/readyz`,
/// `css_source_up` 0) and the pollers back off instead of spinning: each
/// doubles its wait from 100 ms up to 10 s, about 10 calls in 30 s.
#[actix_web::test]
async fn sqs_refusing_connections_delays_events_and_loses_none() {
    let run = under_sqs_fault("refused", Fault::Refuse, 30 * SECOND).await;
    run.showed("down", 4.0, 4.0 * 12.0);
}

/// Connections reset in the middle of SQS's responses: receives fail, the
/// pollers back off, and what a cut receive took comes back after the
/// visibility timeout and is applied once.
#[actix_web::test]
async fn sqs_connections_reset_mid_response_lose_nothing() {
    let run = under_sqs_fault("reset", Fault::ResetMidResponse, 20 * SECOND).await;
    run.showed("down", 1.0, 4.0 * 10.0);
}

/// 5 s of latency on every SQS call: slow, not failing: the source stays
/// up, nothing fails, and the events still arrive.
#[actix_web::test]
async fn sqs_answering_after_5_s_delays_events_and_loses_none() {
    let run = under_sqs_fault("slow", Fault::Delay(5 * SECOND), 20 * SECOND).await;
    run.showed("up", 0.0, 0.0);
}

/// SQS throttling every call (400 ThrottlingException) and then answering
/// 503 (ServiceUnavailable): the SDK's own retries and the pollers' backoff
/// keep the calls per second bounded, and nothing is lost.
#[actix_web::test]
async fn sqs_throttling_and_503s_are_backed_off_and_lose_nothing() {
    for (queue, status, code) in [
        ("throttled", 400, "ThrottlingException"),
        ("unavailable", 503, "ServiceUnavailable"),
    ] {
        let run = under_sqs_fault(queue, Fault::Answer(status, code), 15 * SECOND).await;
        run.showed("down", 1.0, 4.0 * 9.0);
    }
}

#[actix_web::test]
async fn an_etcd_outage_during_ingest_pauses_it_and_loses_nothing() {
    let mut s = Stack::new(Backend::Etcd);
    let url = s.queue("outage", &[]).await;
    let first: Vec<String> = (0..300)
        .map(|i| task_event("outage", &format!("a{i:03}"), 1, "RUNNING"))
        .collect();
    let second: Vec<String> = (0..200)
        .map(|i| task_event("outage", &format!("b{i:03}"), 1, "RUNNING"))
        .collect();
    let producer = send_paced(s.sqs.clone(), url.clone(), first, 100);

    let p = s.service(Some("outage"), &[]);
    p.wait_ready(Duration::from_secs(20)).await;
    wait_for_tasks(&p, 50, Duration::from_secs(60)).await;
    producer.await.unwrap();

    let down = Instant::now();
    s.etcd.as_mut().unwrap().stop();
    let not_ready = eventually(Duration::from_secs(5), || async {
        p.status("/readyz").await == Some(503)
    })
    .await;
    assert!(not_ready, "/readyz must say 503 while etcd is down");
    s.send(&url, &second).await;
    while down.elapsed() < Duration::from_secs(10) {
        assert_eq!(
            p.status("/readyz").await,
            Some(503),
            "ready again while etcd is down"
        );
        assert_eq!(
            p.status("/healthz").await,
            Some(200),
            "the process itself stays healthy"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let body = p.get("/readyz").await.json();
    assert!(
        body["waitingFor"].as_array().is_some_and(|w| !w.is_empty()),
        "{body}"
    );
    s.etcd.as_mut().unwrap().resume();

    p.wait_ready(Duration::from_secs(30)).await;
    let tasks = wait_for_tasks(&p, 500, Duration::from_secs(90)).await;
    assert_eq!(tasks.len(), 500, "every event stored once etcd is back");
    assert!(s.drained(&url, Duration::from_secs(20)).await);
    let (_, rev) = tasks_of(p.addr).await.unwrap();
    assert_eq!(rev, s.base() + 500, "each event stored exactly once");
}

#[actix_web::test]
async fn two_replicas_on_one_etcd_serve_the_same_state() {
    let s = Stack::new(Backend::Etcd);
    let url = s.queue("shared", &[]).await;
    let bodies: Vec<String> = (0..100)
        .map(|i| task_event("shared", &format!("t{i:03}"), 1, "RUNNING"))
        .collect();
    s.send(&url, &bodies).await;
    let long = [("CSS_SOURCE__VISIBILITY_TIMEOUT", "30s".into())];
    let a = s.service(Some("shared"), &long);
    let b = s.service(Some("shared"), &long);
    a.wait_ready(Duration::from_secs(20)).await;
    b.wait_ready(Duration::from_secs(20)).await;
    wait_for_tasks(&a, 100, Duration::from_secs(60)).await;
    wait_for_tasks(&b, 100, Duration::from_secs(60)).await;
    let same = eventually(Duration::from_secs(5), || async {
        let (x, y) = (
            a.get("/v1/tasks").await.json(),
            b.get("/v1/tasks").await.json(),
        );
        x == y
    })
    .await;
    assert!(same, "the replicas serve different state");
    // A change ingested by either shows through the other within a second.
    for i in 0..5 {
        let arn = format!("arn:aws:ecs:us-west-2:111122223333:task/shared/t{i:03}");
        s.send(
            &url,
            &[task_event("shared", &format!("t{i:03}"), 2, "STOPPED")],
        )
        .await;
        let version_at = |p: &Proc| {
            let (addr, arn) = (p.addr, arn.clone());
            async move {
                let r = get(addr, &format!("/v1/tasks/shared/{arn}")).await;
                r.json()["entity"]["version"].as_u64()
            }
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let other = loop {
            assert!(Instant::now() < deadline, "update {i} never arrived");
            if version_at(&a).await == Some(2) {
                break &b;
            }
            if version_at(&b).await == Some(2) {
                break &a;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let t0 = Instant::now();
        let followed = eventually(Duration::from_secs(1), || async {
            version_at(other).await == Some(2)
        })
        .await;
        assert!(
            followed,
            "update {i} not visible on the other replica within a second ({:?})",
            t0.elapsed()
        );
    }
}

#[actix_web::test]
async fn a_restart_on_a_populated_etcd_serves_at_once() {
    let s = Stack::new(Backend::Etcd);
    let file = s.dir.path().join("events.ndjson");
    let lines: Vec<String> = (0..1000)
        .map(|i| task_event("warm", &format!("t{i:04}"), 1, "RUNNING"))
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let endpoint = s.etcd.as_ref().unwrap().endpoint();
    let mut first = Proc::spawn(
        &[
            "--etcd-endpoint",
            &endpoint,
            "--replay",
            file.to_str().unwrap(),
        ],
        &[],
    );
    first.wait_ready(Duration::from_secs(20)).await;
    wait_for_tasks(&first, 1000, Duration::from_secs(60)).await;
    let before = first.get("/v1/tasks").await.json();
    first.kill();

    let started = Instant::now();
    let second = Proc::spawn(&["--etcd-endpoint", &endpoint], &[]);
    second.wait_ready(Duration::from_secs(10)).await;
    let ready_in = started.elapsed();
    let after = second.get("/v1/tasks").await.json();
    assert_eq!(
        after, before,
        "the first answer after ready is the whole state"
    );
    assert!(
        ready_in < Duration::from_secs(5),
        "ready after {ready_in:?}"
    );
    assert_eq!(after["items"].as_array().unwrap().len(), 1000);
}

/// The embedded store's disk fills up (an 8 MiB tmpfs, filled by a file):
/// writes fail with a clear log line and `/readyz` 503 naming the store;
/// no message is acknowledged for a write that did not land; the API keeps
/// serving. A `kill -9` while the disk is full, and a restart on it: the
/// store opens and serves what it held. When space returns, every event is
/// applied once.
#[actix_web::test]
async fn a_full_disk_stops_writes_loses_nothing_and_recovers() {
    const N: usize = 300;
    let s = Stack::new(Backend::Embedded);
    let disk = SmallDisk::mount(&s.dir.path().join("data"), 8 << 20);
    let log = s.dir.path().join("css.log");
    let env = [("CSS_LOG_FILE", log.display().to_string())];
    let url = s.queue("full", &[]).await;
    let mut p = s.service(Some("full"), &env);
    p.wait_ready(20 * SECOND).await;
    let events = running_tasks("full", N);
    s.send(&url, &events[..20]).await;
    wait_for_tasks(&p, 20, 20 * SECOND).await;

    let filler = disk.fill();
    let full = Instant::now();
    s.send(&url, &events[20..]).await;
    let refused = eventually(30 * SECOND, || async {
        let r = p.get("/readyz").await;
        r.status == 503 && r.json()["waitingFor"] == serde_json::json!(["store"])
    })
    .await;
    assert!(
        refused,
        "/readyz names the store: {}",
        p.get("/readyz").await.json()
    );
    let shown = full.elapsed();
    // Deleted messages first, stored events after: a message is deleted
    // only once its event is stored, so the first can never exceed the second.
    // The queue's counts are approximate (moto's can miss a message that a
    // receive is moving to in flight): the least of three reads. Nothing is
    // deleted while the disk is full, so a real excess shows in every read.
    let mut acknowledged = u64::MAX;
    for _ in 0..3 {
        let (waiting, in_flight) = s.depth(&url).await;
        acknowledged = acknowledged.min(N as u64 - waiting - in_flight);
    }
    let (items, stored) = tasks_of(p.addr).await.expect("reads are served");
    assert_eq!(items.len() as u64, stored, "one task per stored event");
    assert!(
        stored < N as u64,
        "the disk filled before every event was stored"
    );
    assert!(
        acknowledged <= stored,
        "{acknowledged} messages deleted, {stored} events stored"
    );
    assert!(p.metric("css_store_errors_total").await >= 1.0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_has_all(
        "the log",
        &text,
        &["store write failed", "No space left on device"],
    );

    // kill -9 on the full disk, and a restart on it.
    p.kill();
    let p = s.service(Some("full"), &env);
    let serving = eventually(20 * SECOND, || async {
        p.try_get("/healthz").await.is_some()
    });
    assert!(serving.await, "it starts on the full disk");
    let reopened = eventually(20 * SECOND, || async {
        tasks_of(p.addr).await.is_some_and(|(_, r)| r >= stored)
    })
    .await;
    assert!(
        reopened,
        "the store opens on the full disk and holds every stored event"
    );

    disk.free();
    let back = Instant::now();
    let tasks = wait_for_tasks(&p, N, 60 * SECOND).await;
    let took = back.elapsed();
    let (_, revision) = tasks_of(p.addr).await.unwrap();
    assert_eq!(revision, N as u64, "each event applied once");
    assert!(tasks.iter().all(|t| t.1 == 1));
    assert!(
        s.drained(&url, 20 * SECOND).await,
        "every event acknowledged"
    );
    let ready = eventually(10 * SECOND, || async {
        p.get("/readyz").await.status == 200
    })
    .await;
    assert!(ready, "ready again once the disk takes writes");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("panicked"), "no panic: {text}");
    println!(
        "disk full ({filler} bytes of filler): /readyz named the store after {shown:?}, \
         {stored} of {N} events stored, {acknowledged} acknowledged, none lost across kill -9; \
         every event applied once {took:?} after space returned"
    );
}
