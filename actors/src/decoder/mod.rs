//! EventDecoder: turns raw messages from a source into store ops, sends them to
//! the StoreWriter, and tells the source what became of each message, so that
//! the source acknowledges only what is durably applied.
//!
//! A message that cannot be decoded is counted and logged once with its id and
//! the reason; it never holds up the good messages of its batch.

pub mod decode;

use crate::accounts::Place;
use crate::dirty::Dirty;
use crate::metrics::{Metrics, RefreshReason};
use crate::store::{self, Op, Outcome};
use crate::writer::{Apply, StoreWriter};
use actix::prelude::*;
use decode::{decode, Decoded};
use slog::{debug, warn, Logger};
use std::sync::Arc;

/// Mailbox capacity: sources wait beyond this many batches.
pub const MAILBOX: usize = 64;

/// One message from a source.
#[derive(Debug, Clone)]
pub struct RawMessage {
    /// The source's id for it (SQS message id, replay line number, …).
    pub id: String,
    pub body: String,
    /// How many times the source has delivered it (SQS's
    /// `ApproximateReceiveCount`; 1 elsewhere). A bad message is counted and
    /// logged on its first delivery only.
    pub receive_count: u32,
}

impl RawMessage {
    /// A message delivered for the first time.
    pub fn new(id: impl Into<String>, body: impl Into<String>) -> Self {
        RawMessage {
            id: id.into(),
            body: body.into(),
            receive_count: 1,
        }
    }
}

/// A batch of messages to decode and apply.
#[derive(Message)]
#[rtype(result = "Result<Vec<MessageOutcome>, store::Error>")]
pub struct Decode {
    pub messages: Vec<RawMessage>,
}

/// What became of one message. Every outcome but an error of the whole batch
/// means the message is done with and may be acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageOutcome {
    Applied,
    /// Its version was not newer than the stored one: a no-op.
    Stale,
    /// A valid event of a type the service does not store.
    Ignored,
    /// Undecodable: to be dead-lettered.
    Invalid(decode::Error),
}

/// The EventDecoder actor.
pub struct EventDecoder {
    writer: Addr<StoreWriter>,
    metrics: Arc<Metrics>,
    log: Logger,
    /// Where service events mark their service, when there is an ECS to
    /// describe it; without one they are ignored.
    dirty: Option<Dirty>,
    /// The accounts and regions reconciled, when reconciling: events from
    /// elsewhere are counted (`css_events_unreconciled_total`).
    places: Option<Vec<Place>>,
}

impl EventDecoder {
    pub fn new(writer: Addr<StoreWriter>, metrics: Arc<Metrics>, log: Logger) -> Self {
        EventDecoder {
            writer,
            metrics,
            log,
            dirty: None,
            places: None,
        }
    }

    /// Counts the events from outside `places` (none: nothing is reconciled).
    pub fn with_places(mut self, places: Option<Vec<Place>>) -> Self {
        self.places = places;
        self
    }

    /// Counts an event of the cluster `cluster_arn` if no reconciler covers its place.
    fn count_place(&self, cluster_arn: &str) {
        let Some(places) = &self.places else {
            return;
        };
        let here = Place::of_arn(cluster_arn);
        if !places.iter().any(|p| p.holds(&here)) {
            self.metrics.event_unreconciled(&here);
        }
    }

    /// Service events mark their service in `dirty` (applied) instead of
    /// being ignored.
    pub fn with_services(mut self, dirty: Option<Dirty>) -> Self {
        self.dirty = dirty;
        self
    }
}

impl Actor for EventDecoder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
    }
}

impl Supervised for EventDecoder {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.metrics.decoder_restarts.inc();
        warn!(self.log, "EventDecoder restarting");
    }
}

impl Handler<Decode> for EventDecoder {
    type Result = ResponseFuture<Result<Vec<MessageOutcome>, store::Error>>;

    fn handle(&mut self, msg: Decode, _: &mut Context<Self>) -> Self::Result {
        let n = msg.messages.len();
        self.metrics.events_received.inc_by(n as u64);
        let mut outcomes = vec![MessageOutcome::Stale; n];
        let mut ops = Vec::with_capacity(n);
        let mut slots = Vec::with_capacity(n);
        for (i, m) in msg.messages.iter().enumerate() {
            match decode(&m.body) {
                Ok(Decoded::Entity(e)) => {
                    self.count_place(&e.cluster_arn);
                    ops.push(Op::Put(e));
                    slots.push(i);
                }
                Ok(Decoded::Service {
                    cluster_arn,
                    service_arn,
                    detail_type,
                }) => {
                    self.count_place(&cluster_arn);
                    let marked = self
                        .dirty
                        .as_ref()
                        .is_some_and(|d| d.mark(&cluster_arn, &service_arn, RefreshReason::Event));
                    if marked {
                        self.metrics.events_applied.inc();
                        outcomes[i] = MessageOutcome::Applied;
                    } else {
                        // No ECS to ask (or no reconciler of that cluster).
                        self.metrics.events_ignored.inc();
                        debug!(self.log, "ignored event"; "message_id" => &m.id, "detail_type" => detail_type);
                        outcomes[i] = MessageOutcome::Ignored;
                    }
                }
                Ok(Decoded::Ignored(detail_type)) => {
                    self.metrics.events_ignored.inc();
                    debug!(self.log, "ignored event"; "message_id" => &m.id, "detail_type" => detail_type);
                    outcomes[i] = MessageOutcome::Ignored;
                }
                Err(e) => {
                    if m.receive_count <= 1 {
                        self.metrics.events_invalid.inc();
                        warn!(self.log, "invalid event"; "message_id" => &m.id, "reason" => %e);
                    }
                    outcomes[i] = MessageOutcome::Invalid(e);
                }
            }
        }
        let writer = self.writer.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            if ops.is_empty() {
                return Ok(outcomes);
            }
            let applied = writer
                .send(Apply { ops })
                .await
                .map_err(|e| store::Error::Unavailable(format!("writer unreachable: {e}")))??;
            for (slot, outcome) in slots.into_iter().zip(applied) {
                outcomes[slot] = match outcome {
                    Outcome::Applied(_) => {
                        metrics.events_applied.inc();
                        MessageOutcome::Applied
                    }
                    Outcome::Stale => {
                        metrics.events_stale.inc();
                        MessageOutcome::Stale
                    }
                };
            }
            Ok(outcomes)
        })
    }
}
