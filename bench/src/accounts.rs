//! Part 8, many accounts and regions (accounts.md): the simulator with 100
//! accounts × 3 regions × 5 clusters (1,500 reconcilers, 150,000 tasks; in
//! quick mode 4 × 2 × 2, 1,600 tasks). It measures the time until `/readyz`
//! answers 200 (every account-region's clusters listed and every cluster's
//! first sweep done), the RSS, the threads, and what each idle reconciler
//! costs: the RSS and CPU of the same state served once with reconcile on
//! and once with it off, the difference divided by the reconcilers.
//! Targets: ready ≤ 30 s; ≤ 50 KiB per idle reconciler.

use crate::http::Conn;
use crate::procs::Service;
use crate::{mib, service, Options, Report};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The simulated deployment.
pub struct Plan {
    pub accounts: usize,
    pub regions: &'static [&'static str],
    pub clusters: usize,
    pub instances: usize,
    pub tasks_per_instance: usize,
    /// How long idle CPU is measured.
    pub idle: Duration,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            accounts: 100,
            regions: &["us-east-1", "us-west-2", "eu-west-1"],
            clusters: 5,
            instances: 10,
            tasks_per_instance: 10,
            idle: Duration::from_secs(10),
        }
    }

    pub fn quick() -> Plan {
        Plan {
            accounts: 4,
            regions: &["us-east-1", "eu-west-1"],
            clusters: 2,
            instances: 10,
            tasks_per_instance: 10,
            idle: Duration::from_secs(2),
        }
    }

    fn reconcilers(&self) -> usize {
        self.accounts * self.regions.len() * self.clusters
    }

    fn tasks(&self) -> usize {
        self.reconcilers() * self.instances * self.tasks_per_instance
    }

    fn config(&self, reconcile: bool) -> String {
        let regions: Vec<String> = self.regions.iter().map(|r| format!("{r:?}")).collect();
        format!(
            "[simulate]\naccounts = {}\nregions = [{}]\nclusters = {}\ninstances_per_cluster = {}\n\
             tasks_per_instance = {}\nevents_per_second = 0\nduplicate_rate = 0.0\n\
             reorder_rate = 0.0\n[reconcile]\nenabled = {reconcile}\ninterval = \"1h\"\n",
            self.accounts,
            regions.join(", "),
            self.clusters,
            self.instances,
            self.tasks_per_instance,
        )
    }
}

/// What one run of the service measured once its state was complete.
struct Measured {
    ready: Duration,
    rss: u64,
    threads: usize,
    /// CPU seconds per second while idle.
    idle_cpu: f64,
}

pub async fn accounts(o: &Options, plan: &Plan, work: &Path, report: &mut Report) {
    println!(
        "\n8. accounts: {} accounts x {} regions x {} clusters ({} reconcilers, {} tasks)",
        plan.accounts,
        plan.regions.len(),
        plan.clusters,
        plan.reconcilers(),
        plan.tasks()
    );
    let Some(on) = run(o, plan, work, true, report).await else {
        return;
    };
    let Some(off) = run(o, plan, work, false, report).await else {
        return;
    };
    let n = plan.reconcilers();
    report.add(
        format!("accounts: ready, {n} reconcilers"),
        format!("{:.2} s", on.ready.as_secs_f64()),
        "<= 30 s",
        Some(on.ready <= Duration::from_secs(30)),
    );
    report.add(
        "accounts: RSS, reconcile on / off",
        format!("{} / {}", mib(on.rss), mib(off.rss)),
        "",
        None,
    );
    let per = on.rss.saturating_sub(off.rss) as f64 / n as f64 / 1024.0;
    report.add(
        "accounts: memory per idle reconciler",
        format!("{per:.1} KiB"),
        "<= 50 KiB",
        Some(per <= 50.0),
    );
    report.add(
        "accounts: threads, reconcile on / off",
        format!("{} / {} threads", on.threads, off.threads),
        "",
        None,
    );
    let cpu = (on.idle_cpu - off.idle_cpu).max(0.0) / n as f64 * 1e6;
    report.add(
        "accounts: idle CPU, on / off; per reconciler",
        format!(
            "{:.1} % / {:.1} %; {cpu:.1} µs/s",
            on.idle_cpu * 100.0,
            off.idle_cpu * 100.0
        ),
        "",
        None,
    );
}

/// Serves the plan's state with reconcile on or off, until every task is in.
async fn run(
    o: &Options,
    plan: &Plan,
    work: &Path,
    reconcile: bool,
    report: &mut Report,
) -> Option<Measured> {
    let name = if reconcile { "on" } else { "off" };
    let file = work.join(format!("accounts-{name}.toml"));
    std::fs::write(&file, plan.config(reconcile)).expect("accounts config");
    let data = work.join(format!("accounts-{name}-data"));
    let _ = std::fs::remove_dir_all(&data);
    let args = [
        "--simulate".to_owned(),
        format!("--config={}", file.display()),
        format!("--data-dir={}", data.display()),
    ];
    let log = work.join(format!("accounts-{name}.log"));
    let started = Instant::now();
    let mut svc = Service::spawn(service(o), &args, &log);
    let ready = svc.wait_ready(started, Duration::from_secs(300)).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut held = (0, 0);
    while Instant::now() < deadline {
        held = clusters_and_tasks(svc.addr).await;
        if held.1 >= plan.tasks() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let want = (plan.reconcilers(), plan.tasks());
    report.check(held == want, || {
        format!("accounts ({name}): clusters and tasks {held:?}, not {want:?}")
    });
    if reconcile {
        let reconciled = reconciled(svc.addr).await;
        report.check(reconciled == plan.reconcilers(), || {
            format!(
                "accounts: {reconciled} clusters reconciled, not {}",
                plan.reconcilers()
            )
        });
    }
    let cpu0 = cpu_seconds(svc.pid());
    let t0 = Instant::now();
    tokio::time::sleep(plan.idle).await;
    let idle_cpu = (cpu_seconds(svc.pid()) - cpu0) / t0.elapsed().as_secs_f64();
    let threads = std::fs::read_dir(format!("/proc/{}/task", svc.pid())).map_or(0, |d| d.count());
    let measured = Measured {
        ready,
        rss: svc.memory().0,
        threads,
        idle_cpu,
    };
    let exited = svc.exited();
    report.check(exited.is_none(), || {
        format!("accounts ({name}): the service exited: {exited:?}")
    });
    svc.stop();
    Some(measured)
}

async fn clusters_json(addr: SocketAddr) -> serde_json::Value {
    let Ok(mut conn) = Conn::connect(addr).await else {
        return serde_json::Value::Null;
    };
    match conn.get("/v1/clusters", true).await {
        Ok(r) if r.status == 200 => serde_json::from_slice(&r.body).unwrap_or_default(),
        _ => serde_json::Value::Null,
    }
}

/// The clusters `/v1/clusters` lists, and the tasks they hold.
async fn clusters_and_tasks(addr: SocketAddr) -> (usize, usize) {
    let v = clusters_json(addr).await;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let tasks = items
        .iter()
        .filter_map(|c| c["tasks"].as_object())
        .flat_map(|by_status| by_status.values())
        .filter_map(serde_json::Value::as_u64)
        .sum::<u64>();
    (items.len(), tasks as usize)
}

/// How many clusters a reconciler runs for.
async fn reconciled(addr: SocketAddr) -> usize {
    let v = clusters_json(addr).await;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    items.iter().filter(|c| c["reconciled"] == true).count()
}

/// User and system CPU time of process `pid`, in seconds (`/proc/PID/stat`).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime, fields 14 and 15 of stat: 11 and 12 here (from field 3 on).
    (ticks(11) + ticks(12)) / 100.0
}
