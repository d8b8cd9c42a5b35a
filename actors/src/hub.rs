//! StreamHub: receives every committed change, in commit order, from the
//! StoreWriter, to broadcast it to the clients of the change streams.
//!
//! This first version keeps only what it has seen (the last revision and a
//! count); client subscriptions build on it.

use crate::metrics::Metrics;
use crate::store::Change;
use actix::prelude::*;
use slog::{warn, Logger};
use std::sync::Arc;

/// Mailbox capacity: the writer waits beyond this many unhandled commits.
pub const MAILBOX: usize = 256;

/// The changes of one commit, in revision order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Committed {
    pub changes: Arc<Vec<Change>>,
}

/// The StreamHub actor.
pub struct StreamHub {
    metrics: Arc<Metrics>,
    log: Logger,
    last_revision: u64,
}

impl StreamHub {
    pub fn new(metrics: Arc<Metrics>, log: Logger) -> Self {
        StreamHub {
            metrics,
            log,
            last_revision: 0,
        }
    }
}

impl Actor for StreamHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
    }
}

impl Supervised for StreamHub {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.metrics.hub_restarts.inc();
        warn!(self.log, "StreamHub restarting");
        self.last_revision = 0;
    }
}

impl Handler<Committed> for StreamHub {
    type Result = ();

    fn handle(&mut self, msg: Committed, _: &mut Context<Self>) {
        self.metrics.hub_changes.add(msg.changes.len() as u64);
        if let Some(last) = msg.changes.last() {
            self.last_revision = self.last_revision.max(last.entry.revision);
        }
    }
}
