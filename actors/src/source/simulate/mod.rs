//! `--simulate`: drives the [`Simulator`] on a timer and feeds its events to
//! the decoder, at most one batch in flight; while a batch is in flight the
//! simulated world waits, so a slow store slows the simulation, not memory.

use crate::decoder::{Decode, EventDecoder};
use crate::ecs_client::{self as ecs, Described, Ecs, Page, TaskStatus};

mod world;
use crate::store::BoxFuture;
use actix::prelude::*;
use slog::{info, warn, Logger};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
pub use world::{Config, Simulator};

/// The simulated world, shared by the source (its events) and [`SimEcs`]
/// (its answers to the reconciler).
pub type SharedSim = Arc<Mutex<Simulator>>;

fn lock(sim: &SharedSim) -> MutexGuard<'_, Simulator> {
    sim.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

const TICK: Duration = Duration::from_millis(100);
/// Most messages in one batch.
const MAX_BATCH: usize = 500;

/// Counts of the simulated truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truth {
    pub clusters: Vec<String>,
    pub tasks: usize,
    pub instances: usize,
    pub services: usize,
    /// Initial state delivered and no late event waiting.
    pub settled: bool,
}

/// Ask the simulator for its truth.
#[derive(Message)]
#[rtype(result = "Truth")]
pub struct GetTruth;

/// The simulate source actor.
pub struct SimulateSource {
    config: Config,
    sim: SharedSim,
    decoder: Addr<EventDecoder>,
    log: Logger,
    in_flight: bool,
    /// Events owed to the configured rate, carried between ticks.
    credit: f64,
}

impl SimulateSource {
    pub fn new(config: Config, sim: SharedSim, decoder: Addr<EventDecoder>, log: Logger) -> Self {
        SimulateSource {
            sim,
            config,
            decoder,
            log,
            in_flight: false,
            credit: 0.0,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let rate = self.config.events_per_second.max(0.0);
        // At most a second's worth of owed events, so a stall is not followed by a burst.
        self.credit = (self.credit + rate * TICK.as_secs_f64()).min(rate.max(1.0));
        if self.in_flight {
            return;
        }
        let churn = self.credit.floor() as usize;
        self.credit -= churn as f64;
        let messages = lock(&self.sim).next_batch(churn, MAX_BATCH);
        if messages.is_empty() {
            return;
        }
        self.in_flight = true;
        let send = self.decoder.send(Decode { messages });
        ctx.spawn(send.into_actor(self).map(|res, act, _| {
            act.in_flight = false;
            match res {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(act.log, "simulated batch not stored"; "error" => %e),
                Err(e) => warn!(act.log, "decoder unreachable"; "error" => %e),
            }
        }));
    }
}

impl Actor for SimulateSource {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let sim = lock(&self.sim);
        info!(self.log, "simulating ECS clusters";
            "clusters" => sim.clusters().join(","), "instances" => sim.instances().len(),
            "tasks" => sim.tasks().len(), "events_per_second" => self.config.events_per_second,
            "seed" => self.config.seed, "drop_rate" => self.config.drop_rate);
        drop(sim);
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
    }
}

impl Supervised for SimulateSource {
    fn restarting(&mut self, _: &mut Context<Self>) {
        warn!(self.log, "simulator restarting");
        self.in_flight = false;
        self.credit = 0.0;
    }
}

impl Handler<GetTruth> for SimulateSource {
    type Result = MessageResult<GetTruth>;

    fn handle(&mut self, _: GetTruth, _: &mut Context<Self>) -> Self::Result {
        let sim = lock(&self.sim);
        MessageResult(Truth {
            clusters: sim.clusters().to_vec(),
            tasks: sim.tasks().len(),
            instances: sim.instances().len(),
            services: sim.services().len(),
            settled: sim.settled(),
        })
    }
}

/// The simulator answering the reconciler's ECS questions, so drift (from
/// `drop_rate`) and its repair can be seen with no AWS account.
pub struct SimEcs {
    pub sim: SharedSim,
    /// The account and region it answers for: `ListClusters` lists the
    /// simulator's clusters there (all of them for an unknown place).
    pub place: crate::accounts::Place,
}

fn ready<T: Send + 'static>(v: ecs::Result<T>) -> BoxFuture<'static, ecs::Result<T>> {
    Box::pin(async move { v })
}

fn describe(
    arns: Vec<String>,
    mut find: impl FnMut(&str) -> Option<crate::model::Entry>,
) -> Described {
    let mut d = Described::default();
    for arn in arns {
        match find(&arn) {
            Some(e) => d.entries.push(e),
            None => d.failures.push((arn, ecs::Failure::Missing)),
        }
    }
    d
}

impl SimEcs {
    /// `answer` about the simulator's cluster `cluster` (a name or an ARN),
    /// given its index; ECS's ClusterNotFound for a cluster it lacks.
    fn in_cluster<T: Send + 'static>(
        &self,
        cluster: &str,
        answer: impl FnOnce(&Simulator, usize) -> T,
    ) -> BoxFuture<'_, ecs::Result<T>> {
        let sim = lock(&self.sim);
        ready(match sim.cluster_index(cluster) {
            Some(c) => Ok(answer(&sim, c)),
            None => Err(ecs::Error::ClusterNotFound(cluster.to_owned())),
        })
    }
}

/// One page holding every ARN.
fn page(arns: Vec<String>) -> Page {
    Page { arns, next: None }
}

impl Ecs for SimEcs {
    fn list_clusters(&self, _: Option<String>) -> BoxFuture<'_, ecs::Result<Page>> {
        let sim = lock(&self.sim);
        let arns = (0..sim.clusters().len())
            .map(|c| sim.cluster_arn_of(c))
            .filter(|arn| self.place.holds(&crate::accounts::Place::of_arn(arn)))
            .collect();
        ready(Ok(page(arns)))
    }

    fn list_container_instances(
        &self,
        cluster: &str,
        _: Option<String>,
    ) -> BoxFuture<'_, ecs::Result<Page>> {
        self.in_cluster(cluster, |sim, c| {
            let of_c = sim.instances().iter().filter(|i| i.cluster == c);
            page(of_c.map(|i| i.arn.clone()).collect())
        })
    }

    fn describe_container_instances(
        &self,
        _: &str,
        arns: Vec<String>,
    ) -> BoxFuture<'_, ecs::Result<Described>> {
        let mut sim = lock(&self.sim);
        ready(Ok(describe(arns, |a| sim.instance_entry(a))))
    }

    fn list_tasks(
        &self,
        cluster: &str,
        status: TaskStatus,
        _: Option<String>,
    ) -> BoxFuture<'_, ecs::Result<Page>> {
        let want = match status {
            TaskStatus::Running => "RUNNING",
            TaskStatus::Stopped => "STOPPED",
        };
        self.in_cluster(cluster, |sim, c| {
            let of_c = sim.tasks_of(c).filter(|t| t.desired_status == want);
            page(of_c.map(|t| t.arn.clone()).collect())
        })
    }

    fn describe_tasks(&self, _: &str, arns: Vec<String>) -> BoxFuture<'_, ecs::Result<Described>> {
        let mut sim = lock(&self.sim);
        ready(Ok(describe(arns, |a| sim.task_entry(a))))
    }

    fn list_services(&self, cluster: &str, _: Option<String>) -> BoxFuture<'_, ecs::Result<Page>> {
        self.in_cluster(cluster, |sim, c| page(sim.service_arns(c)))
    }

    fn describe_services(
        &self,
        cluster: &str,
        services: Vec<String>,
    ) -> BoxFuture<'_, ecs::Result<Described>> {
        self.in_cluster(cluster, |sim, c| {
            describe(services, |s| sim.service_entry(c, s))
        })
    }
}
