//! `css-bench`: starts the real service and measures what its users feel,
//! printing each figure beside its target (the targets are in `BENCHMARKS.md`).
//!
//! 1. ingest: events through `--replay` into the embedded store and into etcd,
//!    with etcd's own single-client transaction rate measured in the same run;
//! 2. queries from this (second) process with concurrent keep-alive clients;
//! 3. stream fan-out: many open streams while changes are written at a rate;
//! 4. memory and time to ready after a restart with the full state;
//! 5. the dashboard in headless Chromium: the tasks view opening on the full
//!    state, and a filter applied to it;
//! 6. the memory that keeping every task STOPPED costs (the default
//!    `stopped_task_retention` is 24 h);
//! 7. the soak: 30 minutes of steady load, and what grows ([`soak`]);
//! 8. many accounts and regions: 1,500 reconcilers, time to ready and what
//!    each costs ([`accounts`]).
//!
//! `--quick` runs small sizes (well under a minute) so that CI keeps the
//! benchmark working; it checks what was delivered, never the timings.
//! The exit status is non-zero only when something went wrong (a failed
//! request, a lost change), never for a missed target.

mod accounts;
mod gen;
mod history;
mod http;
mod procs;
mod soak;

use gen::Shape;
use http::Conn;
use procs::{Etcd, Service};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Sizes {
    shape: Shape,
    events: usize,
    clients: usize,
    describes: usize,
    filtered: usize,
    full: usize,
    page: usize,
    streams: usize,
    rate: usize,
    stream_secs: u64,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            shape: Shape {
                clusters: 100,
                instances: 5_000,
                tasks: 100_000,
            },
            events: 200_000,
            clients: 32,
            describes: 500,
            filtered: 20,
            full: 2,
            page: 1000,
            streams: 1000,
            rate: 1000,
            stream_secs: 10,
        }
    }

    /// The ingest of `events` events of `shape` (part 9).
    fn for_history(shape: Shape, events: usize) -> Sizes {
        Sizes {
            shape,
            events,
            ..Sizes::quick()
        }
    }

    fn quick() -> Sizes {
        Sizes {
            shape: Shape {
                clusters: 10,
                instances: 50,
                tasks: 1_000,
            },
            events: 2_000,
            clients: 4,
            describes: 50,
            filtered: 5,
            full: 2,
            page: 100,
            streams: 20,
            rate: 200,
            stream_secs: 2,
        }
    }
}

/// css-bench: starts the real service (and etcd) and measures what its users
/// feel, each figure beside its target.
#[derive(clap::Parser)]
#[command(name = "css-bench", version)]
struct Options {
    /// Small sizes (what CI runs); timings are printed, never judged.
    #[arg(long)]
    quick: bool,
    /// Open streams in the stream phase.
    #[arg(long, value_name = "N")]
    streams: Option<usize>,
    /// Changes per second in the stream phase.
    #[arg(long, value_name = "N")]
    rate: Option<usize>,
    /// The first stream's deliveries, one per line: change number, written
    /// at, received at (ms since the stream phase began).
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Run only these parts; without ingest, the state is the one a
    /// previous run left in --work-dir.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ingest,etcd,queries,ui,streams,stopped,soak,accounts,history"
    )]
    parts: Vec<String>,
    /// The same as leaving etcd out of --parts.
    #[arg(long)]
    skip_etcd: bool,
    /// The service binary (default: the one beside css-bench).
    #[arg(long = "service-bin", value_name = "PATH")]
    service: Option<PathBuf>,
    /// etcd.
    #[arg(
        long = "etcd-bin",
        value_name = "PATH",
        env = "ETCD_BIN",
        default_value = "etcd"
    )]
    etcd: PathBuf,
    /// Where the stores and logs go (default: a new temporary directory).
    #[arg(long = "work-dir", value_name = "DIR")]
    work: Option<PathBuf>,
}

impl Options {
    fn runs(&self, part: &str) -> bool {
        self.parts.iter().any(|p| p == part) && !(self.skip_etcd && part == "etcd")
    }
}

/// The service binary to start.
fn service(o: &Options) -> &std::path::Path {
    o.service
        .as_deref()
        .unwrap_or(std::path::Path::new("cluster-state-service"))
}

fn options() -> Options {
    let mut o = <Options as clap::Parser>::parse();
    o.service = Some(
        o.service
            .take()
            .unwrap_or_else(|| procs::sibling("cluster-state-service")),
    );
    o
}

/// One line of the report.
struct Row {
    figure: String,
    measured: String,
    target: &'static str,
    met: Option<bool>,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    problems: Vec<String>,
}

impl Report {
    fn add(
        &mut self,
        figure: impl Into<String>,
        measured: String,
        target: &'static str,
        met: Option<bool>,
    ) {
        let row = Row {
            figure: figure.into(),
            measured,
            target,
            met,
        };
        println!(
            "  {:<46} {:>24}   target {:<12} {}",
            row.figure,
            row.measured,
            row.target,
            verdict(row.met)
        );
        self.rows.push(row);
    }

    fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            let p = problem();
            println!("  PROBLEM: {p}");
            self.problems.push(p);
        }
    }

    fn print(&self) {
        println!("\n| figure | measured | target | |\n|---|---:|---|---|");
        for r in &self.rows {
            println!(
                "| {} | {} | {} | {} |",
                r.figure,
                r.measured,
                r.target,
                verdict(r.met)
            );
        }
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "",
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() {
    let o = options();
    let mut sizes = if o.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    sizes.streams = o.streams.unwrap_or(sizes.streams);
    sizes.rate = o.rate.unwrap_or(sizes.rate);
    let own_dir = o.work.is_none();
    let work = o
        .work
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("css-bench-{}", std::process::id())));
    std::fs::create_dir_all(&work).expect("work dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let report = rt.block_on(run(&o, &sizes, &work));
    report.print();
    if own_dir {
        let _ = std::fs::remove_dir_all(&work);
    }
    if !report.problems.is_empty() {
        eprintln!("\n{} problem(s):", report.problems.len());
        for p in &report.problems {
            eprintln!("  {p}");
        }
        std::process::exit(1);
    }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cpus} cores ({model})")
}

/// The events the ingest parts replay, written to `path`.
fn write_events(s: &Sizes, path: &Path) {
    let f = std::fs::File::create(path).expect("events file");
    let mut w = std::io::BufWriter::new(f);
    gen::write_events(&s.shape, s.events, &mut w).expect("write events");
    // On disk before the clock starts: its write-back would otherwise
    // compete with the service's own fsyncs during the measurement.
    let f = w.into_inner().expect("write events");
    f.sync_all().expect("sync events");
}

async fn run(o: &Options, s: &Sizes, work: &Path) -> Report {
    let mut report = Report::default();
    let mode = if o.quick { "quick" } else { "full" };
    println!(
        "css-bench ({mode}): {} events, {} tasks + {} instances in {} clusters; {}; service {}",
        s.events,
        s.shape.tasks,
        s.shape.instances,
        s.shape.clusters,
        machine(),
        service(o).display()
    );
    let events = work.join("events.ndjson");
    let data = work.join("data");
    if o.runs("ingest") || o.runs("etcd") {
        write_events(s, &events);
    }

    if o.runs("ingest") {
        println!("\n1. ingest");
        let _ = std::fs::remove_dir_all(&data);
        let store = [format!("--data-dir={}", data.display())];
        if let Some(rate) = ingest(o, s, &store, &events, work, &mut report).await {
            report.add(
                format!("ingest, embedded ({} events)", s.events),
                format!("{rate:.0} events/s"),
                ">= 20000/s",
                Some(rate >= 20_000.0),
            );
        }
    }
    if o.runs("etcd") {
        etcd_ingest(o, s, &events, work, &mut report).await;
    }
    if o.runs("stopped") {
        stopped(o, s, work, &mut report).await;
    }
    if o.runs("soak") {
        let plan = if o.quick {
            soak::Plan::quick()
        } else {
            soak::Plan::full()
        };
        soak::soak(o, &plan, work, &mut report).await;
    }
    if o.runs("accounts") {
        let plan = if o.quick {
            accounts::Plan::quick()
        } else {
            accounts::Plan::full()
        };
        accounts::accounts(o, &plan, work, &mut report).await;
    }
    if o.runs("history") {
        let plan = if o.quick {
            history::Plan::quick()
        } else {
            history::Plan::full()
        };
        history::history(o, &plan, work, &mut report).await;
    }
    if !o.runs("queries") && !o.runs("ui") && !o.runs("streams") {
        return report;
    }

    served(o, s, work, &data, &mut report).await;
    report
}

/// Parts 2-4: the service restarted on the ingested state, its memory, then
/// the queries, the dashboard and the streams against it.
async fn served(o: &Options, s: &Sizes, work: &Path, data: &Path, report: &mut Report) {
    println!("\n2-4. restart, memory, queries, streams (embedded store)");
    let fifo = work.join("changes.fifo");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(matches!(made, Ok(st) if st.success()), "mkfifo failed");
    let args = [
        format!("--data-dir={}", data.display()),
        format!("--replay={}", fifo.display()),
    ];
    let started = Instant::now();
    let mut svc = Service::spawn(service(o), &args, &work.join("service.log"));
    // The replay source opens the pipe at start; the changes are written later.
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(fifo))
    };
    let ready = svc.wait_ready(started, Duration::from_secs(120)).await;
    report.add(
        format!("ready after restart ({} tasks)", s.shape.tasks),
        ms(ready),
        "<= 5 s",
        Some(ready <= Duration::from_secs(5)),
    );
    let pipe = writer
        .join()
        .expect("writer thread")
        .expect("open the pipe");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss, _) = svc.memory();
    report.add(
        format!("RSS when ready ({} tasks)", s.shape.tasks),
        mib(rss),
        "<= 400 MiB",
        Some(rss <= 400 * 1024 * 1024),
    );

    if o.runs("queries") {
        queries(svc.addr, s, report).await;
        let (rss, peak) = svc.memory();
        let max = 400 * 1024 * 1024;
        report.add(
            "RSS after the query load",
            mib(rss),
            "<= 400 MiB",
            Some(rss <= max),
        );
        report.add("RSS peak during the query load", mib(peak), "", None);
    }
    if o.runs("ui") {
        dashboard(svc.addr, s, report).await;
    }
    if o.runs("streams") {
        streams(svc.addr, s, pipe, o.trace.as_deref(), report).await;
    }
    svc.stop();
}

/// The tasks view of `/ui/` in headless Chromium, on the full state: the time
/// from opening it (one cluster's tasks) until its table shows them all, and
/// from choosing a status until the table shows only that status.
async fn dashboard(addr: SocketAddr, s: &Sizes, report: &mut Report) {
    use css_bench::webdriver::Browser;
    use serde_json::json;
    println!("\n5. the dashboard (headless Chromium)");
    let b = Browser::start().await;
    // The last cluster: the view shows it all only once the whole snapshot
    // (in cluster order) has arrived.
    let cluster = s.shape.cluster(s.shape.clusters - 1);
    let in_cluster = s.shape.tasks / s.shape.clusters;
    b.go("about:blank").await;
    let started = Instant::now();
    b.go(&format!("http://{addr}/ui/#/tasks?cluster={cluster}"))
        .await;
    let opened = format!(
        "const c = document.querySelector('#count'); \
         return c && Number(c.dataset.count) === {in_cluster} && document.querySelectorAll('#tasks tbody tr').length > 0"
    );
    let shown = b.until(Duration::from_secs(120), &opened).await;
    let open = started.elapsed();
    report.check(shown.is_some(), || {
        format!("the tasks view never showed {in_cluster} tasks")
    });
    report.add(
        format!(
            "dashboard: tasks view opens ({} tasks stored)",
            s.shape.tasks
        ),
        ms(open),
        "<= 2 s",
        Some(open <= Duration::from_secs(2)),
    );
    let started = Instant::now();
    b.js(
        "const s = document.querySelector('#f-status'); s.value = 'STOPPED'; \
         s.dispatchEvent(new Event('change'));",
        json!([]),
    )
    .await;
    let narrowed =
        "const rows = [...document.querySelectorAll('#tasks tbody tr, #content .empty')]; \
         return location.hash.includes('status=STOPPED') && rows.length > 0 \
           && rows.every(r => r.classList.contains('empty') || r.textContent.includes('STOPPED'))";
    let filtered = b.until(Duration::from_secs(60), narrowed).await;
    let took = started.elapsed();
    report.check(filtered.is_some(), || {
        "the status filter never applied".into()
    });
    report.add(
        "dashboard: a filter applied",
        ms(took),
        "<= 2 s",
        Some(took <= Duration::from_secs(2)),
    );
}

/// Every task of the shape STOPPED and kept: the RSS once ready after a
/// restart, beside the same figure for running tasks (part 4).
async fn stopped(o: &Options, s: &Sizes, work: &Path, report: &mut Report) {
    println!("\n6. stopped tasks kept");
    let file = work.join("stopped.ndjson");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&file).expect("events file"));
    gen::write_stopped(&s.shape, &mut w).expect("write events");
    drop(w);
    let data = work.join("stopped-data");
    let _ = std::fs::remove_dir_all(&data);
    let events = (s.shape.instances + s.shape.tasks) as u64;
    let args = [
        format!("--data-dir={}", data.display()),
        format!("--replay={}", file.display()),
    ];
    let started = Instant::now();
    let mut svc = Service::spawn(service(o), &args, &work.join("stopped.log"));
    svc.wait_ready(started, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(1800);
    while Instant::now() < deadline && svc.events_done().await.0 < events {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    svc.stop();
    let started = Instant::now();
    let args = [format!("--data-dir={}", data.display())];
    let mut svc = Service::spawn(service(o), &args, &work.join("stopped.log"));
    svc.wait_ready(started, Duration::from_secs(120)).await;
    let kept = count_items(svc.addr, "/v1/tasks?status=STOPPED").await;
    report.check(kept == Some(s.shape.tasks), || {
        format!(
            "stopped: {kept:?} STOPPED tasks kept, not {}",
            s.shape.tasks
        )
    });
    let (rss, _) = svc.memory();
    report.add(
        format!("RSS when ready ({} STOPPED tasks kept)", s.shape.tasks),
        mib(rss),
        "",
        None,
    );
    svc.stop();
}

/// Replays `events` into a new service with `store` args; events/s, from
/// start to the last event's outcome.
async fn ingest(
    o: &Options,
    s: &Sizes,
    store: &[String],
    events: &Path,
    work: &Path,
    report: &mut Report,
) -> Option<f64> {
    let mut args = store.to_vec();
    args.push(format!("--replay={}", events.display()));
    let started = Instant::now();
    let mut svc = Service::spawn(service(o), &args, &work.join("ingest.log"));
    svc.wait_ready(started, Duration::from_secs(60)).await;
    let deadline = started + Duration::from_secs(1800);
    let (mut done, mut applied) = (0, 0);
    while Instant::now() < deadline {
        (done, applied) = svc.events_done().await;
        if done >= s.events as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    // Every event is a new version of its entity: all are applied.
    report.check(applied == s.events as u64, || {
        format!(
            "ingest: {applied} of {} events applied, {done} done (see {})",
            s.events,
            work.join("ingest.log").display()
        )
    });
    let stored = count_items(svc.addr, "/v1/tasks").await;
    report.check(stored == Some(s.shape.tasks), || {
        format!("ingest: {stored:?} tasks stored, not {}", s.shape.tasks)
    });
    let (rss, peak) = svc.memory();
    println!(
        "  (ingest service: RSS {} at the end, peak {})",
        mib(rss),
        mib(peak)
    );
    svc.stop();
    (applied == s.events as u64).then(|| s.events as f64 / took.as_secs_f64())
}

async fn count_items(addr: SocketAddr, path: &str) -> Option<usize> {
    answer(addr, path).await.map(|(items, _)| items)
}

/// How many items a list answers with, and its size in bytes.
async fn answer(addr: SocketAddr, path: &str) -> Option<(usize, usize)> {
    let mut c = Conn::connect(addr).await.ok()?;
    let r = c.get(path, true).await.ok()?;
    (r.status == 200).then(|| (count(&r.body, "{\"entity\":"), r.body.len()))
}

fn count(hay: &[u8], needle: &str) -> usize {
    std::str::from_utf8(hay).map_or(0, |h| h.matches(needle).count())
}

/// Transactions in flight for etcd's reference rate (the service's default
/// `store.etcd_max_in_flight`).
const IN_FLIGHT: usize = 64;

/// etcd's rate for `n` create-if-absent transactions of a 64-byte value under
/// `prefix`, `in_flight` at a time (each its own key).
async fn raw_txns(
    client: &etcd_client::Client,
    prefix: &str,
    n: usize,
    in_flight: usize,
    report: &mut Report,
) -> Option<f64> {
    let started = Instant::now();
    let mut next = 0;
    let mut running = tokio::task::JoinSet::new();
    while next < n || !running.is_empty() {
        while next < n && running.len() < in_flight {
            let (mut c, key) = (client.clone(), format!("{prefix}{next:08}"));
            running.spawn(async move {
                let txn = etcd_client::Txn::new()
                    .when([etcd_client::Compare::mod_revision(
                        key.as_str(),
                        etcd_client::CompareOp::Equal,
                        0,
                    )])
                    .and_then([etcd_client::TxnOp::put(key.as_str(), vec![b'x'; 64], None)]);
                c.txn(txn).await.map(|_| ())
            });
            next += 1;
        }
        if let Some(Ok(Err(e))) = running.join_next().await {
            report.check(false, || format!("etcd: raw transaction failed: {e}"));
            return None;
        }
    }
    Some(n as f64 / started.elapsed().as_secs_f64())
}

async fn etcd_ingest(o: &Options, s: &Sizes, events: &Path, work: &Path, report: &mut Report) {
    let etcd = Etcd::start(&o.etcd, &work.join("etcd"));
    let client = match etcd_client::Client::connect([etcd.endpoint.as_str()], None).await {
        Ok(c) => c,
        Err(e) => {
            report.check(false, || format!("etcd: cannot connect: {e}"));
            return;
        }
    };
    // etcd's own rates, for transactions of the shape of the service's
    // writes: one at a time, and 64 in flight (what the service may do).
    let Some(one) = raw_txns(&client, "/bench-one/", s.events, 1, report).await else {
        return;
    };
    report.add(
        format!("etcd alone, 1 client ({} small txns)", s.events),
        format!("{one:.0} txn/s"),
        "",
        None,
    );
    let Some(raw) = raw_txns(&client, "/bench-64/", s.events, IN_FLIGHT, report).await else {
        return;
    };
    report.add(
        format!(
            "etcd alone, {IN_FLIGHT} in flight ({} small txns)",
            s.events
        ),
        format!("{raw:.0} txn/s"),
        "",
        None,
    );
    let store = [format!("--etcd-endpoint={}", etcd.endpoint)];
    if let Some(rate) = ingest(o, s, &store, events, work, report).await {
        report.add(
            format!("ingest, etcd ({} events)", s.events),
            format!("{rate:.0} events/s"),
            "",
            None,
        );
        let ratio = rate / raw;
        report.add(
            format!("ingest, etcd, as a share of etcd with {IN_FLIGHT} in flight"),
            format!("{:.0} %", ratio * 100.0),
            ">= 50 %",
            Some(ratio >= 0.5),
        );
    }
    first_sweep(
        o,
        &etcd.endpoint,
        if o.quick { 1_000 } else { 10_000 },
        work,
        report,
    )
    .await;
}

/// A first sweep of one cluster of `tasks` tasks (the simulator as ECS, its
/// events all dropped, so every task comes from the sweep) into an empty
/// prefix of etcd: the time from start until `/readyz` says 200.
async fn first_sweep(o: &Options, endpoint: &str, tasks: usize, work: &Path, report: &mut Report) {
    let config = work.join("sweep.toml");
    let toml = format!(
        "[store]\nkey_prefix = \"sweep-{}\"\n[reconcile]\nmax_requests_per_second = 1000\n\
         [simulate]\nclusters = 1\ninstances_per_cluster = 100\ntasks_per_instance = {}\n\
         events_per_second = 0\ndrop_rate = 1.0\n",
        std::process::id(),
        tasks / 100
    );
    if let Err(e) = std::fs::write(&config, toml) {
        report.check(false, || {
            format!("sweep: cannot write {}: {e}", config.display())
        });
        return;
    }
    let args = [
        "--simulate".to_owned(),
        format!("--config={}", config.display()),
        format!("--etcd-endpoint={endpoint}"),
    ];
    let since = Instant::now();
    let mut svc = Service::spawn(service(o), &args, &work.join("sweep.log"));
    let took = svc.wait_ready(since, Duration::from_secs(600)).await;
    let stored = count_items(svc.addr, "/v1/tasks").await.unwrap_or(0);
    report.check(stored == tasks, || {
        format!("first sweep: {stored} tasks stored of {tasks}")
    });
    report.add(
        format!("first sweep into etcd ({tasks} tasks): ready after"),
        format!("{:.0} ms", took.as_secs_f64() * 1000.0),
        "",
        None,
    );
}

/// Runs `per_client` requests on each of `clients` connections at once;
/// `path(rng)` picks each request. Sorted latencies, and failures.
async fn load<F>(
    addr: SocketAddr,
    clients: usize,
    per_client: usize,
    path: F,
) -> (Vec<Duration>, usize)
where
    F: Fn(&mut fastrand::Rng) -> String + Send + Sync + 'static,
{
    let path = Arc::new(path);
    let mut joins = Vec::new();
    for c in 0..clients {
        let path = path.clone();
        joins.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(c as u64 + 1);
            let mut lat = Vec::with_capacity(per_client);
            let mut failed = 0;
            let Ok(mut conn) = Conn::connect(addr).await else {
                return (lat, per_client);
            };
            for _ in 0..per_client {
                let p = path(&mut rng);
                let t = Instant::now();
                match conn.get(&p, false).await {
                    Ok(r) if r.status == 200 => lat.push(t.elapsed()),
                    Ok(_) => failed += 1,
                    Err(_) => {
                        failed += 1;
                        match Conn::connect(addr).await {
                            Ok(c) => conn = c,
                            Err(_) => return (lat, failed),
                        }
                    }
                }
            }
            (lat, failed)
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for j in joins {
        let (lat, f) = j.await.unwrap_or_default();
        all.extend(lat);
        failed += f;
    }
    all.sort_unstable();
    (all, failed)
}

fn latency_rows(
    report: &mut Report,
    name: &str,
    lat: &[Duration],
    target: &'static str,
    p99_max: Option<Duration>,
) {
    report.add(format!("{name}: p50"), ms(pct(lat, 0.50)), "", None);
    report.add(
        format!("{name}: p99 ({} samples)", lat.len()),
        ms(pct(lat, 0.99)),
        target,
        p99_max.map(|m| !lat.is_empty() && pct(lat, 0.99) <= m),
    );
}

/// `work.1` requests from each of `work.0` clients at once, then `work.2`
/// from one client alone (the cost of a request on its own, without the
/// others queued beside it on shared cores): latency rows of both, the
/// first against `target`.
async fn timed<F>(
    addr: SocketAddr,
    report: &mut Report,
    name: &str,
    target: (&'static str, Duration),
    work: (usize, usize, usize),
    path: F,
) where
    F: Fn(&mut fastrand::Rng) -> String + Clone + Send + Sync + 'static,
{
    let (clients, each, alone) = work;
    let (lat, failed) = load(addr, clients, each, path.clone()).await;
    report.check(failed == 0, || format!("{name}: {failed} failed requests"));
    latency_rows(report, name, &lat, target.0, Some(target.1));
    let (lat, _) = load(addr, 1, alone, path).await;
    let name = name.split(" (").next().unwrap_or(name);
    latency_rows(report, &format!("{name}, 1 client alone"), &lat, "", None);
}

async fn queries(addr: SocketAddr, s: &Sizes, report: &mut Report) {
    let shape = s.shape;
    let per_cluster = shape.tasks / shape.clusters;
    // What the timed requests answer is checked once, untimed.
    let (full, full_bytes) = answer(addr, "/v1/tasks").await.unzip();
    report.check(full == Some(shape.tasks), || {
        format!(
            "queries: the full list has {full:?} tasks, not {}",
            shape.tasks
        )
    });
    let (one, one_bytes) = answer(addr, &format!("/v1/tasks?cluster={}", shape.cluster(7)))
        .await
        .unzip();
    report.check(one == Some(per_cluster), || {
        format!("queries: a cluster lists {one:?} tasks, not {per_cluster}")
    });
    // What the list latencies below are made of: bytes, times 32 clients.
    let kib = |b: Option<usize>| format!("{} KiB", b.unwrap_or(0) / 1024);
    report.add(
        "filtered list: size of one answer",
        kib(one_bytes),
        "",
        None,
    );
    report.add("full list: size of one answer", kib(full_bytes), "", None);
    let d = count_items(addr, &shape.describe_path(42)).await;
    report.check(d == Some(1), || {
        "queries: describe did not find task 42".into()
    });

    let c = s.clients;
    println!("  ({c} concurrent clients, keep-alive)");
    let describe = move |r: &mut fastrand::Rng| shape.describe_path(r.usize(..shape.tasks));
    let work = (c, s.describes, s.describes * 4);
    let target = ("p99 <= 2 ms", Duration::from_millis(2));
    timed(addr, report, "describe one task", target, work, describe).await;
    // The same requests from one client: the cost of a request on its own,
    // without 31 others queued beside it on two shared cores.
    let filtered = move |r: &mut fastrand::Rng| {
        format!(
            "/v1/tasks?cluster={}",
            shape.cluster(r.usize(..shape.clusters))
        )
    };
    let name = format!("filtered list ({per_cluster} tasks)");
    let target = ("p99 <= 20 ms", Duration::from_millis(20));
    let work = (c, s.filtered, s.filtered * 10);
    timed(addr, report, &name, target, work, filtered).await;
    let name = format!("full list ({} tasks)", shape.tasks);
    let target = ("p99 <= 500 ms", Duration::from_millis(500));
    let work = (c, s.full, s.full * 4);
    timed(addr, report, &name, target, work, |_| {
        "/v1/tasks".to_owned()
    })
    .await;
    paged(addr, s, report).await;
}

/// Every client walks the whole task list in pages of `s.page`.
async fn paged(addr: SocketAddr, s: &Sizes, report: &mut Report) {
    let page = s.page;
    let expected_pages = s.shape.tasks.div_ceil(page);
    let mut joins = Vec::new();
    for _ in 0..s.clients {
        joins.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr).await.ok()?;
            let mut lat = Vec::new();
            let mut items = 0;
            let mut token: Option<String> = None;
            let walk = Instant::now();
            loop {
                let path = match &token {
                    None => format!("/v1/tasks?limit={page}"),
                    Some(t) => format!("/v1/tasks?limit={page}&nextToken={t}"),
                };
                let t = Instant::now();
                let r = conn.get(&path, true).await.ok()?;
                lat.push(t.elapsed());
                if r.status != 200 {
                    return None;
                }
                items += count(&r.body, "{\"entity\":");
                token = string_field(&r.body, "nextToken");
                if token.is_none() {
                    return Some((lat, items, walk.elapsed()));
                }
            }
        }));
    }
    let mut all = Vec::new();
    let mut walks = Vec::new();
    for j in joins {
        match j.await.ok().flatten() {
            Some((lat, items, walk)) => {
                report.check(
                    items == s.shape.tasks && lat.len() == expected_pages,
                    || {
                        format!(
                            "paged list: a walk saw {items} tasks in {} pages",
                            lat.len()
                        )
                    },
                );
                all.extend(lat);
                walks.push(walk);
            }
            None => report.check(false, || "paged list: a walk failed".into()),
        }
    }
    all.sort_unstable();
    walks.sort_unstable();
    latency_rows(
        report,
        &format!("paged list (limit {page}), one page"),
        &all,
        "",
        None,
    );
    report.add(
        "paged list, a whole walk: p50",
        ms(pct(&walks, 0.5)),
        "",
        None,
    );
}

/// The value of the first `"name":"…"` in a JSON text (no escapes in it).
fn string_field(body: &[u8], name: &str) -> Option<String> {
    let mark = format!("\"{name}\":\"");
    let at = memchr::memmem::find(body, mark.as_bytes())? + mark.len();
    let len = body[at..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&body[at..at + len])
        .ok()
        .map(str::to_owned)
}

/// Resumptions allowed to one stream client before it counts as broken.
const MAX_RESUMES: usize = 50;

/// What one stream client received.
#[derive(Default)]
struct Got {
    /// Delivery latency of each change, in the order received.
    lat: Vec<Duration>,
    /// Changes received out of order or twice.
    disorder: usize,
    /// Times the server cut the stream as too slow (and it resumed).
    cuts: usize,
    /// The stream ended other than by a `TooSlow` line it could resume from.
    broken: bool,
    /// Changes received (`lat.len()` before it is handed on).
    received: usize,
}

/// Changes written at once after the steady part of the fan-out: a burst of
/// commits each about as large as a stream's buffer (the replay commits up
/// to 1,000 lines at a time), as a sweep or a backlog writes them. Every
/// stream must get them all; their delivery times are left out of the
/// latency figures, which are about the steady rate.
const BURST: usize = 5_000;

/// Opens `s.streams` task streams, writes `s.rate` changes/s into the replay
/// pipe for `s.stream_secs`, then a [`BURST`], and measures when each stream
/// gets each change.
/// One stream's reader: opens `/v1/stream/tasks`, counts itself `open`,
/// and records the latency of each of the `total` changes (their send
/// times in `sent`, nanoseconds since `t0`) until it has them all or `stop`.
async fn read_stream(
    addr: SocketAddr,
    sent: Arc<Vec<AtomicU64>>,
    open: Arc<AtomicUsize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    trace: Option<PathBuf>,
    t0: Instant,
) -> Option<Got> {
    let total = sent.len();
    let mut traced = String::new();
    let mut conn = Conn::connect(addr).await.ok()?;
    if conn.open_stream("/v1/stream/tasks").await.ok()? != 200 {
        return None;
    }
    open.fetch_add(1, Ordering::SeqCst);
    let mut got = Got {
        lat: Vec::with_capacity(total),
        ..Got::default()
    };
    let mut buf = Vec::new();
    let finder = gen::SeqFinder::new();
    'read: while got.lat.len() < total {
        tokio::select! {
            more = conn.next_piece(&mut buf) => {
                if !matches!(more, Ok(true)) {
                    got.broken = true;
                    break;
                }
            }
            _ = stop.changed() => break,
        }
        let now = t0.elapsed().as_nanos() as u64;
        let mut start = 0;
        while let Some(n) = memchr::memchr(b'\n', &buf[start..]) {
            let line = &buf[start..start + n];
            start += n + 1;
            if let Some(seq) = finder.seq_of(line) {
                // Every change once, in the order written.
                got.disorder += usize::from(seq != got.lat.len());
                let at = sent.get(seq).map_or(0, |a| a.load(Ordering::Acquire));
                got.lat.push(Duration::from_nanos(now.saturating_sub(at)));
                if trace.is_some() {
                    let ms = |ns: u64| ns as f64 / 1e6;
                    let _ = writeln!(traced, "{seq} {:.3} {:.3}", ms(at), ms(now));
                }
            } else if line.starts_with(b"{\"error\"") {
                // Cut as too slow: resume where the server says, as a
                // client should; nothing may be missing or repeated.
                match resume(addr, line, &mut got).await {
                    Some(c) => conn = c,
                    None => {
                        got.broken = true;
                        break 'read;
                    }
                }
                buf.clear();
                continue 'read;
            }
        }
        buf.drain(..start);
    }
    if let Some(path) = trace {
        let _ = std::fs::write(path, traced);
    }
    got.received = got.lat.len();
    Some(got)
}

/// A new stream from where the server's `TooSlow` error `line` says, if it
/// is one and the stream has resumed fewer than [`MAX_RESUMES`] times.
async fn resume(addr: SocketAddr, line: &[u8], got: &mut Got) -> Option<Conn> {
    let from = string_field(line, "resumeFrom")?;
    let too_slow = string_field(line, "code").as_deref() == Some("TooSlow");
    if !too_slow || got.cuts >= MAX_RESUMES {
        return None;
    }
    got.cuts += 1;
    let mut conn = Conn::connect(addr).await.ok()?;
    let path = format!("/v1/stream/tasks?entityVersion={from}");
    matches!(conn.open_stream(&path).await, Ok(200)).then_some(conn)
}

/// Writes `sent.len()` changes into the replay `pipe`: the first `steady`
/// at `rate` per second, the rest at once; records when each was sent.
fn write_changes(
    pipe: std::fs::File,
    shape: Shape,
    rate: usize,
    steady: usize,
    sent: &[AtomicU64],
    t0: Instant,
) {
    let total = sent.len();
    let mut pipe = std::io::BufWriter::with_capacity(1 << 20, pipe);
    let begin = Instant::now();
    // Versions above any earlier run's on the same state.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1000, |d| d.as_millis() as u64 * 1000);
    let lines: Vec<String> = (0..total).map(|q| shape.change(base, q)).collect();
    let begin_ns = begin.duration_since(t0).as_nanos() as u64;
    // Change `i`, sent at `at` (nanoseconds since t0).
    let write = |pipe: &mut std::io::BufWriter<std::fs::File>, i: usize, at: u64| {
        sent[i].store(at, Ordering::Release);
        let _ = pipe.write_all(lines[i].as_bytes());
        let _ = pipe.write_all(b"\n");
    };
    let mut next = 0;
    while next < steady {
        let due = ((begin.elapsed().as_secs_f64() * rate as f64) as usize + 1).min(steady);
        while next < due {
            let at = begin_ns.max(t0.elapsed().as_nanos() as u64);
            write(&mut pipe, next, at);
            next += 1;
        }
        let _ = pipe.flush();
        std::thread::sleep(Duration::from_millis(1));
    }
    let at = t0.elapsed().as_nanos() as u64;
    for i in steady..total {
        write(&mut pipe, i, at);
    }
    let _ = pipe.flush();
    // Closing the pipe ends the replay; the service keeps serving.
}

/// Every stream got every change once, in order, and ended only by
/// `TooSlow` lines it resumed from (`lat` of each counted before).
fn check_streams(got: &[Got], total: usize, report: &mut Report) {
    let (mut short, mut broken, mut disorder, mut cuts, mut cut_streams) = (0, 0, 0, 0, 0);
    for g in got {
        short += usize::from(g.received < total);
        broken += usize::from(g.broken);
        disorder += g.disorder;
        cuts += g.cuts;
        cut_streams += usize::from(g.cuts > 0);
    }
    report.check(short == 0 && broken == 0 && disorder == 0, || {
        format!(
            "streams: {short} streams missed changes, {broken} ended other than as too slow, \
             {disorder} changes came out of order or twice"
        )
    });
    report.add(
        "streams cut as too slow (steady part and burst), then resumed",
        format!("{cut_streams} streams, {cuts} times"),
        "",
        None,
    );
}

async fn streams(
    addr: SocketAddr,
    s: &Sizes,
    pipe: std::fs::File,
    trace: Option<&Path>,
    report: &mut Report,
) {
    let steady = s.rate * s.stream_secs as usize;
    let total = steady + BURST;
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let t0 = Instant::now();
    let open = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let joins: Vec<_> = (0..s.streams)
        .map(|client| {
            let trace = trace.map(Path::to_path_buf).filter(|_| client == 0);
            let reader = read_stream(addr, sent.clone(), open.clone(), stop_rx.clone(), trace, t0);
            tokio::spawn(reader)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while open.load(Ordering::SeqCst) < s.streams && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opened = open.load(Ordering::SeqCst);
    report.check(opened == s.streams, || {
        format!("streams: only {opened} of {} opened", s.streams)
    });
    println!(
        "  ({opened} streams open; writing {} changes/s for {} s)",
        s.rate, s.stream_secs
    );
    let (shape, rate, writer_sent) = (s.shape, s.rate, sent.clone());
    let writer =
        std::thread::spawn(move || write_changes(pipe, shape, rate, steady, &writer_sent, t0));
    let wrote = Instant::now();
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    let writing = wrote.elapsed();
    // Give the last changes time to arrive, then stop the readers.
    let grace = Instant::now() + Duration::from_secs(15);
    while Instant::now() < grace && joins.iter().any(|j| !j.is_finished()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    let mut all = Vec::with_capacity(total * s.streams);
    let mut got = Vec::with_capacity(s.streams);
    for j in joins {
        got.extend(j.await.ok().flatten());
    }
    for g in &mut got {
        all.extend(g.lat.drain(..).take(steady));
    }
    check_streams(&got, total, report);
    all.sort_unstable();
    println!(
        "  ({} deliveries of the steady part; writing took {:.1} s, then {BURST} at once)",
        all.len(),
        writing.as_secs_f64()
    );
    let name = format!("stream delivery, {} streams x {}/s", s.streams, s.rate);
    latency_rows(
        report,
        &name,
        &all,
        "p99 <= 100 ms",
        Some(Duration::from_millis(100)),
    );
}
