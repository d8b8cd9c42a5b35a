//! StoreWriter: the only writer of the store and the owner of the in-memory view.
//!
//! Start at [`StoreWriter::kick`]. Writes ([`Apply`]) queue up while a commit is
//! in flight and go to the store together in the next one (group commit), so
//! one fsync covers many events. A commit's outcomes are applied to the view,
//! handed to the StreamHub, and only then answered, so a caller that hears
//! "applied" may acknowledge its message: nothing is acknowledged before it
//! is durable.
//!
//! Readers observe the view and the health through a
//! [`Reader`](crate::reader::Reader) of the writer's [`Publisher`]: an O(1)
//! clone of the view, without a message to the writer.
//! STOPPED-task retention and tombstone expiry run on a timer.
//!
//! A commit that fails is answered with its error (callers retry; nothing
//! is acknowledged). On the embedded store it also marks the store down
//! until a write or a ping succeeds (etcd's health comes from its pings).
//! The view keeps serving: it is reloaded, in the background, only when the
//! store cannot tell whether the failed commit was stored. A panic stops the
//! actor; its supervisor restarts it with its state reset.

use crate::dirty::Dirty;
use crate::hub::{Committed, Reset, StreamHub};
use crate::metrics::Metrics;
use crate::model::{Key, Kind};
use crate::reader::Publisher;
use crate::retry::Backoff;
use crate::store::{self, Change, Feed, Op, Outcome, Store};
use crate::time::now_ms;
use crate::view::Snapshot;
use actix::prelude::*;
use slog::{error, info, warn, Logger};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Mailbox capacity: senders wait (`send().await`) beyond this many messages.
pub const MAILBOX: usize = 256;
/// How long a write may wait for the store's feed to show it before the feed
/// is presumed stuck and the view is reloaded.
const FEED_STALL: Duration = Duration::from_secs(5);
/// First and longest delay between attempts at loading the view.
const LOAD_RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Tuning of the writer.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a STOPPED task stays after `stoppedAt` (or after it was stored).
    pub stopped_task_retention: Duration,
    /// How long a deletion is remembered (should cover the queue's retention).
    pub tombstone_retention: Duration,
    /// How often retention and tombstone expiry run.
    pub housekeeping_interval: Duration,
    /// Most ops in one commit; larger groups are split over several commits.
    pub max_commit_ops: usize,
    /// How much store history to keep (older is compacted).
    pub history_retention: Duration,
    /// How often the store's reachability is checked (for readiness).
    pub ping_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            stopped_task_retention: Duration::from_secs(24 * 3600),
            tombstone_retention: Duration::from_secs(4 * 86400),
            housekeeping_interval: Duration::from_secs(30),
            max_commit_ops: 2048,
            history_retention: Duration::from_secs(3600),
            ping_interval: Duration::from_secs(1),
        }
    }
}

/// Apply these ops under the version rule; answered after the durable commit.
#[derive(Message)]
#[rtype(result = "Result<Vec<Outcome>, store::Error>")]
pub struct Apply {
    pub ops: Vec<Op>,
}

/// As [`Apply`], for the leader of `name` (a cluster's reconcile): each
/// write applies only while this replica still leads it, so a replica that
/// lost the lead (frozen, cut off) writes nothing.
#[derive(Message)]
#[rtype(result = "Result<Vec<Outcome>, store::Error>")]
pub struct ApplyAsLeader {
    pub ops: Vec<Op>,
    pub name: String,
}

/// Run retention and tombstone expiry now (also runs on a timer).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Housekeep;

/// Where the writer is in its life, with what it holds there.
enum Phase {
    /// Loading the view from the store (retried with backoff); writes wait.
    Loading,
    /// Loaded, no commit in flight: the next write starts one.
    Idle,
    /// A commit is in flight; writes queue for the next one. `replies` holds
    /// how many of its operations each caller wrote, in order, and where to
    /// answer it (`None` for the writer's own retention deletions).
    Committing {
        started: Instant,
        replies: Vec<(usize, Option<Reply>)>,
    },
    /// The commit landed; its changes are on their way to the view and the
    /// StreamHub, and its callers are answered once they are there.
    Publishing,
}

type Reply = oneshot::Sender<Result<Vec<Outcome>, store::Error>>;

struct Pending {
    ops: Vec<Op>,
    /// `None` for the writer's own deletions (retention).
    reply: Option<Reply>,
    /// Written only while this replica leads this name ([`ApplyAsLeader`]).
    fence: Option<String>,
}

/// The StoreWriter actor.
pub struct StoreWriter {
    store: Arc<dyn Store>,
    hub: Addr<StreamHub>,
    config: Config,
    metrics: Arc<Metrics>,
    log: Logger,
    phase: Phase,
    view: Snapshot,
    publisher: Publisher,
    pending: VecDeque<Pending>,
    load_backoff: Backoff,
    retention_queued: bool,
    /// Whether the view follows the store's own feed (changes by any
    /// replica) rather than this writer's commit outcomes.
    fed: bool,
    /// Bumped at every (re)load, so batches of an abandoned feed are ignored.
    generation: u64,
    /// Writers answered once the feed brings the view to their revision.
    awaiting_feed: Vec<(u64, Reply, Vec<Outcome>, Instant)>,
    /// Where changed tasks mark their service, when services are refreshed.
    dirty: Option<Dirty>,
}

/// A batch from the store's feed, tagged with the load it belongs to.
struct FeedItem(u64, store::Result<Vec<Change>>);

/// Adapts a [`Feed`] to the stream actix wants. Batches that are already
/// waiting are handed on as one (up to [`FEED_COALESCE`] changes), so a
/// burst of small etcd revisions reaches the hub, and each stream's buffer,
/// as a few commits rather than one entry per revision.
struct FeedStream {
    generation: u64,
    feed: Feed,
    /// An error met while gathering, handed on next.
    stashed: Option<store::Result<Vec<Change>>>,
}

/// Most changes gathered from the feed into one batch.
const FEED_COALESCE: usize = 4096;

impl FeedStream {
    fn new(generation: u64, feed: Feed) -> Self {
        FeedStream {
            generation,
            feed,
            stashed: None,
        }
    }
}

impl futures_core::Stream for FeedStream {
    type Item = FeedItem;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<FeedItem>> {
        use std::task::Poll;
        let generation = self.generation;
        let first = match self.stashed.take() {
            Some(batch) => batch,
            None => match self.feed.poll_recv(cx) {
                Poll::Ready(Some(batch)) => batch,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            },
        };
        let Ok(mut changes) = first else {
            return Poll::Ready(Some(FeedItem(generation, first)));
        };
        while changes.len() < FEED_COALESCE {
            match self.feed.poll_recv(cx) {
                Poll::Ready(Some(Ok(more))) => changes.extend(more),
                Poll::Ready(Some(Err(e))) => {
                    self.stashed = Some(Err(e));
                    break;
                }
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        Poll::Ready(Some(FeedItem(generation, Ok(changes))))
    }
}

impl StoreWriter {
    /// Marks the services whose tasks change (own commits and the feed's)
    /// in `dirty`, for their reconciler to describe them again.
    pub fn with_services(mut self, dirty: Option<Dirty>) -> Self {
        self.dirty = dirty;
        self
    }

    pub fn new(
        store: Arc<dyn Store>,
        hub: Addr<StreamHub>,
        publisher: Publisher,
        config: Config,
        metrics: Arc<Metrics>,
        log: Logger,
    ) -> Self {
        publisher.view(None);
        StoreWriter {
            publisher,
            store,
            hub,
            config,
            metrics,
            log,
            phase: Phase::Loading,
            view: Snapshot::default(),
            pending: VecDeque::new(),
            load_backoff: Backoff::new(LOAD_RETRY.0, LOAD_RETRY.1),
            retention_queued: false,
            fed: false,
            generation: 0,
            awaiting_feed: Vec::new(),
            dirty: None,
        }
    }

    fn load(&mut self, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        // `wait`: no other message is handled until the view is loaded (or not).
        ctx.wait(async move { store.load().await }.into_actor(self).map(
            |res, act, ctx| match res {
                Ok(loaded) => {
                    let mut view = Snapshot::at(loaded.revision);
                    for e in loaded.entries {
                        view.insert(e);
                    }
                    act.metrics.cluster_state.rebuild(view.all());
                    info!(act.log, "view loaded";
                            "tasks" => view.of(Kind::Task).len(),
                            "instances" => view.of(Kind::Instance).len(),
                            "services" => view.of(Kind::Service).len(),
                            "tombstones" => loaded.tombstones, "revision" => view.revision);
                    act.generation += 1;
                    // Changes between the old view and this one never reach the
                    // hub: its streams catch up from the store's history.
                    act.hub.do_send(Reset {
                        revision: view.revision,
                    });
                    if let Some(feed) = act.store.feed(view.revision + 1) {
                        act.fed = true;
                        ctx.add_stream(FeedStream::new(act.generation, feed));
                    }
                    act.view = view;
                    act.publisher.store_up(true);
                    act.release();
                    // A reload while a commit is in flight leaves it in flight.
                    if matches!(act.phase, Phase::Loading) {
                        act.phase = Phase::Idle;
                    }
                    act.load_backoff.reset();
                    act.update_gauges();
                    act.kick(ctx);
                }
                Err(e) => {
                    act.metrics.store_errors.inc();
                    let delay = act.load_backoff.delay();
                    error!(act.log, "cannot load the view; retrying";
                            "error" => %e, "retry_in_ms" => delay.as_millis() as u64);
                    ctx.run_later(delay, |act, ctx| act.load(ctx));
                }
            },
        ));
    }

    /// After every change of the view: publish it and its gauges.
    fn update_gauges(&self) {
        self.publisher.view(Some(self.view.clone()));
        for (kind, gauge) in Kind::ALL.iter().zip(&self.metrics.view_entities) {
            gauge.set(self.view.of(*kind).len() as u64);
        }
        self.metrics.store_revision.set(self.view.revision);
    }

    /// Starts a commit of everything pending, unless one is in flight.
    fn kick(&mut self, ctx: &mut Context<Self>) {
        if !matches!(self.phase, Phase::Idle) || self.pending.is_empty() {
            return;
        }
        let mut ops = Vec::new();
        let mut replies = Vec::new();
        // One commit holds writes under one fence. A store only this process
        // writes (it has no feed) needs no fence: every cluster's writes go
        // in one commit (1,500 reconcilers' first sweeps are not 1,500 fsyncs).
        let fenced = self.fed;
        let fence = match fenced {
            true => self.pending.front().and_then(|p| p.fence.clone()),
            false => None,
        };
        while let Some(p) = self.pending.front() {
            let full = !ops.is_empty() && ops.len() + p.ops.len() > self.config.max_commit_ops;
            if full || (fenced && p.fence != fence) {
                break;
            }
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            replies.push((p.ops.len(), p.reply));
            ops.extend(p.ops);
        }
        self.phase = Phase::Committing {
            started: Instant::now(),
            replies,
        };
        let store = self.store.clone();
        ctx.spawn(
            async move {
                match fence {
                    Some(name) => store.commit_as_leader(ops, now_ms(), &name).await,
                    None => store.commit(ops, now_ms()).await,
                }
            }
            .into_actor(self)
            .map(|res, act, ctx| act.committed(res, ctx)),
        );
    }

    fn committed(&mut self, res: store::Result<Vec<Outcome>>, ctx: &mut Context<Self>) {
        let (started, replies) = match std::mem::replace(&mut self.phase, Phase::Publishing) {
            Phase::Committing { started, replies } => (started, replies),
            other => {
                // A restart drops the commit's future with its phase: not reached.
                error!(self.log, "a commit ended outside the Committing phase");
                self.phase = other;
                return;
            }
        };
        let outcomes = match res {
            Ok(o) => o,
            Err(e) => {
                self.metrics.store_errors.inc();
                for (_, reply) in replies.into_iter() {
                    if let Some(tx) = reply {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
                self.retention_queued = false;
                self.commit_failed(e, ctx);
                return;
            }
        };
        // A store the view follows by feed (etcd) is judged by its pings.
        if !self.fed && self.publisher.store_up(true) {
            info!(self.log, "store writable again");
        }
        self.metrics.store_commits.inc();
        self.metrics
            .store_commit_seconds
            .inc_by(started.elapsed().as_secs_f64());
        // A fed view learns of these changes (and other replicas') from the feed.
        let changes: Vec<_> = if self.fed {
            Vec::new()
        } else {
            outcomes
                .iter()
                .filter_map(|o| match o {
                    Outcome::Applied(c) => Some(c.clone()),
                    Outcome::Stale => None,
                })
                .collect()
        };
        let publish = self.publish(changes);
        ctx.spawn(publish.into_actor(self).map(move |(), act, ctx| {
            let mut outcomes = outcomes.into_iter();
            for (n, reply) in replies {
                let part: Vec<Outcome> = outcomes.by_ref().take(n).collect();
                match reply {
                    Some(tx) => act.answer(tx, part),
                    None => {
                        act.retention_queued = false;
                        let n = part
                            .iter()
                            .filter(|o| matches!(o, Outcome::Applied(_)))
                            .count();
                        act.metrics.retention_deletions.inc_by(n as u64);
                        if n > 0 {
                            info!(act.log, "expired STOPPED tasks"; "count" => n);
                        }
                    }
                }
            }
            act.phase = Phase::Idle;
            act.kick(ctx);
        }));
    }

    /// Answers a writer of `outcomes` once the view shows them: at once when
    /// the view follows this writer's commits, else when the feed has caught
    /// up (so a caller that reads after its write sees it).
    fn answer(&mut self, tx: Reply, outcomes: Vec<Outcome>) {
        let newest = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Applied(c) => Some(c.entry.revision),
                Outcome::Stale => None,
            })
            .max()
            .unwrap_or(0);
        if newest <= self.view.revision {
            let _ = tx.send(Ok(outcomes));
        } else {
            self.awaiting_feed
                .push((newest, tx, outcomes, Instant::now()));
        }
    }

    /// Answers the writers whose changes the view now shows.
    fn release(&mut self) {
        let revision = self.view.revision;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.awaiting_feed)
            .into_iter()
            .partition(|(rev, _, _, _)| *rev <= revision);
        self.awaiting_feed = waiting;
        for (_, tx, outcomes, _) in ready {
            let _ = tx.send(Ok(outcomes));
        }
    }

    /// A feed that has not shown a committed write within `FEED_STALL` is
    /// presumed stuck: the view is rebuilt from a full load (built aside and
    /// swapped in) with a new feed, which also answers the waiting writers.
    fn check_feed(&mut self, ctx: &mut Context<Self>) {
        let stuck = self
            .awaiting_feed
            .iter()
            .any(|(_, _, _, since)| since.elapsed() > FEED_STALL);
        if stuck && !matches!(self.phase, Phase::Loading) {
            warn!(self.log, "store feed is behind its own writes; reloading the view";
                "waiting" => self.awaiting_feed.len(), "view_revision" => self.view.revision);
            self.metrics.feed_reloads.inc();
            self.generation += 1;
            self.load(ctx);
        }
    }

    /// Applies committed changes to the view; the returned future hands them
    /// to the StreamHub (waiting while its mailbox is full).
    fn publish(&mut self, changes: Vec<Change>) -> impl std::future::Future<Output = ()> + 'static {
        for c in &changes {
            let e = &c.entry;
            let was = Key {
                cluster_arn: c
                    .moved_from
                    .clone()
                    .unwrap_or_else(|| e.cluster_arn.clone()),
                arn: e.arn.clone(),
            };
            let old = self.view.of(e.kind).get(&was).cloned();
            self.view.apply(c);
            let new = (!c.deleted).then_some(e.as_ref());
            self.metrics.cluster_state.changed(old.as_deref(), new);
        }
        if let Some(dirty) = &self.dirty {
            dirty.tasks_changed(&changes);
        }
        self.update_gauges();
        let hub = self.hub.clone();
        let log = self.log.clone();
        async move {
            if !changes.is_empty() {
                let changes = Arc::new(changes);
                if let Err(e) = hub.send(Committed { changes }).await {
                    error!(log, "StreamHub did not take a commit"; "error" => %e);
                }
            }
        }
    }

    /// After a commit failed (its callers are told, and retry: a queue
    /// redelivers). The view keeps serving reads throughout.
    fn commit_failed(&mut self, e: store::Error, ctx: &mut Context<Self>) {
        if self.fed {
            // The view follows the store's feed, which shows whatever part
            // of the commit took effect; the store's pings tell whether it
            // is up (a commit can fail on one etcd member while others answer).
            warn!(self.log, "commit failed; callers retry"; "error" => %e);
            self.phase = Phase::Idle;
            self.kick(ctx);
        } else if let store::Error::Unavailable(_) = &e {
            // Nothing of it was stored: the view stays as it is, and nothing
            // is received until the store takes writes again.
            self.publisher.store_up(false);
            error!(self.log, "store write failed; nothing of it is acknowledged, callers retry";
                "error" => %e);
            self.phase = Phase::Idle;
            self.kick(ctx);
        } else {
            // What the store holds is unknown: read it again, serving the
            // current view until the new one is built and swapped in.
            error!(self.log, "store write failed and may have been stored; reloading the view";
                "error" => %e);
            self.phase = Phase::Loading;
            self.generation += 1;
            self.load(ctx);
        }
    }

    fn ping(&mut self, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        ctx.spawn(
            async move { store.ping().await }
                .into_actor(self)
                .map(|res, act, _| {
                    if act.publisher.store_up(res.is_ok()) {
                        match &res {
                            Ok(()) => info!(act.log, "store reachable again"),
                            Err(e) => warn!(act.log, "store unreachable"; "error" => %e),
                        }
                    }
                }),
        );
    }

    fn housekeep(&mut self, ctx: &mut Context<Self>) {
        if matches!(self.phase, Phase::Loading) {
            return;
        }
        let now = now_ms();
        if !self.retention_queued {
            let cutoff = now - self.config.stopped_task_retention.as_millis() as i64;
            let ops: Vec<Op> = self
                .view
                .of(Kind::Task)
                .values()
                .filter(|e| {
                    e.is_stopped_task() && e.stopped_at_ms.unwrap_or(e.stored_at_ms) <= cutoff
                })
                .take(self.config.max_commit_ops)
                .map(|e| Op::Delete {
                    arn: e.arn.clone(),
                    if_revision: e.revision,
                })
                .collect();
            if !ops.is_empty() {
                self.retention_queued = true;
                self.pending.push_back(Pending {
                    ops,
                    reply: None,
                    fence: None,
                });
                self.kick(ctx);
            }
        }
        let before = now - self.config.tombstone_retention.as_millis() as i64;
        let store = self.store.clone();
        let retention = self.config.history_retention;
        ctx.spawn(
            async move {
                store.compact_history(now, retention).await?;
                store.purge_tombstones(before).await
            }
            .into_actor(self)
            .map(|res, act, _| match res {
                Ok(0) => {}
                Ok(n) => info!(act.log, "forgot old tombstones"; "count" => n),
                Err(e) => {
                    warn!(act.log, "history compaction or tombstone purge failed"; "error" => %e)
                }
            }),
        );
    }
}

impl Actor for StoreWriter {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Readers get `Unavailable` until a restarted writer has loaded again.
        self.publisher.view(None);
    }

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
        self.load(ctx);
        ctx.run_interval(self.config.housekeeping_interval, |act, ctx| {
            act.housekeep(ctx)
        });
        ctx.run_interval(self.config.ping_interval, |act, ctx| {
            act.ping(ctx);
            act.check_feed(ctx);
        });
    }
}

impl StreamHandler<FeedItem> for StoreWriter {
    fn handle(&mut self, FeedItem(generation, batch): FeedItem, ctx: &mut Context<Self>) {
        if generation != self.generation {
            return;
        }
        match batch {
            Ok(changes) => {
                let publish = self.publish(changes);
                self.release();
                // `wait`: the next batch is not taken before the hub has this one.
                ctx.wait(publish.into_actor(self));
            }
            Err(e) => {
                warn!(self.log, "store feed lost; reloading the view"; "error" => %e);
                // The current view serves until the new one is built and swapped in.
                self.generation += 1;
                self.load(ctx);
            }
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // A feed ends when it is replaced; a reload starts the next one.
    }
}

impl Supervised for StoreWriter {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.metrics.writer_restarts.inc();
        warn!(self.log, "StoreWriter restarting: reloading the view from the store";
            "dropped_requests" => self.pending.len());
        // Reset: dropping the pending replies tells their callers to retry.
        self.phase = Phase::Loading;
        self.view = Snapshot::default();
        self.publisher.view(None);
        self.pending.clear();
        self.retention_queued = false;
        self.fed = false;
        self.generation += 1;
        // Dropped replies tell their callers to retry (a no-op if it was written).
        self.awaiting_feed.clear();
    }
}

impl Handler<Apply> for StoreWriter {
    type Result = ResponseFuture<Result<Vec<Outcome>, store::Error>>;

    fn handle(&mut self, msg: Apply, ctx: &mut Context<Self>) -> Self::Result {
        self.enqueue(msg.ops, None, ctx)
    }
}

impl Handler<ApplyAsLeader> for StoreWriter {
    type Result = ResponseFuture<Result<Vec<Outcome>, store::Error>>;

    fn handle(&mut self, msg: ApplyAsLeader, ctx: &mut Context<Self>) -> Self::Result {
        self.enqueue(msg.ops, Some(msg.name), ctx)
    }
}

impl StoreWriter {
    /// Queues a caller's `ops` for the next commit; the answer comes once
    /// they are durable (and shown by the view), or says why not.
    fn enqueue(
        &mut self,
        ops: Vec<Op>,
        fence: Option<String>,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<Vec<Outcome>, store::Error>> {
        if ops.is_empty() {
            return Box::pin(async { Ok(Vec::new()) });
        }
        let (tx, rx) = oneshot::channel();
        self.pending.push_back(Pending {
            ops,
            reply: Some(tx),
            fence,
        });
        self.kick(ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(store::Error::Unavailable("the writer restarted".into())))
        })
    }
}

impl Handler<Housekeep> for StoreWriter {
    type Result = ();

    fn handle(&mut self, _: Housekeep, ctx: &mut Context<Self>) {
        self.housekeep(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Entry;
    use crate::reader::{self, Reader};
    use crate::store::Embedded;

    /// A writer (and its hub) on an embedded store in `dir`, and its reader.
    fn start(dir: &std::path::Path, config: Config) -> (Addr<StoreWriter>, Reader, Arc<Metrics>) {
        start_on(Arc::new(Embedded::open(dir).unwrap()), config)
    }

    fn start_on(
        store: Arc<dyn Store>,
        config: Config,
    ) -> (Addr<StoreWriter>, Reader, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let log = Logger::root(slog::Discard, slog::o!());
        let hub = StreamHub::new(metrics.clone(), log.clone()).start();
        let (publisher, reader) = reader::channel(store.clone());
        let writer = StoreWriter::new(store, hub, publisher, config, metrics.clone(), log).start();
        (writer, reader, metrics)
    }

    fn put(arn: &str, version: u64, status: &str) -> Op {
        Op::Put(Entry::test_task(arn, Some(version), status))
    }

    async fn apply(w: &Addr<StoreWriter>, ops: Vec<Op>) -> Vec<bool> {
        let outcomes = w.send(Apply { ops }).await.unwrap().unwrap();
        outcomes
            .iter()
            .map(|o| matches!(o, Outcome::Applied(_)))
            .collect()
    }

    #[actix::test]
    async fn a_write_is_answered_once_durable_and_readers_see_it_then() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(Embedded::open(dir.path()).unwrap());
        let (w, reader, metrics) = start_on(store.clone(), Config::default());
        reader.wait_for(|h| h.loaded && h.store_up).await;
        assert_eq!(reader.snapshot().unwrap().revision, 0);
        // Applied in order under the version rule: a lower version is stale.
        let a = "arn:aws:ecs:r:1:task/c/a";
        assert_eq!(
            apply(&w, vec![put(a, 2, "RUNNING"), put(a, 1, "PENDING")]).await,
            [true, false]
        );
        let snap = reader.snapshot().unwrap();
        assert_eq!((snap.revision, snap.of(Kind::Task).len()), (1, 1));
        assert_eq!(
            snap.of(Kind::Task).values().next().unwrap().status,
            "RUNNING"
        );
        assert_eq!(metrics.store_commits.get(), 1);
        // Committed to the store before the answer: what a restart loads.
        let loaded = store.load().await.unwrap();
        assert_eq!((loaded.revision, loaded.entries.len()), (1, 1));
    }

    #[actix::test]
    async fn stopped_tasks_expire_after_their_retention() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            stopped_task_retention: Duration::ZERO,
            ..Config::default()
        };
        let (w, reader, metrics) = start(dir.path(), config);
        let (gone, kept) = ("arn:aws:ecs:r:1:task/c/gone", "arn:aws:ecs:r:1:task/c/kept");
        apply(&w, vec![put(gone, 3, "STOPPED"), put(kept, 1, "RUNNING")]).await;
        w.send(Housekeep).await.unwrap();
        let mut left = Vec::new();
        for _ in 0..100 {
            left = reader
                .snapshot()
                .unwrap()
                .of(Kind::Task)
                .values()
                .map(|e| e.arn.clone())
                .collect();
            if left.len() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(left, [kept]);
        assert_eq!(metrics.retention_deletions.get(), 1);
        // The deletion is remembered: the old event cannot bring it back.
        assert_eq!(apply(&w, vec![put(gone, 3, "STOPPED")]).await, [false]);
    }
}
