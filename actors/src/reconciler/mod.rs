//! Reconciler: one actor per cluster, comparing the store with the ECS API
//! and repairing drift; a [`ReconcileManager`] discovers the clusters.
//!
//! A sweep lists and describes the cluster's container instances and tasks
//! (RUNNING and STOPPED; pages followed; describes in batches of 100) and its
//! services (batches of 10) within a client-side request budget, backing off
//! on throttling. Between sweeps, the services marked [`Dirty`] (a service
//! event, a change of one of their tasks) are described again, each at most
//! once per `service_refresh`; when a describe fails, their marks are put
//! back and tried again one `service_refresh` later. Every entity found
//! is written through the StoreWriter under the version rule (an answer
//! without a version never overwrites one learned from an event). A stored
//! task that ECS no longer lists is described once more, unless it has
//! stopped: STOPPED tasks are kept after ECS forgets them, and leave only
//! through `store.stopped_task_retention`. Then every other stored entity of
//! the cluster that ECS did not return (or answered MISSING), and that was
//! last written before the sweep's start minus the grace period, is deleted
//! (with a tombstone and a stream deletion). A sweep that failed anywhere deletes
//! nothing, and is tried again soon (1 s, doubling up to the interval),
//! not an interval later. A cluster is never swept twice at once; sweeps run
//! in the background, so the API serves from the start, and a sweep waits
//! (bounded) for the writer's view to be loaded.
//!
//! Services have no version: an answer replaces a stored service only when
//! its rendering differs, and answers for one service are written in the
//! order they were asked for (one describe-and-write at a time per cluster).
//! A stored service that `ListServices` no longer returns is described once
//! more: `INACTIVE` is stored as such, `MISSING` deletes it after the grace
//! period.

mod config;

pub use config::{ClusterTuning, Clusters, Config};

use crate::accounts::Place;
use crate::arn::ClusterRef;
use crate::dirty::{Dirty, Mark};
use crate::ecs_client::{self as ecs, Ecs, TaskStatus, DESCRIBE_BATCH, DESCRIBE_SERVICES_BATCH};
use crate::metrics::{ClusterStats, Metrics, RefreshReason};
use crate::model::{Entry, Kind};
use crate::reader::{Reader, ReconcileProgress};
use crate::retry::Backoff;
use crate::store::{Op, Outcome, Store};
use crate::time::now_ms;
use crate::writer::{Apply, ApplyAsLeader, StoreWriter};
use actix::prelude::*;
use slog::{debug, info, warn, Logger};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Attempts at one call while ECS keeps throttling.
const MAX_THROTTLED: u32 = 8;
/// How often a replica that does not lead a cluster checks whether it can.
const STANDBY_RETRY: Duration = Duration::from_secs(2);
/// The first wait after a failed sweep; it doubles up to the interval.
const FAILED_RETRY: Duration = Duration::from_secs(1);
/// How long a sweep waits for the writer's view (loading at start-up, or
/// reloading) before it goes on, and fails if the view is still missing.
const VIEW_WAIT: Duration = Duration::from_secs(30);

/// Reconcile settings of one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Tuning {
    pub enabled: bool,
    pub interval: Duration,
    /// Share of the interval added or removed at random.
    pub jitter: f64,
    pub max_requests_per_second: f64,
    /// An entity written more recently than this before a sweep is never removed by it.
    pub grace_period: Duration,
    /// A dirty service is described again at most this often.
    pub service_refresh: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            enabled: true,
            interval: Duration::from_secs(300),
            jitter: 0.1,
            max_requests_per_second: 10.0,
            grace_period: Duration::from_secs(60),
            service_refresh: Duration::from_secs(5),
        }
    }
}

/// Spaces calls `1 / max_requests_per_second` apart: one per account and
/// region (shared by its sweeps, service refreshes and cluster discovery),
/// and one per cluster with its own tuning.
pub struct Budget {
    gap: Duration,
    next: std::sync::Mutex<tokio::time::Instant>,
}

impl Budget {
    pub fn new(per_second: f64) -> Budget {
        Budget {
            gap: Duration::from_secs_f64(1.0 / per_second.max(0.01)),
            next: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for the next call's turn (turns are handed out in call order).
    async fn take(&self) {
        let now = tokio::time::Instant::now();
        let turn = match self.next.lock() {
            Ok(mut next) => {
                let turn = (*next).max(now);
                *next = turn + self.gap;
                turn
            }
            Err(_) => now,
        };
        tokio::time::sleep_until(turn).await;
    }
}

/// Why a sweep failed (it then deleted nothing).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ECS: {0}")]
    Ecs(#[from] ecs::Error),
    #[error("store: {0}")]
    Store(#[from] crate::store::Error),
    #[error("the StoreWriter is unreachable: {0}")]
    Writer(#[from] actix::MailboxError),
}

impl Error {
    /// ECS could not be asked with this account's credentials (a role that
    /// cannot be assumed): waiting will not help, so readiness does not
    /// wait for it.
    fn is_credentials(&self) -> bool {
        matches!(self, Error::Ecs(ecs::Error::Credentials(_)))
    }
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub instances: usize,
    pub tasks: usize,
    pub services: usize,
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    /// Why the services could not be swept, when they could not (tasks and
    /// instances were, so the cluster still counts as swept).
    pub services_failed: Option<String>,
}

/// What the reconcilers of one account and region work with.
#[derive(Clone)]
pub struct Deps {
    /// The account and region; the ECS client answers for it.
    pub place: Place,
    pub ecs: Arc<dyn Ecs>,
    /// The account-region's request budget (`reconcile.max_requests_per_second`).
    pub budget: Arc<Budget>,
    /// For the reconcile lease only ([`Store::lead`]); reads go through `reader`.
    pub store: Arc<dyn Store>,
    pub writer: Addr<StoreWriter>,
    pub reader: Reader,
    pub progress: ReconcileProgress,
    pub metrics: Arc<Metrics>,
    /// The services to describe again soon.
    pub dirty: Dirty,
}

/// What a cluster's sweeps and service refreshes share.
struct Lane {
    /// ECS calls of this cluster, sweeps and refreshes alike.
    budget: Budget,
    /// Held across each `DescribeServices` call and the write of its answer,
    /// so that answers are written in the order they were asked for.
    services: tokio::sync::Mutex<()>,
    /// When each service was last asked about (pruned once older than
    /// `service_refresh`, after which it no longer matters).
    asked: std::sync::Mutex<HashMap<String, Instant>>,
}

/// What a round of `DescribeServices` calls found and wrote.
#[derive(Default)]
struct ServicesDescribed {
    outcomes: Vec<(String, Outcome)>,
    failures: Vec<(String, ecs::Failure)>,
}

/// One sweep of one cluster; owns what it needs so it runs off the actor.
#[derive(Clone)]
struct Sweep {
    deps: Deps,
    /// As ECS and the configuration name it: a name or an ARN.
    cluster: String,
    /// Its ARN where it is known (else its name): the key of its lead,
    /// dirty marks, metrics and readiness.
    key: String,
    matcher: ClusterRef,
    tuning: Tuning,
    stats: ClusterStats,
    lane: Arc<Lane>,
}

impl Sweep {
    /// Makes the ECS call `operation` (`f`) within the cluster's and the
    /// account-region's budgets, retrying while throttled.
    async fn call<T, F>(&self, operation: &'static str, mut f: F) -> ecs::Result<T>
    where
        F: FnMut() -> crate::store::BoxFuture<'static, ecs::Result<T>>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut attempt = 1;
        loop {
            self.lane.budget.take().await;
            self.deps.budget.take().await;
            self.stats.api_calls.inc();
            self.deps.metrics.ecs_call(&self.deps.place, operation);
            match f().await {
                Err(ecs::Error::Throttled(m)) => {
                    self.stats.throttles.inc();
                    if attempt >= MAX_THROTTLED {
                        return Err(ecs::Error::Throttled(m));
                    }
                    attempt += 1;
                    tokio::time::sleep(backoff.delay()).await;
                }
                other => return other,
            }
        }
    }

    async fn list(&self, what: Listing) -> ecs::Result<Vec<String>> {
        ecs::all_pages(|token| {
            let (ecs, cluster) = (self.deps.ecs.clone(), self.cluster.clone());
            self.call(what.operation(), move || {
                let (ecs, cluster, token) = (ecs.clone(), cluster.clone(), token.clone());
                Box::pin(async move {
                    match what {
                        Listing::Tasks(s) => ecs.list_tasks(&cluster, s, token).await,
                        Listing::Instances => ecs.list_container_instances(&cluster, token).await,
                        Listing::Services => ecs.list_services(&cluster, token).await,
                    }
                })
            })
        })
        .await
    }

    async fn describe(&self, arns: &[String], tasks: bool) -> ecs::Result<ecs::Described> {
        let mut all = ecs::Described::default();
        for chunk in arns.chunks(DESCRIBE_BATCH) {
            let (ecs, cluster, chunk) =
                (self.deps.ecs.clone(), self.cluster.clone(), chunk.to_vec());
            let operation = match tasks {
                true => "DescribeTasks",
                false => "DescribeContainerInstances",
            };
            let d = self
                .call(operation, move || {
                    let (ecs, cluster, chunk) = (ecs.clone(), cluster.clone(), chunk.clone());
                    Box::pin(async move {
                        if tasks {
                            ecs.describe_tasks(&cluster, chunk).await
                        } else {
                            ecs.describe_container_instances(&cluster, chunk).await
                        }
                    })
                })
                .await?;
            all.entries.extend(d.entries);
            all.failures.extend(d.failures);
        }
        Ok(all)
    }

    /// Sweeps, if this replica leads the cluster; `None` when another does.
    async fn run(self) -> Result<Option<Report>, Error> {
        // At start-up the first sweep can be quicker than the view's load.
        let loaded = self.deps.reader.wait_for(|h| h.loaded);
        let _ = tokio::time::timeout(VIEW_WAIT, loaded).await;
        if !self.deps.store.lead(&self.key).await? {
            return Ok(None);
        }
        self.sweep().await.map(Some)
    }

    async fn sweep(&self) -> Result<Report, Error> {
        let started_ms = now_ms();
        let instance_arns = self.list(Listing::Instances).await?;
        let mut task_arns = self.list(Listing::Tasks(TaskStatus::Running)).await?;
        task_arns.extend(self.list(Listing::Tasks(TaskStatus::Stopped)).await?);
        task_arns.sort_unstable();
        task_arns.dedup();
        let instances = self.describe(&instance_arns, false).await?;
        let tasks = self.describe(&task_arns, true).await?;
        let before = self.deps.reader.snapshot()?;
        // A stored task that has not stopped and that ECS no longer lists is
        // described once more: it may have stopped meanwhile; MISSING
        // removes it. (Stopped ones are kept, see `is_stopped_task`.)
        let listed: HashSet<&str> = task_arns.iter().map(String::as_str).collect();
        let unlisted: Vec<String> = self
            .stored(&before)
            .filter(|e| e.kind == Kind::Task && !e.is_stopped_task())
            .filter(|e| !listed.contains(e.arn.as_str()))
            .map(|e| e.arn.clone())
            .collect();
        let again = self.describe(&unlisted, true).await?;

        // Listed, or described with a failure other than MISSING: not gone.
        let mut seen: HashSet<String> = instance_arns.iter().chain(&task_arns).cloned().collect();
        seen.extend(again.entries.iter().map(|e| e.arn.clone()));
        let failures = instances.failures.iter().chain(&tasks.failures);
        for (arn, reason) in failures.chain(&again.failures) {
            if *reason == ecs::Failure::Missing {
                seen.remove(arn);
            } else {
                seen.insert(arn.clone());
            }
        }
        let known: HashSet<&str> = self.stored(&before).map(|e| e.arn.as_str()).collect();
        let entries: Vec<Entry> = instances
            .entries
            .into_iter()
            .chain(tasks.entries)
            .chain(again.entries)
            .collect();
        let was_known: Vec<bool> = entries
            .iter()
            .map(|e| known.contains(e.arn.as_str()))
            .collect();
        let mut report = Report {
            instances: instance_arns.len(),
            tasks: task_arns.len(),
            ..Report::default()
        };
        let outcomes = self
            .apply(entries.into_iter().map(Op::Put).collect())
            .await?;
        for (o, known) in outcomes.iter().zip(was_known) {
            if matches!(o, Outcome::Applied(_)) {
                if known {
                    report.updated += 1;
                } else {
                    report.added += 1;
                }
            }
        }

        report.removed = self.remove_unseen(&seen, started_ms).await?;
        // Last, so that the marks this sweep's task writes made are covered.
        // A failure here (say, no `ecs:ListServices` permission) leaves the
        // tasks and instances repaired.
        if let Err(e) = self.sweep_services(started_ms, &mut report).await {
            report.services_failed = Some(e.to_string());
        }
        Ok(report)
    }

    /// Deletes what this cluster holds that the sweep did not see, stored
    /// before the grace period (counted from the sweep's start) began, and
    /// not a stopped task (those leave by retention); how many went.
    async fn remove_unseen(&self, seen: &HashSet<String>, started_ms: i64) -> Result<usize, Error> {
        let cutoff = started_ms - self.tuning.grace_period.as_millis() as i64;
        let now = self.deps.reader.snapshot()?;
        let gone: Vec<Op> = self
            .stored(&now)
            .filter(|e| !seen.contains(&e.arn) && e.stored_at_ms <= cutoff)
            .filter(|e| !e.is_stopped_task())
            .map(|e| Op::Delete {
                arn: e.arn.clone(),
                if_revision: e.revision,
            })
            .collect();
        let outcomes = self.apply(gone).await?;
        Ok(outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Applied(_)))
            .count())
    }

    /// Lists and describes the cluster's services; describes once more the
    /// stored ones no longer listed (`INACTIVE` is stored, `MISSING` deleted
    /// after the grace period).
    async fn sweep_services(&self, started_ms: i64, report: &mut Report) -> Result<(), Error> {
        let listed = self.list(Listing::Services).await?;
        report.services = listed.len();
        let before = self.deps.reader.snapshot()?;
        let stored: HashMap<&str, &Arc<Entry>> = self
            .of_cluster(&before, Kind::Service)
            .map(|e| (e.arn.as_str(), e))
            .collect();
        let listed_set: HashSet<&str> = listed.iter().map(String::as_str).collect();
        let unlisted: Vec<String> = stored
            .keys()
            .filter(|arn| !listed_set.contains(*arn))
            .map(|arn| (*arn).to_owned())
            .collect();
        let sweep = |names: &[String]| -> Vec<(String, RefreshReason)> {
            names
                .iter()
                .map(|n| (n.clone(), RefreshReason::Sweep))
                .collect()
        };
        let mut found = self.describe_services(sweep(&listed)).await?;
        let again = self.describe_services(sweep(&unlisted)).await?;
        found.outcomes.extend(again.outcomes);
        for (arn, o) in &found.outcomes {
            if matches!(o, Outcome::Applied(_)) {
                if stored.contains_key(arn.as_str()) {
                    report.updated += 1;
                } else {
                    report.added += 1;
                }
            }
        }
        let cutoff = started_ms - self.tuning.grace_period.as_millis() as i64;
        let gone: Vec<Op> = again
            .failures
            .iter()
            .filter(|(_, why)| *why == ecs::Failure::Missing)
            .filter_map(|(arn, _)| stored.get(arn.as_str()))
            .filter(|e| e.stored_at_ms <= cutoff)
            .map(|e| Op::Delete {
                arn: e.arn.clone(),
                if_revision: e.revision,
            })
            .collect();
        let outcomes = self.apply(gone).await?;
        report.removed += outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Applied(_)))
            .count();
        Ok(())
    }

    /// Describes services (names or ARNs) in batches of 10, writing each
    /// answer before the next call; each call is counted under the strongest
    /// reason of its batch.
    async fn describe_services(
        &self,
        mut services: Vec<(String, RefreshReason)>,
    ) -> Result<ServicesDescribed, Error> {
        // The strongest reasons first: events go out in the first batches.
        services.sort_by_key(|(_, r)| std::cmp::Reverse(*r));
        let mut out = ServicesDescribed::default();
        for chunk in services.chunks(DESCRIBE_SERVICES_BATCH) {
            let reason = chunk
                .iter()
                .map(|(_, r)| *r)
                .max()
                .unwrap_or(RefreshReason::Sweep);
            let names: Vec<String> = chunk.iter().map(|(n, _)| n.clone()).collect();
            let _turn = self.lane.services.lock().await;
            let asked = Instant::now();
            let (ecs, cluster, stats) = (
                self.deps.ecs.clone(),
                self.cluster.clone(),
                self.stats.clone(),
            );
            let d = self
                .call("DescribeServices", move || {
                    stats.refreshed(reason);
                    let (ecs, cluster, names) = (ecs.clone(), cluster.clone(), names.clone());
                    Box::pin(async move { ecs.describe_services(&cluster, names).await })
                })
                .await?;
            if let Ok(mut seen) = self.lane.asked.lock() {
                for (name, _) in chunk {
                    let name = name.rsplit('/').next().unwrap_or(name);
                    self.deps.dirty.covered(&self.key, name, asked);
                    seen.insert(name.to_owned(), asked);
                }
            }
            let arns: Vec<String> = d.entries.iter().map(|e| e.arn.clone()).collect();
            let outcomes = self
                .apply(d.entries.into_iter().map(Op::Put).collect())
                .await?;
            out.outcomes.extend(arns.into_iter().zip(outcomes));
            out.failures.extend(d.failures);
        }
        Ok(out)
    }

    /// Describes the dirty services that are due, if this replica leads the
    /// cluster (else another one does: the marks are dropped). When a call
    /// fails, the marks of the services not yet described are put back,
    /// due again once `service_refresh` has passed (a failing ECS is not
    /// asked again at every tick).
    async fn refresh(self, due: Vec<(String, Mark)>) -> Result<usize, Error> {
        if !self.deps.store.leads(&self.key) {
            return Ok(0);
        }
        let n = due.len();
        let started = Instant::now();
        let services = due.iter().map(|(s, m)| (s.clone(), m.reason)).collect();
        // A service the store lacked is a repair, as a sweep's would be.
        let known: HashSet<String> = self.deps.reader.snapshot().map_or_else(
            |_| HashSet::new(),
            |snap| {
                let here = self.of_cluster(&snap, Kind::Service);
                here.map(|e| e.arn.clone()).collect()
            },
        );
        let e = match self.describe_services(services).await {
            Ok(found) => {
                let added = found
                    .outcomes
                    .iter()
                    .filter(|(arn, o)| matches!(o, Outcome::Applied(_)) && !known.contains(arn));
                self.stats.added.inc_by(added.count() as u64);
                return Ok(n);
            }
            Err(e) => e,
        };
        let failed = Instant::now();
        if let Ok(mut asked) = self.lane.asked.lock() {
            for (service, mark) in due {
                if asked.get(&service).is_some_and(|at| *at >= started) {
                    continue; // described by an earlier batch of this round
                }
                self.deps.dirty.restore(&self.key, &service, mark);
                asked.insert(service, failed);
            }
        }
        Err(e)
    }

    /// The stored tasks and instances of this cluster.
    fn stored<'a>(
        &'a self,
        snap: &'a crate::view::Snapshot,
    ) -> impl Iterator<Item = &'a Arc<Entry>> + 'a {
        self.of_cluster(snap, Kind::Task)
            .chain(self.of_cluster(snap, Kind::Instance))
    }

    /// The stored entities of `kind` of this cluster: a range of the view
    /// where the cluster's ARN is known (1,500 clusters' sweeps do not each
    /// scan every entity), else a filter by its name.
    fn of_cluster<'a>(
        &'a self,
        snap: &'a crate::view::Snapshot,
        kind: Kind,
    ) -> Box<dyn Iterator<Item = &'a Arc<Entry>> + 'a> {
        match &self.matcher {
            ClusterRef::Arn(arn) => Box::new(snap.of_cluster(kind, arn)),
            ClusterRef::Name(_) => Box::new(
                snap.of(kind)
                    .values()
                    .filter(|e| self.matcher.matches(&e.cluster_arn)),
            ),
        }
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<Vec<Outcome>, Error> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        // Fenced: once another replica leads this cluster, nothing more is written.
        let ops = ApplyAsLeader {
            ops,
            name: self.key.clone(),
        };
        Ok(self.deps.writer.send(ops).await??)
    }
}

/// What a sweep lists.
#[derive(Debug, Clone, Copy)]
enum Listing {
    Instances,
    Tasks(TaskStatus),
    Services,
}

impl Listing {
    fn operation(self) -> &'static str {
        match self {
            Listing::Instances => "ListContainerInstances",
            Listing::Tasks(_) => "ListTasks",
            Listing::Services => "ListServices",
        }
    }
}

/// Sweep now (besides the timer); ignored while a sweep runs.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SweepNow;

/// Stop reconciling this cluster.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// The reconciler of one cluster.
pub struct Reconciler {
    /// What every sweep of this cluster needs.
    job: Sweep,
    /// Set after the first successful sweep (readiness).
    swept: bool,
    /// Whether the last sweep found this replica leading (for the log; the
    /// `css_reconcile_leader` gauge asks the store at each scrape).
    leading: bool,
    log: Logger,
    sweeping: bool,
    refreshing: bool,
    /// Jitter of the sweep interval (seeded by the cluster's name).
    rng: fastrand::Rng,
    /// The wait before a failed sweep is tried again.
    retry: Backoff,
}

impl Reconciler {
    fn new(job: Sweep, log: Logger) -> Self {
        let seed = {
            use std::hash::{Hash as _, Hasher as _};
            let mut h = std::hash::DefaultHasher::new();
            job.cluster.hash(&mut h);
            h.finish()
        };
        let retry = Backoff::new(FAILED_RETRY, FAILED_RETRY.max(job.tuning.interval));
        Reconciler {
            job,
            swept: false,
            leading: false,
            log,
            sweeping: false,
            refreshing: false,
            rng: fastrand::Rng::with_seed(seed),
            retry,
        }
    }

    /// Describes the dirty services that are due; one round at a time.
    fn refresh(&mut self, ctx: &mut Context<Self>) {
        if self.refreshing {
            return;
        }
        let every = self.job.tuning.service_refresh;
        let (due, in_flight) = {
            let Ok(mut asked) = self.job.lane.asked.lock() else {
                return;
            };
            asked.retain(|_, at| at.elapsed() < every);
            self.job
                .deps
                .dirty
                .take(&self.job.key, |s| !asked.contains_key(s))
        };
        if due.is_empty() {
            return;
        }
        self.refreshing = true;
        ctx.spawn(
            self.job
                .clone()
                .refresh(due)
                .into_actor(self)
                .map(move |res, act, _| {
                    drop(in_flight);
                    act.refreshing = false;
                    match res {
                        Ok(n) if n > 0 => debug!(act.log, "services refreshed"; "services" => n),
                        Ok(_) => {}
                        Err(e) => warn!(act.log, "service refresh failed"; "error" => %e),
                    }
                }),
        );
    }

    /// The interval with up to ± `jitter` of it added.
    fn next_delay(&mut self) -> Duration {
        let u = self.rng.f64() * 2.0 - 1.0;
        let t = &self.job.tuning;
        t.interval.mul_f64((1.0 + t.jitter * u).max(0.05))
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping {
            return;
        }
        self.sweeping = true;
        let job = self.job.clone();
        let started = Instant::now();
        ctx.spawn(job.run().into_actor(self).map(move |res, act, ctx| {
            act.sweeping = false;
            let s = act.job.stats.clone();
            let mut delay = act.next_delay();
            if let Ok(None) = res {
                // Another replica leads this cluster: ready, and standing by.
                if std::mem::replace(&mut act.leading, false) {
                    warn!(act.log, "no longer leading this cluster");
                }
                act.mark_swept();
                delay = delay.min(STANDBY_RETRY);
                ctx.run_later(delay, |act, ctx| act.sweep(ctx));
                return;
            }
            if !std::mem::replace(&mut act.leading, true) {
                info!(act.log, "leading this cluster's reconcile");
            }
            s.sweeps.inc();
            s.sweep_seconds.inc_by(started.elapsed().as_secs_f64());
            match res {
                Ok(None) => {}
                Ok(Some(r)) => {
                    act.retry.reset();
                    act.job.deps.progress.error(&act.job.key, None);
                    if let Some(e) = &r.services_failed {
                        s.sweep_errors.inc();
                        warn!(act.log, "services not swept"; "error" => e);
                    }
                    s.added.inc_by(r.added as u64);
                    s.updated.inc_by(r.updated as u64);
                    s.removed.inc_by(r.removed as u64);
                    if act.mark_swept() {
                        info!(act.log, "first sweep done"; "instances" => r.instances, "tasks" => r.tasks,
                            "services" => r.services, "added" => r.added, "updated" => r.updated, "removed" => r.removed);
                    } else {
                        debug!(act.log, "sweep done"; "instances" => r.instances, "tasks" => r.tasks,
                            "services" => r.services, "added" => r.added, "updated" => r.updated, "removed" => r.removed);
                    }
                }
                Err(e) => {
                    s.sweep_errors.inc();
                    act.job.deps.progress.error(&act.job.key, Some(e.to_string()));
                    if e.is_credentials() {
                        // Waiting does not mend an account's role: readiness
                        // does not wait for this cluster, which keeps trying.
                        act.mark_swept();
                    }
                    delay = delay.min(act.retry.delay());
                    warn!(act.log, "sweep failed; nothing deleted"; "error" => %e,
                        "retry_in" => format!("{delay:?}"));
                }
            }
            ctx.run_later(delay, |act, ctx| act.sweep(ctx));
        }));
    }
}

impl Reconciler {
    /// Readiness no longer waits for this cluster; true the first time.
    fn mark_swept(&mut self) -> bool {
        self.job.deps.progress.swept(&self.job.key);
        !std::mem::replace(&mut self.swept, true)
    }
}

impl Actor for Reconciler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(16);
        if self.job.tuning.enabled {
            self.job.deps.dirty.register(&self.job.key);
            self.sweep(ctx);
            let tick = (self.job.tuning.service_refresh / 4)
                .clamp(Duration::from_millis(50), Duration::from_secs(1));
            ctx.run_interval(tick, |act, ctx| act.refresh(ctx));
        } else {
            self.mark_swept();
            info!(self.log, "reconcile disabled for this cluster");
        }
    }
}

impl Supervised for Reconciler {
    fn restarting(&mut self, _: &mut Context<Self>) {
        warn!(self.log, "reconciler restarting");
        self.sweeping = false;
        self.refreshing = false;
    }
}

impl Handler<SweepNow> for Reconciler {
    type Result = ();
    fn handle(&mut self, _: SweepNow, ctx: &mut Context<Self>) {
        if self.job.tuning.enabled {
            self.sweep(ctx);
        }
    }
}

impl Handler<Retire> for Reconciler {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.job.deps.dirty.retire(&self.job.key);
        ctx.stop();
    }
}

/// Which clusters to reconcile, and how.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub base: Tuning,
    /// Per-cluster tuning, by cluster ARN or name (`[reconcile.clusters.KEY]`).
    pub per_cluster: HashMap<String, Tuning>,
    /// `Some`: these clusters (names) only; `None`: discover with ListClusters.
    pub clusters: Option<Vec<String>>,
}

impl Settings {
    /// The tuning of the cluster `key` (its ARN, or its name): by ARN
    /// first, then by name, else the base.
    fn tuning(&self, key: &str) -> Tuning {
        let name = crate::arn::cluster_name(key).unwrap_or(key);
        self.per_cluster
            .get(key)
            .or_else(|| self.per_cluster.get(name))
            .cloned()
            .unwrap_or_else(|| self.base.clone())
    }
}

/// Starts and stops the reconcilers of one account and region as its
/// clusters come and go.
pub struct ReconcileManager {
    settings: Settings,
    deps: Deps,
    log: Logger,
    /// By cluster key (its ARN where known, else its name).
    actors: HashMap<String, Addr<Reconciler>>,
    discovering: bool,
}

impl ReconcileManager {
    /// Readiness waits until the clusters are known: call
    /// [`ReconcileProgress::discovering`] with [`ReconcileManager::progress_key`]
    /// before starting it.
    pub fn new(settings: Settings, deps: Deps, log: Logger) -> Self {
        ReconcileManager {
            settings,
            deps,
            log,
            actors: HashMap::new(),
            discovering: false,
        }
    }

    /// What readiness and errors call the account and region of `place`.
    pub fn progress_key(place: &Place) -> String {
        place.to_string()
    }

    /// The key of a cluster named (or given by ARN) as `cluster`: its ARN
    /// where it is known; `None` when it is neither a name nor an ARN.
    fn key_of(&self, cluster: &str) -> Option<String> {
        ClusterRef::parse(cluster)?;
        if crate::arn::is_valid_cluster_name(cluster) {
            let arn = self.deps.place.cluster_arn(cluster);
            return Some(arn.unwrap_or_else(|| cluster.to_owned()));
        }
        Some(cluster.to_owned())
    }

    fn discover(&mut self, ctx: &mut Context<Self>) {
        if self.discovering {
            return;
        }
        self.discovering = true;
        let (ecs, explicit) = (self.deps.ecs.clone(), self.settings.clusters.clone());
        let (budget, metrics, place) = (
            self.deps.budget.clone(),
            self.deps.metrics.clone(),
            self.deps.place.clone(),
        );
        let fut = async move {
            if let Some(names) = explicit {
                return Ok(names);
            }
            ecs::all_pages(|token| {
                let (ecs, budget, metrics, place) =
                    (ecs.clone(), budget.clone(), metrics.clone(), place.clone());
                async move {
                    budget.take().await;
                    metrics.ecs_call(&place, "ListClusters");
                    ecs.list_clusters(token).await
                }
            })
            .await
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.discovering = false;
            let key = Self::progress_key(&act.deps.place);
            match res {
                Ok(clusters) => {
                    act.deps.progress.discovery_error(&act.deps.place, None);
                    act.reconcile_set(clusters, ctx);
                }
                Err(e) => {
                    warn!(act.log, "cannot list clusters; keeping the ones known"; "error" => %e);
                    act.deps.metrics.discovery_error(&act.deps.place);
                    let why = format!("cannot list clusters: {e}");
                    act.deps
                        .progress
                        .discovery_error(&act.deps.place, Some(why));
                    if matches!(e, ecs::Error::Credentials(_)) {
                        // Waiting does not mend a role: readiness goes on
                        // without this account and region, which keeps trying.
                        act.deps.progress.known(&key);
                    }
                }
            }
        }));
    }

    fn reconcile_set(&mut self, clusters: Vec<String>, ctx: &mut Context<Self>) {
        let mut wanted = HashSet::new();
        for cluster in &clusters {
            let Some(key) = self.key_of(cluster) else {
                warn!(self.log, "not a cluster name or ARN; skipped"; "cluster" => cluster);
                continue;
            };
            wanted.insert(key.clone());
            if self.actors.contains_key(&key) {
                continue;
            }
            let Some(matcher) = ClusterRef::parse(&key) else {
                continue;
            };
            let tuning = self.settings.tuning(&key);
            let lane = Arc::new(Lane {
                budget: Budget::new(tuning.max_requests_per_second),
                services: tokio::sync::Mutex::new(()),
                asked: Default::default(),
            });
            let job = Sweep {
                deps: self.deps.clone(),
                cluster: cluster.clone(),
                matcher,
                tuning,
                lane,
                stats: self.deps.metrics.cluster(&key),
                key: key.clone(),
            };
            self.deps.progress.waiting(&key);
            let name = crate::arn::cluster_name(&key).unwrap_or(&key).to_owned();
            let l = self.log.new(slog::o!("cluster" => name.clone()));
            let addr = Supervisor::start(move |_| Reconciler::new(job, l));
            info!(self.log, "reconciling a cluster"; "cluster" => &name);
            self.actors.insert(key, addr);
        }
        let vanished: Vec<String> = self
            .actors
            .keys()
            .filter(|c| !wanted.contains(*c))
            .cloned()
            .collect();
        for key in vanished {
            if let Some(addr) = self.actors.remove(&key) {
                info!(self.log, "cluster gone; removing its entities"; "cluster" => &key);
                self.deps.progress.retired(&key);
                self.deps.progress.error(&key, None);
                self.deps.metrics.forget_cluster(&key);
                let (writer, reader) = (self.deps.writer.clone(), self.deps.reader.clone());
                let Some(matcher) = ClusterRef::parse(&key) else {
                    continue;
                };
                ctx.spawn(
                    async move {
                        let _ = addr.send(Retire).await;
                        let Ok(snap) = reader.snapshot() else {
                            return;
                        };
                        let ops: Vec<Op> = snap
                            .all()
                            .filter(|e| matcher.matches(&e.cluster_arn))
                            .map(|e| Op::Delete {
                                arn: e.arn.clone(),
                                if_revision: e.revision,
                            })
                            .collect();
                        if !ops.is_empty() {
                            let _ = writer.send(Apply { ops }).await;
                        }
                    }
                    .into_actor(self),
                );
            }
        }
        self.deps
            .progress
            .known(&Self::progress_key(&self.deps.place));
    }
}

impl Actor for ReconcileManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(16);
        self.discover(ctx);
        let every = self.settings.base.interval.max(Duration::from_secs(1));
        ctx.run_interval(every, |act, ctx| act.discover(ctx));
    }
}

impl Supervised for ReconcileManager {}

/// Sweep every cluster now.
impl Handler<SweepNow> for ReconcileManager {
    type Result = ();
    fn handle(&mut self, _: SweepNow, _: &mut Context<Self>) {
        for addr in self.actors.values() {
            addr.do_send(SweepNow);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_budget_spaces_calls() {
        let b = Budget::new(4.0);
        let t0 = tokio::time::Instant::now();
        for _ in 0..5 {
            b.take().await;
        }
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(999), "{took:?}");
    }

    #[test]
    fn a_clusters_tuning_is_found_by_its_arn_first_then_by_its_name() {
        let tuned = |secs| Tuning {
            interval: Duration::from_secs(secs),
            ..Tuning::default()
        };
        let us = "arn:aws:ecs:us-east-1:111111111111:cluster/web";
        let eu = "arn:aws:ecs:eu-west-1:222222222222:cluster/web";
        let s = Settings {
            per_cluster: HashMap::from([(us.to_owned(), tuned(1)), ("web".to_owned(), tuned(2))]),
            ..Settings::default()
        };
        assert_eq!(s.tuning(us).interval, Duration::from_secs(1));
        assert_eq!(s.tuning(eu).interval, Duration::from_secs(2));
        assert_eq!(s.tuning("web").interval, Duration::from_secs(2));
        let other = "arn:aws:ecs:eu-west-1:222222222222:cluster/api";
        assert_eq!(s.tuning(other), Tuning::default());
    }
}
