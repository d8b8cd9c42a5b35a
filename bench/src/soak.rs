//! Part 7, the soak: the service under a steady load for a long time (30
//! minutes; 40 s in quick mode), to show what grows. The simulator writes
//! 200 changes/s and plays ECS for a sweep of every cluster every minute;
//! 50 task streams stay open; a few clients list a cluster's tasks and
//! describe one of them, over and over. Every sampling interval it prints
//! the service's RSS and open file descriptors, and the latencies of that
//! interval; at the end, the growth of both between the first third of the
//! run and its end (targets: RSS within 5 %, file descriptors flat), the
//! stream and list p99 over the whole run, and every error.

use crate::http::Conn;
use crate::procs::Service;
use crate::{mib, ms, service, Options, Report};
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the soak runs and how it samples.
pub struct Plan {
    pub run: Duration,
    pub sample: Duration,
    /// Growth is measured from the sample at this time to the last one.
    pub settled: Duration,
    pub sweep: Duration,
    /// How long STOPPED tasks and history are kept: short, so that the
    /// state stops growing early in the run and what grows after is a leak.
    pub retention: Duration,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            run: Duration::from_secs(30 * 60),
            sample: Duration::from_secs(60),
            settled: Duration::from_secs(10 * 60),
            sweep: Duration::from_secs(60),
            retention: Duration::from_secs(120),
        }
    }

    pub fn quick() -> Plan {
        Plan {
            run: Duration::from_secs(40),
            sample: Duration::from_secs(5),
            settled: Duration::from_secs(15),
            sweep: Duration::from_secs(10),
            retention: Duration::from_secs(10),
        }
    }
}

const RATE: usize = 200;
const STREAMS: usize = 50;
/// Clients listing and describing, each waiting this long between requests.
const CLIENTS: usize = 4;
const PAUSE: Duration = Duration::from_millis(50);

/// Latencies in microseconds, 1 µs to 10 min, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// What the load saw: latencies of the current interval and of the whole
/// run, and the errors.
#[derive(Default)]
struct Seen {
    interval: Option<(Histogram<u64>, Histogram<u64>)>,
    streams: Option<Histogram<u64>>,
    lists: Option<Histogram<u64>>,
    errors: Vec<String>,
}

type Shared = Arc<Mutex<Seen>>;

fn record(seen: &Shared, stream: bool, d: Duration) {
    let us = (d.as_micros() as u64).clamp(1, 600_000_000);
    let Ok(mut s) = seen.lock() else { return };
    let (i_stream, i_list) = s.interval.get_or_insert_with(|| (histogram(), histogram()));
    let _ = if stream { i_stream } else { i_list }.record(us);
    let all = if stream { &mut s.streams } else { &mut s.lists };
    let _ = all.get_or_insert_with(histogram).record(us);
}

fn error(seen: &Shared, e: String) {
    if let Ok(mut s) = seen.lock() {
        // Bounded: the first hundred are enough to tell what went wrong.
        if s.errors.len() < 100 {
            s.errors.push(e);
        }
    }
}

fn p99(h: Option<&Histogram<u64>>) -> String {
    h.map_or("-".into(), |h| {
        ms(Duration::from_micros(h.value_at_quantile(0.99)))
    })
}

/// The RSS and the open file descriptors of the service.
fn resources(svc: &Service) -> (u64, usize) {
    let fds = std::fs::read_dir(format!("/proc/{}/fd", svc.pid())).map_or(0, |d| d.count());
    (svc.memory().0, fds)
}

/// The disk space the store's file takes (its allocated blocks).
fn store_bytes(data: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(data.join("css.redb")).map_or(0, |m| m.blocks() * 512)
}

fn config(plan: &Plan) -> String {
    format!(
        "[simulate]\nclusters = 3\ninstances_per_cluster = 10\ntasks_per_instance = 20\n\
         events_per_second = {RATE}\nduplicate_rate = 0.0\nreorder_rate = 0.0\n\
         [reconcile]\ninterval = \"{}s\"\njitter = \"0%\"\nmax_requests_per_second = 50\n\
         [store]\nstopped_task_retention = \"{keep}s\"\nhistory_retention = \"{keep}s\"\n",
        plan.sweep.as_secs(),
        keep = plan.retention.as_secs()
    )
}

pub async fn soak(o: &Options, plan: &Plan, work: &Path, report: &mut Report) {
    println!(
        "\n7. soak: {RATE} changes/s, {STREAMS} streams, {CLIENTS} list/describe clients, \
         sweeps every {:?}, for {:?}",
        plan.sweep, plan.run
    );
    let file = work.join("soak.toml");
    std::fs::write(&file, config(plan)).expect("soak config");
    let data = work.join("soak-data");
    let _ = std::fs::remove_dir_all(&data);
    let args = [
        "--simulate".to_owned(),
        format!("--config={}", file.display()),
        format!("--data-dir={}", data.display()),
    ];
    let log = work.join("soak.log");
    let started = Instant::now();
    let mut svc = Service::spawn(service(o), &args, &log);
    svc.wait_ready(started, Duration::from_secs(60)).await;

    let seen: Shared = Arc::default();
    let clusters = Arc::new(clusters(svc.addr).await);
    report.check(!clusters.is_empty(), || "soak: no cluster has tasks".into());
    let open = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..STREAMS {
        load.spawn(stream(svc.addr, seen.clone(), open.clone(), stop.clone()));
    }
    for _ in 0..CLIENTS {
        load.spawn(lister(
            svc.addr,
            clusters.clone(),
            seen.clone(),
            stop.clone(),
        ));
    }
    let samples = sample(&svc, &data, plan, &seen, &open).await;
    let _ = stop_tx.send(true);
    while load.join_next().await.is_some() {}
    let sweeps = metric_sum(svc.addr, "css_reconcile_sweeps_total").await;
    let sweep_errors = metric_sum(svc.addr, "css_reconcile_sweep_errors_total").await;
    let exited = svc.exited();
    svc.stop();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let log_errors = logged
        .lines()
        .filter(|l| l.contains("ERRO") || l.contains("CRIT"))
        .count();
    let seen = std::mem::take(&mut *seen.lock().expect("soak results"));
    summarize(plan, &samples, &seen, report);
    report.add("soak: sweeps", format!("{sweeps:.0} times"), "", None);
    report.check(exited.is_none(), || {
        format!("soak: the service exited ({exited:?})")
    });
    report.check(sweep_errors == 0.0, || {
        format!("soak: {sweep_errors} sweeps failed")
    });
    report.check(seen.errors.is_empty(), || {
        format!(
            "soak: {} errors, first: {:?}",
            seen.errors.len(),
            seen.errors.first()
        )
    });
    report.check(log_errors == 0, || {
        format!("soak: {log_errors} error lines in {}", log.display())
    });
}

/// One sample per `plan.sample` until `plan.run`: (seconds, RSS, fds).
async fn sample(
    svc: &Service,
    data: &Path,
    plan: &Plan,
    seen: &Shared,
    open: &AtomicUsize,
) -> Vec<(u64, u64, usize)> {
    let t0 = Instant::now();
    let mut samples = Vec::new();
    let mut next = plan.sample;
    while next <= plan.run {
        tokio::time::sleep_until((t0 + next).into()).await;
        let (rss, fds) = resources(svc);
        let interval = seen.lock().ok().and_then(|mut s| s.interval.take());
        let (streams, lists) = interval.unzip();
        println!(
            "  {:>5} s: RSS {:>8}, {:>4} fds, store file {:>8}, {:>2} streams open; \
             this interval: stream p99 {}, list/describe p99 {} ({} deliveries, {} requests)",
            next.as_secs(),
            mib(rss),
            fds,
            mib(store_bytes(data)),
            open.load(Ordering::SeqCst),
            p99(streams.as_ref()),
            p99(lists.as_ref()),
            streams.as_ref().map_or(0, Histogram::len),
            lists.as_ref().map_or(0, Histogram::len),
        );
        samples.push((next.as_secs(), rss, fds));
        next += plan.sample;
    }
    samples
}

fn summarize(plan: &Plan, samples: &[(u64, u64, usize)], seen: &Seen, report: &mut Report) {
    let at = |secs: u64| samples.iter().find(|s| s.0 >= secs).or(samples.last());
    let (Some(from), Some(to)) = (at(plan.settled.as_secs()), samples.last()) else {
        report.check(false, || "soak: no samples".into());
        return;
    };
    let span = format!("{} s to {} s", from.0, to.0);
    let growth = (to.1 as f64 - from.1 as f64) / from.1.max(1) as f64 * 100.0;
    report.add(
        format!("soak: RSS growth, {span}"),
        format!("{} to {}, {growth:+.1} %", mib(from.1), mib(to.1)),
        "within 5 %",
        Some(growth.abs() <= 5.0),
    );
    let fds = to.2 as i64 - from.2 as i64;
    report.add(
        format!("soak: open fds growth, {span}"),
        format!("{} to {}, {fds:+} fds", from.2, to.2),
        "flat",
        Some(fds <= 0),
    );
    for (what, h, unit) in [
        ("stream delivery", &seen.streams, "deliveries"),
        ("list/describe", &seen.lists, "requests"),
    ] {
        let n = h.as_ref().map_or(0, Histogram::len);
        let figure = format!("soak: {what} p99 ({n} {unit})");
        report.add(figure, p99(h.as_ref()), "", None);
    }
    report.add(
        "soak: errors",
        format!("{} errors", seen.errors.len()),
        "none",
        Some(seen.errors.is_empty()),
    );
}

/// The sum of every series of `name` in `/metrics`.
async fn metric_sum(addr: SocketAddr, name: &str) -> f64 {
    let Ok(mut c) = Conn::connect(addr).await else {
        return f64::NAN;
    };
    let Ok(r) = c.get("/metrics", true).await else {
        return f64::NAN;
    };
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// When a change was made: its entity's `updatedAt`.
fn updated_at(item: &serde_json::Value) -> Option<time::OffsetDateTime> {
    let at = item["entity"]["updatedAt"].as_str()?;
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
}

/// One open task stream until `stop`: each change's delivery latency (now
/// minus its `updatedAt`, which the simulator sets as it makes the change),
/// revisions rising, and a `TooSlow` cut resumed
/// where the server says.
async fn stream(
    addr: SocketAddr,
    seen: Shared,
    open: Arc<AtomicUsize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut path = "/v1/stream/tasks".to_owned();
    let mut last = 0u64;
    // Bounded: a stream is resumed at most this often.
    for _ in 0..50 {
        let mut conn = match Conn::connect(addr).await {
            Ok(c) => c,
            Err(e) => return error(&seen, format!("stream: cannot connect: {e}")),
        };
        match conn.open_stream(&path).await {
            Ok(200) => {}
            other => return error(&seen, format!("stream: {path} answered {other:?}")),
        }
        open.fetch_add(1, Ordering::SeqCst);
        let resume = read(&mut conn, &seen, &mut last, &mut stop).await;
        open.fetch_sub(1, Ordering::SeqCst);
        match resume {
            Some(from) => path = format!("/v1/stream/tasks?entityVersion={from}"),
            None => return,
        }
    }
    error(&seen, "stream: cut as too slow 50 times".into());
}

/// Reads an open stream until `stop` (`None`) or a `TooSlow` cut (where to
/// resume from).
async fn read(
    conn: &mut Conn,
    seen: &Shared,
    last: &mut u64,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<String> {
    let mut buf = Vec::new();
    loop {
        tokio::select! {
            more = conn.next_piece(&mut buf) => {
                if !matches!(more, Ok(true)) {
                    error(seen, format!("stream: ended ({more:?})"));
                    return None;
                }
            }
            _ = stop.changed() => return None,
        }
        let now = time::OffsetDateTime::now_utc();
        let mut start = 0;
        while let Some(n) = memchr::memchr(b'\n', &buf[start..]) {
            let line = &buf[start..start + n];
            start += n + 1;
            let Ok(item) = serde_json::from_slice::<serde_json::Value>(line) else {
                error(
                    seen,
                    format!("stream: not JSON: {}", String::from_utf8_lossy(line)),
                );
                return None;
            };
            if item["error"]["code"] == "TooSlow" {
                return item["error"]["resumeFrom"].as_str().map(str::to_owned);
            }
            let revision = item["metadata"]["entityVersion"]
                .as_str()
                .and_then(|v| v.parse().ok());
            match revision {
                Some(r) if r > *last => *last = r,
                _ => error(seen, format!("stream: revision {revision:?} after {last}")),
            }
            // A deletion shows the entity as it last was (retention removes
            // STOPPED tasks long after their last update): not a delivery.
            let deleted = item["metadata"]["deleted"] == true;
            if let Some(at) = updated_at(&item).filter(|_| !deleted) {
                let lag = (now - at).max(time::Duration::ZERO);
                record(seen, true, lag.unsigned_abs());
            }
        }
        buf.drain(..start);
    }
}

/// The names of the clusters that have tasks.
async fn clusters(addr: SocketAddr) -> Vec<String> {
    let Ok(mut conn) = Conn::connect(addr).await else {
        return Vec::new();
    };
    let Ok(list) = conn.get("/v1/tasks", true).await else {
        return Vec::new();
    };
    let list: serde_json::Value = serde_json::from_slice(&list.body).unwrap_or_default();
    let mut names: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["entity"]["clusterARN"].as_str()?.rsplit('/').next())
        .map(str::to_owned)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Lists a random cluster's tasks, then describes one of them, until `stop`.
async fn lister(
    addr: SocketAddr,
    clusters: Arc<Vec<String>>,
    seen: Shared,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut rng = fastrand::Rng::new();
    let Ok(mut conn) = Conn::connect(addr).await else {
        return error(&seen, "list: cannot connect".into());
    };
    while !*stop.borrow() && !clusters.is_empty() {
        let cluster = &clusters[rng.usize(..clusters.len())];
        let t = Instant::now();
        let list = match conn
            .get(&format!("/v1/tasks?cluster={cluster}"), true)
            .await
        {
            Ok(r) if r.status == 200 => r,
            Ok(r) => return error(&seen, format!("list: status {}", r.status)),
            Err(e) => return error(&seen, format!("list: {e}")),
        };
        record(&seen, false, t.elapsed());
        let items: serde_json::Value = serde_json::from_slice(&list.body).unwrap_or_default();
        let arns: Vec<&str> = items["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["entity"]["taskARN"].as_str())
            .collect();
        if let Some(arn) = arns.get(rng.usize(..arns.len().max(1))) {
            let t = Instant::now();
            match conn.get(&format!("/v1/tasks/{cluster}/{arn}"), true).await {
                // Gone since it was listed: the churn stops and removes tasks.
                Ok(r) if r.status == 200 || r.status == 404 => record(&seen, false, t.elapsed()),
                Ok(r) => return error(&seen, format!("describe: status {}", r.status)),
                Err(e) => return error(&seen, format!("describe: {e}")),
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
}
