//! Cluster state for Prometheus (`/metrics/state`): gauges of what the view
//! holds, kept up to date as each change applies (the old entity's share
//! taken away, the new one's added), so a scrape only encodes them. Label
//! sets are bounded by clusters, services, statuses and launch types, never
//! by tasks; a series whose count falls to zero is removed.
//!
//! The failure signals (history.md) are of a time window: each service's
//! failed stops of the last `history.failure_window` are kept (at most
//! [`MAX_FAILURES`] a service) and counted when scraped.

use crate::arn::cluster_name;
use crate::model::{Entry, Kind};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::Deserialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// `[history]`: the failure signals of `/metrics/state`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How far back `ecs_service_tasks_failed_recent` and
    /// `ecs_service_crashlooping` look. Default 10m.
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    /// Failed stops of the PRIMARY deployment's task definition within the
    /// window that make a service crash-looping. Default 3.
    pub crashloop_failures: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            failure_window: Duration::from_secs(600),
            crashloop_failures: 3,
        }
    }
}

impl Config {
    pub fn check(&self, problems: &mut Vec<String>) {
        if self.failure_window.is_zero() {
            problems.push("history.failure_window: expected a duration above zero".into());
        }
        let n = self.crashloop_failures;
        crate::check::within("history.crashloop_failures", n, 1, 1000, problems);
    }
}

/// Failed stops remembered per service; older ones go first.
pub const MAX_FAILURES: usize = 1000;

/// A service, by cluster ARN and name.
type ServiceKey = (String, String);

/// What the failure signals are computed from.
#[derive(Default)]
struct Failures {
    config: Config,
    /// Each service's failed stops: (stopped at, task definition ARN).
    stops: BTreeMap<ServiceKey, VecDeque<(i64, String)>>,
    /// Each stored service's PRIMARY task definition.
    primary: BTreeMap<ServiceKey, String>,
}

/// The stop codes ECS documents; any other is counted as `other`.
const STOP_CODES: &[&str] = &[
    "TaskFailedToStart",
    "EssentialContainerExited",
    "UserInitiated",
    "ServiceSchedulerInitiated",
    "SpotInterruption",
    "TerminationNotice",
];

/// The families of `/metrics/state`.
pub struct ClusterState {
    registry: Registry,
    tasks: IntGaugeVec,
    desired: IntGaugeVec,
    running: IntGaugeVec,
    pending: IntGaugeVec,
    deployments: IntGaugeVec,
    instances: IntGaugeVec,
    cpu_registered: IntGaugeVec,
    cpu_remaining: IntGaugeVec,
    memory_registered: IntGaugeVec,
    memory_remaining: IntGaugeVec,
    stopped: IntCounterVec,
    failed_recent: IntGaugeVec,
    crashlooping: IntGaugeVec,
    deployments_failed: IntCounterVec,
    failures: Mutex<Failures>,
}

fn gauges(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

/// The labels every family starts with: the cluster's name, account and
/// region, from its ARN.
fn place(arn: &str) -> [&str; 3] {
    let (region, account) = crate::arn::region_and_account(arn).unwrap_or_default();
    [cluster_name(arn).unwrap_or(arn), account, region]
}

/// `place` and then `more`.
fn labels<'a>(place: [&'a str; 3], more: &[&'a str]) -> Vec<&'a str> {
    let mut v = place.to_vec();
    v.extend_from_slice(more);
    v
}

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState::new()
    }
}

impl ClusterState {
    pub fn new() -> ClusterState {
        let r = Registry::new();
        let svc = ["cluster", "account", "region", "service"];
        let at = ["cluster", "account", "region"];
        ClusterState {
            tasks: gauges(&r, "ecs_tasks", "Tasks by cluster, service (of the group service:NAME; empty otherwise), lastStatus and launch type.", &["cluster", "account", "region", "service", "last_status", "launch_type"]),
            desired: gauges(&r, "ecs_service_desired_tasks", "A service's desiredCount.", &svc),
            running: gauges(&r, "ecs_service_running_tasks", "A service's runningCount.", &svc),
            pending: gauges(&r, "ecs_service_pending_tasks", "A service's pendingCount.", &svc),
            deployments: gauges(&r, "ecs_service_deployments", "A service's deployments by rollout state.", &["cluster", "account", "region", "service", "rollout_state"]),
            instances: gauges(&r, "ecs_container_instances", "Container instances by status and agent connection.", &["cluster", "account", "region", "status", "agent_connected"]),
            cpu_registered: gauges(&r, "ecs_container_instance_cpu_registered", "CPU units registered by a cluster's container instances.", &at),
            cpu_remaining: gauges(&r, "ecs_container_instance_cpu_remaining", "CPU units not reserved on a cluster's container instances.", &at),
            memory_registered: gauges(&r, "ecs_container_instance_memory_registered", "Memory (MiB) registered by a cluster's container instances.", &at),
            memory_remaining: gauges(&r, "ecs_container_instance_memory_remaining", "Memory (MiB) not reserved on a cluster's container instances.", &at),
            stopped: {
                let c = IntCounterVec::new(
                    Opts::new("ecs_tasks_stopped_total", "Transitions of tasks to STOPPED seen, by stop code and whether the task failed (a non-zero exit code, or a stop code other than EssentialContainerExited, UserInitiated, ServiceSchedulerInitiated)."),
                    &["cluster", "account", "region", "service", "stop_code", "failed"],
                )
                .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            failed_recent: gauges(&r, "ecs_service_tasks_failed_recent", "Tasks of a service that stopped failed within history.failure_window, by task definition.", &["cluster", "account", "region", "service", "task_definition"]),
            crashlooping: gauges(&r, "ecs_service_crashlooping", "1 while the PRIMARY deployment's task definition has at least history.crashloop_failures failed stops within history.failure_window, else 0.", &svc),
            deployments_failed: {
                let c = IntCounterVec::new(
                    Opts::new("ecs_service_deployments_failed_total", "Deployments seen reaching rolloutState FAILED."),
                    &svc,
                )
                .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            failures: Mutex::new(Failures::default()),
            registry: r,
        }
    }

    /// Sets the failure window and the crash-loop threshold (`[history]`).
    pub fn configure(&self, config: Config) {
        self.failures().config = config;
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a failed stop of a service's task.
    fn failed_stop(&self, task: &Entry) {
        let Some(service) = task.service() else {
            return;
        };
        let key = (task.cluster_arn.clone(), service.to_owned());
        let at = task.stopped_at_ms.unwrap_or_else(crate::time::now_ms);
        let td = task.task_definition.clone().unwrap_or_default();
        let mut f = self.failures();
        let stops = f.stops.entry(key).or_default();
        if stops.len() == MAX_FAILURES {
            stops.pop_front();
        }
        stops.push_back((at, td));
    }

    /// Follows a service's PRIMARY task definition and counts its
    /// deployments that reached FAILED.
    fn service_changed(&self, old: Option<&Entry>, new: Option<&Entry>) {
        let failed = |e: Option<&Entry>| {
            let rollouts = e
                .and_then(Entry::service_index)
                .map(|s| s.rollouts.as_slice());
            rollouts
                .unwrap_or_default()
                .iter()
                .filter(|r| *r == "FAILED")
                .count()
        };
        if let Some(n) = new {
            let risen = failed(new).saturating_sub(failed(old));
            if risen > 0 {
                let l = labels(place(&n.cluster_arn), &[n.service_name()]);
                self.deployments_failed
                    .with_label_values(&l)
                    .inc_by(risen as u64);
            }
        }
        let mut f = self.failures();
        if let Some(o) = old {
            let key = (o.cluster_arn.clone(), o.service_name().to_owned());
            f.primary.remove(&key);
            if new.is_none() {
                f.stops.remove(&key);
            }
        }
        if let Some(n) = new {
            let key = (n.cluster_arn.clone(), n.service_name().to_owned());
            f.primary
                .insert(key, n.task_definition.clone().unwrap_or_default());
        }
    }

    /// Sets the failure signals from the failed stops within the window
    /// before `now_ms`, forgetting older ones.
    fn update_failures(&self, now_ms: i64) {
        let mut f = self.failures();
        let since = now_ms - f.config.failure_window.as_millis() as i64;
        let needed = f.config.crashloop_failures as usize;
        self.failed_recent.reset();
        self.crashlooping.reset();
        let Failures { stops, primary, .. } = &mut *f;
        stops.retain(|_, s| {
            s.retain(|(at, _)| *at >= since);
            !s.is_empty()
        });
        for ((cluster, service), td) in primary.iter() {
            let l = labels(place(cluster), &[service]);
            let recent = stops.get(&(cluster.clone(), service.clone()));
            let of_primary = recent.map_or(0, |s| s.iter().filter(|(_, t)| t == td).count());
            self.crashlooping
                .with_label_values(&l)
                .set(i64::from(of_primary >= needed));
        }
        for ((cluster, service), s) in stops.iter() {
            let mut by_td: BTreeMap<&str, i64> = BTreeMap::new();
            for (_, td) in s {
                *by_td.entry(td).or_default() += 1;
            }
            for (td, n) in by_td {
                let l = labels(place(cluster), &[service, td]);
                self.failed_recent.with_label_values(&l).set(n);
            }
        }
    }

    /// Adds `by` to a gauge, removing its series when it reaches zero.
    fn add(g: &IntGaugeVec, labels: &[&str], by: i64) {
        if by == 0 {
            return;
        }
        let m = g.with_label_values(labels);
        m.add(by);
        if m.get() == 0 {
            let _ = g.remove_label_values(labels);
        }
    }

    /// Adds (`sign` 1) or takes away (-1) what entity `e` counts for.
    fn count(&self, e: &Entry, sign: i64) {
        let c = place(&e.cluster_arn);
        match e.kind {
            Kind::Task => Self::add(
                &self.tasks,
                &labels(
                    c,
                    &[
                        e.service().unwrap_or(""),
                        &e.status,
                        e.launch_type.as_deref().unwrap_or(""),
                    ],
                ),
                sign,
            ),
            Kind::Instance => {
                let connected = if e.agent_connected == Some(true) {
                    "true"
                } else {
                    "false"
                };
                Self::add(&self.instances, &labels(c, &[&e.status, connected]), sign);
                let i = e.instance_index().cloned().unwrap_or_default();
                for (g, amount) in [
                    (&self.cpu_registered, i.cpu.0),
                    (&self.cpu_remaining, i.cpu.1),
                    (&self.memory_registered, i.memory.0),
                    (&self.memory_remaining, i.memory.1),
                ] {
                    g.with_label_values(&c).add(sign * amount);
                }
            }
            Kind::Service => {
                let Some(s) = e.service_index() else { return };
                let name = e.service_name();
                for (g, count) in [&self.desired, &self.running, &self.pending]
                    .into_iter()
                    .zip(s.counts)
                {
                    let l = labels(c, &[name]);
                    if sign > 0 {
                        g.with_label_values(&l).set(count);
                    } else {
                        let _ = g.remove_label_values(&l);
                    }
                }
                for state in &s.rollouts {
                    Self::add(&self.deployments, &labels(c, &[name, state]), sign);
                }
            }
        }
    }

    /// One committed change: `old` is what the view held before it, `new`
    /// what it holds after (`None` for a deletion).
    pub fn changed(&self, old: Option<&Entry>, new: Option<&Entry>) {
        if let Some(o) = old {
            self.count(o, -1);
        }
        if old.or(new).is_some_and(|e| e.kind == Kind::Service) {
            self.service_changed(old, new);
        }
        if let Some(n) = new {
            self.count(n, 1);
            let was_stopped = old.is_some_and(Entry::is_stopped_task);
            if n.is_stopped_task() && !was_stopped {
                let code = match n.stop_code.as_deref() {
                    None => "",
                    Some(c) if STOP_CODES.contains(&c) => c,
                    Some(_) => "other",
                };
                let failed = if n.failed() { "true" } else { "false" };
                self.stopped
                    .with_label_values(&labels(
                        place(&n.cluster_arn),
                        &[n.service().unwrap_or(""), code, failed],
                    ))
                    .inc();
                if n.failed() {
                    self.failed_stop(n);
                }
            }
        }
    }

    /// Counts a whole view anew (after a load); the counter of stopped
    /// tasks keeps counting transitions only.
    pub fn rebuild<'a>(&self, entries: impl Iterator<Item = &'a std::sync::Arc<Entry>>) {
        for g in [
            &self.tasks,
            &self.desired,
            &self.running,
            &self.pending,
            &self.deployments,
            &self.instances,
            &self.cpu_registered,
            &self.cpu_remaining,
            &self.memory_registered,
            &self.memory_remaining,
        ] {
            g.reset();
        }
        {
            let mut f = self.failures();
            f.primary.clear();
            f.stops.clear();
        }
        // The failed stops still in the view count again (those older than
        // the window go at the next scrape).
        let mut failed = Vec::new();
        for e in entries {
            self.count(e, 1);
            if e.kind == Kind::Service {
                let key = (e.cluster_arn.clone(), e.service_name().to_owned());
                let td = e.task_definition.clone().unwrap_or_default();
                self.failures().primary.insert(key, td);
            } else if e.is_stopped_task() && e.failed() {
                failed.push(e);
            }
        }
        failed.sort_by_key(|e| e.stopped_at_ms);
        for e in failed {
            self.failed_stop(e);
        }
    }

    /// The Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        self.update_failures(crate::time::now_ms());
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, status: &str, stop: Option<&str>, exits: &[i64]) -> Entry {
        let mut e = Entry::test_task(&format!("arn:aws:ecs:r:1:task/c/{id}"), Some(1), status);
        e.group = Some("service:web".into());
        e.launch_type = Some("FARGATE".into());
        e.stop_code = stop.map(str::to_owned);
        e.exit_codes = exits.to_vec();
        e
    }

    #[test]
    fn counts_follow_changes_and_stops_are_counted_once() {
        let s = ClusterState::new();
        let a = task("a", "RUNNING", None, &[]);
        let b = task("b", "RUNNING", None, &[]);
        s.changed(None, Some(&a));
        s.changed(None, Some(&b));
        assert!(s.render().contains(
            r#"ecs_tasks{account="1",cluster="c",last_status="RUNNING",launch_type="FARGATE",region="r",service="web"} 2"#
        ));
        let b2 = task("b", "STOPPED", Some("EssentialContainerExited"), &[137]);
        s.changed(Some(&b), Some(&b2));
        // A second STOPPED state of the same task is no new transition.
        s.changed(Some(&b2), Some(&b2));
        let text = s.render();
        assert!(text.contains(r#"ecs_tasks{account="1",cluster="c",last_status="RUNNING",launch_type="FARGATE",region="r",service="web"} 1"#), "{text}");
        assert!(text.contains(r#"ecs_tasks_stopped_total{account="1",cluster="c",failed="true",region="r",service="web",stop_code="EssentialContainerExited"} 1"#), "{text}");
        s.changed(Some(&a), None);
        s.changed(Some(&b2), None);
        let text = s.render();
        assert!(
            !text.contains("ecs_tasks{"),
            "series at zero are removed: {text}"
        );
        let odd = task("o", "STOPPED", Some("SomethingNew"), &[0]);
        s.changed(None, Some(&odd));
        assert!(s.render().contains(r#"stop_code="other""#));
        s.rebuild([std::sync::Arc::new(a)].iter());
        assert!(s.render().contains(
            r#"ecs_tasks{account="1",cluster="c",last_status="RUNNING",launch_type="FARGATE",region="r",service="web"} 1"#
        ));
    }

    fn service(td: &str, rollouts: &[&str]) -> Entry {
        let mut e = Entry::test_task("arn:aws:ecs:r:1:service/c/web", None, "ACTIVE");
        e.kind = Kind::Service;
        e.task_definition = Some(td.into());
        e.index = crate::model::Index::Service(crate::model::ServiceIndex {
            rollouts: rollouts.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        });
        e
    }

    fn failed_stop(id: &str, td: &str, at: i64) -> (Entry, Entry) {
        let mut running = task(id, "RUNNING", None, &[]);
        running.task_definition = Some(td.into());
        let mut stopped = task(id, "STOPPED", Some("EssentialContainerExited"), &[1]);
        stopped.task_definition = Some(td.into());
        stopped.stopped_at_ms = Some(at);
        (running, stopped)
    }

    fn series(text: &str, name: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(name))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn failure_signals_follow_the_window_and_the_primary_task_definition() {
        let s = ClusterState::new();
        s.configure(Config {
            failure_window: Duration::from_secs(600),
            crashloop_failures: 3,
        });
        let now = crate::time::now_ms();
        let v1 = service("td:1", &["IN_PROGRESS"]);
        s.changed(None, Some(&v1));
        // Two failed stops of td:1, one of td:0, and one long ago.
        for (id, td, at) in [
            ("a", "td:1", now - 1000),
            ("b", "td:1", now - 2000),
            ("c", "td:0", now - 3000),
            ("d", "td:1", now - 3_600_000),
        ] {
            let (r, st) = failed_stop(id, td, at);
            s.changed(None, Some(&r));
            s.changed(Some(&r), Some(&st));
        }
        let text = s.render();
        assert_eq!(
            series(&text, "ecs_service_crashlooping{"),
            [r#"ecs_service_crashlooping{account="1",cluster="c",region="r",service="web"} 0"#]
        );
        assert!(text.contains(r#"ecs_service_tasks_failed_recent{account="1",cluster="c",region="r",service="web",task_definition="td:1"} 2"#), "{text}");
        assert!(text.contains(r#"task_definition="td:0"} 1"#), "{text}");
        let (r, st) = failed_stop("e", "td:1", now);
        s.changed(None, Some(&r));
        s.changed(Some(&r), Some(&st));
        let text = s.render();
        assert_eq!(
            series(&text, "ecs_service_crashlooping{"),
            [r#"ecs_service_crashlooping{account="1",cluster="c",region="r",service="web"} 1"#]
        );
        // A new PRIMARY task definition has no failures yet; its rollout failing counts once.
        let v2 = service("td:2", &["FAILED", "COMPLETED"]);
        s.changed(Some(&v1), Some(&v2));
        s.changed(Some(&v2), Some(&v2));
        let text = s.render();
        assert!(
            text.contains(
                r#"ecs_service_crashlooping{account="1",cluster="c",region="r",service="web"} 0"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"ecs_service_deployments_failed_total{account="1",cluster="c",region="r",service="web"} 1"#), "{text}");
        // Past the window, nothing is recent.
        s.update_failures(now + 700_000);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&s.registry.gather())
            .unwrap();
        assert!(
            series(&text, "ecs_service_tasks_failed_recent{").is_empty(),
            "{text}"
        );
        // A deleted service leaves no series.
        s.changed(Some(&v2), None);
        assert!(series(&s.render(), "ecs_service_crashlooping{").is_empty());
    }
}
