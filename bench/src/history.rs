//! Part 9, history (history.md): 100,000 tasks with one million revisions of
//! history spread over a simulated day (in quick mode 2,000 tasks, 10,000
//! revisions). The store is built through the store's own API with the
//! commit times of that day (the service stamps commits with its clock, and
//! a benchmark cannot wait a day), then the real service serves it:
//! disk bytes per revision, RSS, one task's history, a cluster and the
//! whole list `at=` 12 hours back. Then ingest with 7 days of history kept
//! against 1 minute kept, and etcd's bytes per revision.
//! Targets: RSS ≤ 400 MiB; one task's history p99 ≤ 5 ms; a cluster of
//! 1,000 tasks `at=` p50 ≤ 200 ms; all tasks `at=` ≤ 3 s; ingest within
//! 10 % of without.

use crate::gen::Shape;
use crate::http::Conn;
use crate::procs::{Etcd, Service};
use crate::{mib, ms, pct, service, Options, Report};
use actors::decoder::decode::{decode, Decoded};
use actors::store::{Embedded, Op, Store};
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Plan {
    pub shape: Shape,
    /// Versions of each task over the day.
    pub versions: u64,
    /// One task's history, asked this many times.
    pub histories: usize,
    /// Lists `at=` of one cluster, and of everything.
    pub clusters_at: usize,
    pub all_at: usize,
    /// Events of each ingest run, and of the etcd run.
    pub ingest: usize,
    pub etcd: usize,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            shape: Shape {
                clusters: 100,
                instances: 5_000,
                tasks: 100_000,
            },
            versions: 10,
            histories: 1000,
            clusters_at: 20,
            all_at: 3,
            ingest: 200_000,
            etcd: 200_000,
        }
    }

    pub fn quick() -> Plan {
        Plan {
            shape: Shape {
                clusters: 2,
                instances: 20,
                tasks: 2_000,
            },
            versions: 5,
            histories: 100,
            clusters_at: 5,
            all_at: 1,
            ingest: 4_000,
            etcd: 4_000,
        }
    }

    fn revisions(&self) -> u64 {
        self.shape.tasks as u64 * self.versions
    }
}

const DAY_MS: i64 = 86_400_000;
const STATUSES: [&str; 3] = ["PENDING", "RUNNING", "RUNNING"];

pub async fn history(o: &Options, plan: &Plan, work: &Path, report: &mut Report) {
    println!(
        "\n9. history ({} tasks, {} revisions over a simulated day)",
        plan.shape.tasks,
        plan.revisions()
    );
    let dir = work.join("history-data");
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();
    let now = actors::time::now_ms();
    if let Err(e) = build(plan, &dir, now - DAY_MS).await {
        report.check(false, || format!("history: cannot build the store: {e}"));
        return;
    }
    let bytes = std::fs::metadata(dir.join("css.redb")).map_or(0, |m| m.len());
    println!(
        "  (built in {:.1} s: {} on disk)",
        started.elapsed().as_secs_f64(),
        mib(bytes)
    );
    report.add(
        "disk per revision, embedded (history and state)",
        format!("{} B", bytes / plan.revisions().max(1)),
        "",
        None,
    );

    let args = [format!("--data-dir={}", dir.display())];
    let started = Instant::now();
    let mut svc = Service::spawn(service(o), &args, &work.join("history.log"));
    svc.wait_ready(started, Duration::from_secs(600)).await;
    let (rss, _) = svc.memory();
    report.add(
        format!("RSS with a day of history ({} tasks)", plan.shape.tasks),
        mib(rss),
        "<= 400 MiB",
        Some(rss <= 400 * 1024 * 1024),
    );
    served(svc.addr, plan, now - DAY_MS / 2, report).await;
    let (rss, peak) = svc.memory();
    report.add(
        "RSS after the history reads",
        mib(rss),
        "<= 400 MiB",
        Some(rss <= 400 * 1024 * 1024),
    );
    report.add("RSS peak during the history reads", mib(peak), "", None);
    svc.stop();

    ingest_with_and_without(o, plan, work, report).await;
    etcd_bytes(o, plan, work, report).await;
}

/// Commits every task `versions` times, in rounds over all tasks, each
/// commit stamped with its moment of the day that starts at `from_ms`.
async fn build(plan: &Plan, dir: &Path, from_ms: i64) -> Result<(), String> {
    let store = Embedded::open(dir).map_err(|e| e.to_string())?;
    let total = plan.revisions() as i64;
    let mut written = 0i64;
    const BATCH: usize = 1000;
    for v in 1..=plan.versions {
        let status = STATUSES[(v as usize - 1).min(STATUSES.len() - 1)];
        let mut t = 0;
        while t < plan.shape.tasks {
            let end = (t + BATCH).min(plan.shape.tasks);
            let mut ops = Vec::with_capacity(end - t);
            for i in t..end {
                let body = plan.shape.task_event(i, v, status, "bench-history");
                match decode(&body) {
                    Ok(Decoded::Entity(e)) => ops.push(Op::Put(e)),
                    other => return Err(format!("task {i}: {other:?}")),
                }
            }
            let at = from_ms + written * DAY_MS / total;
            written += ops.len() as i64;
            store.commit(ops, at).await.map_err(|e| e.to_string())?;
            t = end;
        }
    }
    Ok(())
}

/// One task's history, a cluster and everything `at` (12 hours back).
async fn served(addr: std::net::SocketAddr, plan: &Plan, at_ms: i64, report: &mut Report) {
    let Ok(mut c) = Conn::connect(addr).await else {
        report.check(false, || "history: cannot connect".into());
        return;
    };
    let mut rng = fastrand::Rng::with_seed(9);
    let mut took = Vec::with_capacity(plan.histories);
    let mut wrong = 0;
    for _ in 0..plan.histories {
        let t = rng.usize(..plan.shape.tasks);
        let path = format!("{}/history", plan.shape.describe_path(t));
        let start = Instant::now();
        match c.get(&path, true).await {
            Ok(r) if r.status == 200 => {
                took.push(start.elapsed());
                wrong +=
                    usize::from(crate::count(&r.body, "\"observedAt\"") != plan.versions as usize);
            }
            _ => wrong += 1,
        }
    }
    report.check(wrong == 0, || {
        format!("history: {wrong} task histories wrong or failed")
    });
    took.sort_unstable();
    report.add(
        format!("one task's history ({} versions), p99", plan.versions),
        ms(pct(&took, 0.99)),
        "<= 5 ms",
        Some(pct(&took, 0.99) <= Duration::from_millis(5)),
    );

    let at = actors::time::format_ms(at_ms);
    let per_cluster = plan.shape.tasks / plan.shape.clusters;
    let mut took = Vec::new();
    for i in 0..plan.clusters_at {
        let cluster = plan.shape.cluster(i);
        let path = format!(
            "/v1/tasks?cluster=arn:aws:ecs:us-west-2:111122223333:cluster/{cluster}&at={at}"
        );
        let start = Instant::now();
        match c.get(&path, true).await {
            Ok(r) if r.status == 200 => {
                took.push(start.elapsed());
                let n = crate::count(&r.body, "{\"entity\":");
                report.check(n == per_cluster, || {
                    format!("history: {path}: {n} tasks, not {per_cluster}")
                });
            }
            r => report.check(false, || {
                format!("history: {path}: {:?}", r.map(|r| r.status))
            }),
        }
    }
    took.sort_unstable();
    report.add(
        format!("a cluster of {per_cluster} tasks at= 12 h back, p50"),
        ms(pct(&took, 0.5)),
        "<= 200 ms",
        Some(pct(&took, 0.5) <= Duration::from_millis(200)),
    );

    let mut took = Vec::new();
    for _ in 0..plan.all_at {
        let path = format!("/v1/tasks?at={at}");
        let start = Instant::now();
        match c.get(&path, true).await {
            Ok(r) if r.status == 200 => {
                took.push(start.elapsed());
                let n = crate::count(&r.body, "{\"entity\":");
                report.check(n == plan.shape.tasks, || {
                    format!("history: all at=: {n} tasks")
                });
            }
            r => report.check(false, || {
                format!("history: {path}: {:?}", r.map(|r| r.status))
            }),
        }
    }
    took.sort_unstable();
    let worst = took.last().copied().unwrap_or_default();
    report.add(
        format!("all {} tasks at= 12 h back, slowest", plan.shape.tasks),
        ms(worst),
        "<= 3 s",
        Some(worst <= Duration::from_secs(3)),
    );
}

/// The same ingest with 7 days of history kept and with 1 minute kept.
async fn ingest_with_and_without(o: &Options, plan: &Plan, work: &Path, report: &mut Report) {
    let s = crate::Sizes::for_history(plan.shape, plan.ingest);
    let events = work.join("history-events.ndjson");
    crate::write_events(&s, &events);
    let mut rates = Vec::new();
    for keep in ["7d", "1m"] {
        let data = work.join(format!("history-ingest-{keep}"));
        let _ = std::fs::remove_dir_all(&data);
        let config = work.join(format!("history-{keep}.toml"));
        let written = std::fs::write(
            &config,
            format!("[store]\nhistory_retention = \"{keep}\"\n"),
        );
        report.check(written.is_ok(), || "history: cannot write a config".into());
        let args = [
            format!("--config={}", config.display()),
            format!("--data-dir={}", data.display()),
        ];
        match crate::ingest(o, &s, &args, &events, work, report).await {
            Some(rate) => rates.push(rate),
            None => return,
        }
    }
    let ratio = rates[0] / rates[1];
    report.add(
        format!("ingest, 7 d of history kept ({} events)", plan.ingest),
        format!("{:.0} events/s", rates[0]),
        "",
        None,
    );
    report.add(
        "  … against 1 min kept",
        format!("{:.0} events/s ({:.0} %)", rates[1], ratio * 100.0),
        ">= 90 %",
        Some(ratio >= 0.9),
    );
}

/// etcd's database growth per revision the service writes.
async fn etcd_bytes(o: &Options, plan: &Plan, work: &Path, report: &mut Report) {
    let s = crate::Sizes::for_history(plan.shape, plan.etcd);
    let events = work.join("history-etcd-events.ndjson");
    crate::write_events(&s, &events);
    let dir = work.join("history-etcd");
    let _ = std::fs::remove_dir_all(&dir);
    let etcd = Etcd::start(&o.etcd, &dir);
    let Ok(mut client) = etcd_client::Client::connect([etcd.endpoint.as_str()], None).await else {
        report.check(false, || "history: cannot connect to etcd".into());
        return;
    };
    let size = |s: etcd_client::StatusResponse| s.db_size();
    let Ok(before) = client.status().await.map(size) else {
        report.check(false, || "history: etcd status".into());
        return;
    };
    let store = [format!("--etcd-endpoint={}", etcd.endpoint)];
    if crate::ingest(o, &s, &store, &events, work, report)
        .await
        .is_none()
    {
        return;
    }
    let after = client.status().await.map(size).unwrap_or(before);
    report.add(
        format!("disk per revision, etcd ({} revisions)", plan.etcd),
        format!("{} B", (after - before).max(0) / plan.etcd as i64),
        "",
        None,
    );
}
