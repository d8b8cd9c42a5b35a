//! Cluster state for Prometheus (`/metrics/state`): gauges of what the view
//! holds, kept up to date as each change applies (the old entity's share
//! taken away, the new one's added), so a scrape only encodes them. Label
//! sets are bounded by clusters, services, statuses and launch types, never
//! by tasks; a series whose count falls to zero is removed.

use crate::arn::cluster_name;
use crate::model::{Entry, Kind};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

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
            registry: r,
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
        for e in entries {
            self.count(e, 1);
        }
    }

    /// The Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
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
}
