//! `--simulate`: drives the [`Simulator`] on a timer and feeds its events to
//! the decoder, at most one batch in flight; while a batch is in flight the
//! simulated world waits, so a slow store slows the simulation, not memory.

use crate::decoder::{Decode, EventDecoder};
use crate::sim::{Config, Simulator};
use actix::prelude::*;
use slog::{info, warn, Logger};
use std::time::Duration;

const TICK: Duration = Duration::from_millis(100);
/// Most messages in one batch.
const MAX_BATCH: usize = 500;

/// Counts of the simulated truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truth {
    pub clusters: Vec<String>,
    pub tasks: usize,
    pub instances: usize,
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
    sim: Simulator,
    decoder: Addr<EventDecoder>,
    log: Logger,
    in_flight: bool,
    /// Events owed to the configured rate, carried between ticks.
    credit: f64,
}

impl SimulateSource {
    pub fn new(config: Config, decoder: Addr<EventDecoder>, log: Logger) -> Self {
        SimulateSource {
            sim: Simulator::new(config.clone()),
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
        let messages = self.sim.next_batch(churn, MAX_BATCH);
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
        info!(self.log, "simulating ECS clusters";
            "clusters" => self.sim.clusters().join(","), "instances" => self.sim.instances().len(),
            "tasks" => self.sim.tasks().len(), "events_per_second" => self.config.events_per_second,
            "seed" => self.config.seed);
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
    }
}

impl Supervised for SimulateSource {
    fn restarting(&mut self, _: &mut Context<Self>) {
        warn!(self.log, "simulator restarting with a fresh world");
        self.sim = Simulator::new(self.config.clone());
        self.in_flight = false;
        self.credit = 0.0;
    }
}

impl Handler<GetTruth> for SimulateSource {
    type Result = MessageResult<GetTruth>;

    fn handle(&mut self, _: GetTruth, _: &mut Context<Self>) -> Self::Result {
        MessageResult(Truth {
            clusters: self.sim.clusters().to_vec(),
            tasks: self.sim.tasks().len(),
            instances: self.sim.instances().len(),
            settled: self.sim.settled(),
        })
    }
}
