//! StreamHub: receives every committed change, in revision order, from the
//! StoreWriter (which, on etcd, has it from the watch, so other replicas'
//! changes arrive too), and broadcasts it to the change streams' subscriptions.
//!
//! Each subscription is a bounded channel of *pieces*, the items of one
//! commit that it wants (shared, rendered once): broadcasting never waits,
//! and one large commit (a sweep's deletions, a first sweep) is one entry,
//! which a client that keeps reading takes whole. A client is too slow when
//! it falls behind over time: its channel holds `buffer` pieces it has not
//! started, or more than `buffer` items have waited for it while it took
//! nothing for [`STALL`]. It is then cut (`TooSlow`, with the revision to
//! resume from). The hub also keeps a ring of the latest changes, so that a
//! stream that caught up from the store's history can go live from the exact
//! revision it reached: no gap, no duplicate ([`Subscribe`]). A stream that
//! resumes a little behind (one just cut as too slow) catches up from the
//! ring itself, in pieces of already rendered items.

use crate::metrics::Metrics;
use crate::model::{Entry, Kind, SharedEntry};
use crate::store::Change;
use actix::prelude::*;
use bytes::Bytes;
use slog::{debug, warn, Logger};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

/// Mailbox capacity: the writer waits beyond this many unhandled commits.
pub const MAILBOX: usize = 256;
/// Changes kept for streams going live.
pub const RING: usize = 4096;
/// Most items handed to a catching-up stream at once.
const BACKLOG_PIECE: usize = 128;
/// How long a subscription with more than its buffer's worth of items
/// waiting may go without taking one before it is cut.
pub const STALL: Duration = Duration::from_secs(5);

/// The items of one commit that a subscription wants, in revision order.
type Piece = Vec<Arc<Item>>;

/// One change as a stream sends it: the item wrapper rendered once, shared by
/// every subscription.
#[derive(Debug)]
pub struct Item {
    pub revision: u64,
    pub kind: Kind,
    pub deleted: bool,
    pub entry: SharedEntry,
    /// `{"entity":…,"metadata":{…}}`, without a newline.
    pub line: Bytes,
}

impl Item {
    pub fn new(change: &Change) -> Item {
        let mut line = String::with_capacity(change.entry.entity.get().len() + 64);
        change.entry.write_item(change.deleted, &mut line);
        Item {
            revision: change.entry.revision,
            kind: change.entry.kind,
            deleted: change.deleted,
            entry: change.entry.clone(),
            line: Bytes::from(line),
        }
    }
}

/// Which changes a subscription wants, besides its kind.
pub type Filter = Arc<dyn Fn(&Entry) -> bool + Send + Sync>;

/// Why the hub ended a subscription (its channel then closes, after the items
/// already in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The channel was full: the change at `resume_from` and later ones were
    /// not sent.
    TooSlow { resume_from: u64 },
    /// The hub lost track of changes (the view was reloaded): read them from
    /// the store's history, then subscribe again.
    Rewind,
    /// The service is stopping.
    Closed,
}

/// What a subscription and the hub share.
#[derive(Debug)]
pub struct Shared {
    /// The newest revision the hub had handled when it last broadcast: every
    /// matching change up to it is in the channel already.
    pub seen: AtomicU64,
    end: Mutex<Option<End>>,
    /// Items the stream has taken so far.
    taken: AtomicU64,
    /// When it last took one, in milliseconds since `born`.
    taken_at_ms: AtomicU64,
    born: tokio::time::Instant,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            seen: AtomicU64::new(0),
            end: Mutex::new(None),
            taken: AtomicU64::new(0),
            taken_at_ms: AtomicU64::new(0),
            born: tokio::time::Instant::now(),
        }
    }
}

impl Shared {
    /// Why the subscription ended; `None` while it runs.
    pub fn end(&self) -> Option<End> {
        self.end.lock().ok().and_then(|e| *e)
    }

    fn set_end(&self, end: End) {
        if let Ok(mut e) = self.end.lock() {
            e.get_or_insert(end);
        }
    }

    fn took_one(&self) {
        self.taken.fetch_add(1, Ordering::AcqRel);
        self.touch();
    }

    fn touch(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.taken_at_ms.store(ms, Ordering::Release);
    }

    /// How long the stream has gone without taking an item while one waited.
    fn idle(&self) -> Duration {
        let at = Duration::from_millis(self.taken_at_ms.load(Ordering::Acquire));
        self.born.elapsed().saturating_sub(at)
    }
}

/// A live subscription: matching changes in revision order.
pub struct Subscription {
    pieces: mpsc::Receiver<Piece>,
    /// The rest of the piece being taken.
    current: std::vec::IntoIter<Arc<Item>>,
    pub shared: Arc<Shared>,
}

impl Subscription {
    /// The next change if one is there; `Disconnected` once the hub ended the
    /// subscription and every change it holds was taken.
    pub fn try_next(&mut self) -> Result<Arc<Item>, TryRecvError> {
        loop {
            if let Some(item) = self.take() {
                return Ok(item);
            }
            self.current = self.pieces.try_recv()?.into_iter();
        }
    }

    /// The next change, waiting for it; `None` once the subscription ended
    /// and every change it holds was taken. Cancel-safe.
    pub async fn next(&mut self) -> Option<Arc<Item>> {
        loop {
            if let Some(item) = self.take() {
                return Some(item);
            }
            self.current = self.pieces.recv().await?.into_iter();
        }
    }

    /// The next change of the piece being taken, counted as taken.
    fn take(&mut self) -> Option<Arc<Item>> {
        let item = self.current.next()?;
        self.shared.took_one();
        Some(item)
    }
}

/// Subscribe to the changes of `kind` with a revision ≥ `from` that pass
/// `filter`, through a channel of `buffer` items.
#[derive(Message)]
#[rtype(result = "Subscribed")]
pub struct Subscribe {
    pub kind: Kind,
    pub from: u64,
    pub filter: Filter,
    pub buffer: usize,
}

#[derive(MessageResponse)]
pub enum Subscribed {
    Live(Subscription),
    /// The hub holds every change from `from`, but more than fit the buffer:
    /// here are the first of them (rendered already, as live items are);
    /// subscribe again from `next`.
    Backlog {
        items: Vec<Arc<Item>>,
        next: u64,
    },
    /// The hub does not hold every change from `from`: read further in the
    /// store's history first.
    Behind,
    /// The service is stopping.
    Closing,
}

/// The changes of one commit, in revision order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Committed {
    pub changes: Arc<Vec<Change>>,
}

/// The view was (re)loaded at `revision`: changes before it will not come.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reset {
    pub revision: u64,
}

/// End every subscription and take no more (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

struct Sub {
    kind: Kind,
    from: u64,
    filter: Filter,
    tx: mpsc::Sender<Piece>,
    shared: Arc<Shared>,
    /// Items handed to the channel so far.
    sent: u64,
}

/// What became of a piece offered to a subscription.
enum Offer {
    Sent,
    /// Cut as too slow; the piece was not sent.
    TooSlow,
    /// The stream is gone.
    Gone,
}

impl Sub {
    fn wants(&self, item: &Item) -> bool {
        self.kind == item.kind && item.revision >= self.from && (self.filter)(&item.entry)
    }

    fn offer(&mut self, piece: Piece) -> Offer {
        let Some(first) = piece.first().map(|i| i.revision) else {
            return Offer::Sent;
        };
        let len = piece.len() as u64;
        let waiting = self.sent - self.shared.taken.load(Ordering::Acquire);
        if waiting == 0 {
            // Nothing waited: the clock of a stall starts now.
            self.shared.touch();
        }
        // The buffer (the channel's capacity in pieces) is also how many
        // items may wait while the stream takes none.
        let buffer = self.tx.max_capacity() as u64;
        let stalled = waiting > buffer && self.shared.idle() >= STALL;
        let sent = if stalled {
            Err(mpsc::error::TrySendError::Full(piece))
        } else {
            self.tx.try_send(piece)
        };
        match sent {
            Ok(()) => {
                self.sent += len;
                Offer::Sent
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.set_end(End::TooSlow { resume_from: first });
                Offer::TooSlow
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Gone,
        }
    }
}

/// The StreamHub actor.
pub struct StreamHub {
    metrics: Arc<Metrics>,
    log: Logger,
    ring: VecDeque<Arc<Item>>,
    ring_capacity: usize,
    /// The hub has every change with a revision ≥ `floor` (`u64::MAX` until
    /// the writer first tells it where the view starts).
    floor: u64,
    last_revision: u64,
    subs: Vec<Sub>,
    closing: bool,
}

impl StreamHub {
    pub fn new(metrics: Arc<Metrics>, log: Logger) -> Self {
        Self::with_ring(RING, metrics, log)
    }

    pub fn with_ring(ring_capacity: usize, metrics: Arc<Metrics>, log: Logger) -> Self {
        StreamHub {
            metrics,
            log,
            ring: VecDeque::new(),
            ring_capacity: ring_capacity.max(1),
            floor: u64::MAX,
            last_revision: 0,
            subs: Vec::new(),
            closing: false,
        }
    }

    /// Ends every subscription with `end`.
    fn end_all(&mut self, end: End) {
        for s in self.subs.drain(..) {
            s.shared.set_end(end);
        }
    }
}

impl Actor for StreamHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
        // Forget subscriptions whose stream is gone, even when nothing is sent.
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            act.subs.retain(|s| !s.tx.is_closed());
        });
    }
}

impl Supervised for StreamHub {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.metrics.hub_restarts.inc();
        warn!(self.log, "StreamHub restarting"; "subscriptions" => self.subs.len());
        self.ring.clear();
        if self.floor != u64::MAX {
            self.floor = self.last_revision + 1;
        }
        self.end_all(End::Rewind);
    }
}

impl Handler<Committed> for StreamHub {
    type Result = ();

    fn handle(&mut self, msg: Committed, _: &mut Context<Self>) {
        self.metrics.hub_changes.inc_by(msg.changes.len() as u64);
        let mut items = Vec::with_capacity(msg.changes.len());
        for change in msg.changes.iter() {
            // Revisions only grow; an older one is from before a reset.
            if change.entry.revision <= self.last_revision && self.floor != u64::MAX {
                continue;
            }
            let item = Arc::new(Item::new(change));
            self.last_revision = item.revision;
            items.push(item);
        }
        let metrics = &self.metrics;
        self.subs.retain_mut(|s| {
            let piece: Piece = items.iter().filter(|i| s.wants(i)).cloned().collect();
            match s.offer(piece) {
                Offer::Sent => true,
                Offer::TooSlow => {
                    metrics.streams_too_slow.inc();
                    false
                }
                Offer::Gone => false,
            }
        });
        for item in items {
            self.ring.push_back(item);
            if self.ring.len() > self.ring_capacity {
                if let Some(old) = self.ring.pop_front() {
                    self.floor = self.floor.max(old.revision + 1);
                }
            }
        }
        for s in &self.subs {
            s.shared.seen.store(self.last_revision, Ordering::Release);
        }
    }
}

impl Handler<Subscribe> for StreamHub {
    type Result = Subscribed;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Subscribed {
        if self.closing {
            return Subscribed::Closing;
        }
        if msg.from < self.floor {
            return Subscribed::Behind;
        }
        let buffer = msg.buffer.max(1);
        let (tx, pieces) = mpsc::channel(buffer);
        let mut sub = Sub {
            kind: msg.kind,
            from: msg.from,
            filter: msg.filter,
            tx,
            shared: Arc::default(),
            sent: 0,
        };
        let start = self.ring.partition_point(|i| i.revision < msg.from);
        // Leave room for live changes: a longer backlog is handed over in
        // pieces, so that a stream resuming after being cut as too slow
        // catches up on shared items, not by reading the store's history.
        let room = buffer / 2;
        let mut backlog: Vec<_> = self
            .ring
            .range(start..)
            .filter(|i| sub.wants(i))
            .take(room + 1)
            .cloned()
            .collect();
        if backlog.len() > room {
            backlog.truncate(room.clamp(1, BACKLOG_PIECE));
            let next = backlog.last().map_or(msg.from, |i| i.revision + 1);
            return Subscribed::Backlog {
                items: backlog,
                next,
            };
        }
        sub.offer(backlog);
        let shared = sub.shared.clone();
        shared.seen.store(self.last_revision, Ordering::Release);
        debug!(self.log, "stream subscribed"; "from" => msg.from, "open" => self.subs.len() + 1);
        self.subs.push(sub);
        Subscribed::Live(Subscription {
            pieces,
            current: Vec::new().into_iter(),
            shared,
        })
    }
}

impl Handler<Reset> for StreamHub {
    type Result = ();

    fn handle(&mut self, msg: Reset, _: &mut Context<Self>) {
        self.ring.clear();
        self.floor = msg.revision + 1;
        self.last_revision = msg.revision;
        self.end_all(End::Rewind);
    }
}

impl Handler<Close> for StreamHub {
    type Result = ();

    fn handle(&mut self, _: Close, _: &mut Context<Self>) {
        self.closing = true;
        self.end_all(End::Closed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Entry;

    fn change(revision: u64, arn: &str) -> Change {
        let mut entry = Entry::test_task(arn, Some(revision), "RUNNING");
        entry.revision = revision;
        Change {
            entry: Arc::new(entry),
            deleted: false,
            moved_from: None,
        }
    }

    fn commit(revisions: std::ops::RangeInclusive<u64>) -> Committed {
        Committed {
            changes: Arc::new(revisions.map(|r| change(r, &format!("t{r}"))).collect()),
        }
    }

    fn subscribe(from: u64, buffer: usize) -> Subscribe {
        Subscribe {
            kind: Kind::Task,
            from,
            filter: Arc::new(|_| true),
            buffer,
        }
    }

    fn drain(sub: &mut Subscription) -> Vec<u64> {
        let mut out = Vec::new();
        while let Ok(i) = sub.try_next() {
            out.push(i.revision);
        }
        out
    }

    /// A started hub whose view begins at revision 0, its metrics, and a
    /// subscription from revision 1 with a buffer of 4.
    async fn hub_with_one() -> (Addr<StreamHub>, Arc<Metrics>, Subscription) {
        let metrics: Arc<Metrics> = Arc::default();
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let hub = StreamHub::new(metrics.clone(), log).start();
        hub.send(Reset { revision: 0 }).await.unwrap();
        let Subscribed::Live(sub) = hub.send(subscribe(1, 4)).await.unwrap() else {
            panic!("not live")
        };
        (hub, metrics, sub)
    }

    #[actix::test]
    async fn goes_live_from_the_ring_without_gap_or_duplicate() {
        let hub = StreamHub::with_ring(
            8,
            Arc::default(),
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .start();
        assert!(matches!(
            hub.send(subscribe(1, 16)).await.unwrap(),
            Subscribed::Behind
        ));
        hub.send(Reset { revision: 10 }).await.unwrap();
        hub.send(commit(11..=20)).await.unwrap();
        // The ring (8) holds 13..=20: 12 is gone, 13 is there.
        assert!(matches!(
            hub.send(subscribe(12, 64)).await.unwrap(),
            Subscribed::Behind
        ));
        let Subscribed::Live(mut sub) = hub.send(subscribe(15, 64)).await.unwrap() else {
            panic!("not live")
        };
        hub.send(commit(21..=22)).await.unwrap();
        assert_eq!(drain(&mut sub), (15..=22).collect::<Vec<_>>());
        assert_eq!(sub.shared.seen.load(Ordering::Acquire), 22);
        // A backlog larger than half the buffer comes in pieces, then live.
        let Subscribed::Backlog { items, next } = hub.send(subscribe(15, 8)).await.unwrap() else {
            panic!("no backlog")
        };
        let revisions: Vec<u64> = items.iter().map(|i| i.revision).collect();
        assert_eq!((revisions, next), ((15..=18).collect(), 19));
        let Subscribed::Live(mut sub) = hub.send(subscribe(19, 8)).await.unwrap() else {
            panic!("not live")
        };
        assert_eq!(drain(&mut sub), (19..=22).collect::<Vec<_>>());
    }

    #[actix::test]
    async fn a_full_subscription_is_cut_with_where_to_resume() {
        let (hub, metrics, mut slow) = hub_with_one().await;
        let Subscribed::Live(mut fast) = hub.send(subscribe(1, 64)).await.unwrap() else {
            panic!("not live")
        };
        // Ten commits: four fill the slow one's buffer.
        for r in 1..=10 {
            hub.send(commit(r..=r)).await.unwrap();
        }
        assert_eq!(drain(&mut slow), vec![1, 2, 3, 4]);
        assert_eq!(slow.shared.end(), Some(End::TooSlow { resume_from: 5 }));
        assert_eq!(drain(&mut fast), (1..=10).collect::<Vec<_>>());
        assert_eq!(fast.shared.end(), None);
        assert_eq!(metrics.streams_too_slow.get(), 1);
        hub.send(Reset { revision: 50 }).await.unwrap();
        assert_eq!(fast.shared.end(), Some(End::Rewind));
        assert!(fast.next().await.is_none(), "a rewound channel closes");
        hub.send(Close).await.unwrap();
        assert!(matches!(
            hub.send(subscribe(51, 4)).await.unwrap(),
            Subscribed::Closing
        ));
    }

    #[actix::test]
    async fn one_large_commit_is_one_entry_of_the_buffer() {
        let (hub, metrics, mut sub) = hub_with_one().await;
        // 40 items (ten times the buffer) in one commit, then three more
        // commits while the first is being read: none is cut.
        hub.send(commit(1..=40)).await.unwrap();
        let first: Vec<u64> = (0..10).map(|_| sub.try_next().unwrap().revision).collect();
        assert_eq!(first, (1..=10).collect::<Vec<_>>());
        for r in 41..=43 {
            hub.send(commit(r..=r)).await.unwrap();
        }
        assert_eq!(drain(&mut sub), (11..=43).collect::<Vec<_>>());
        assert_eq!(sub.shared.end(), None);
        assert_eq!(metrics.streams_too_slow.get(), 0);
    }

    #[actix::test]
    async fn a_subscription_that_takes_nothing_for_the_stall_time_is_cut() {
        tokio::time::pause();
        let (hub, metrics, mut sub) = hub_with_one().await;
        // A quiet subscription is not a stalled one.
        tokio::time::advance(STALL * 2).await;
        // More than the buffer waits, but only for a moment: kept.
        hub.send(commit(1..=10)).await.unwrap();
        hub.send(commit(11..=11)).await.unwrap();
        assert_eq!(sub.shared.end(), None);
        // Read a little, then nothing for longer than STALL.
        assert_eq!(sub.try_next().unwrap().revision, 1);
        tokio::time::advance(STALL - Duration::from_millis(1)).await;
        hub.send(commit(12..=12)).await.unwrap();
        assert_eq!(sub.shared.end(), None, "not stalled yet");
        tokio::time::advance(Duration::from_millis(1)).await;
        hub.send(commit(13..=13)).await.unwrap();
        assert_eq!(sub.shared.end(), Some(End::TooSlow { resume_from: 13 }));
        assert_eq!(drain(&mut sub), (2..=12).collect::<Vec<_>>());
        assert_eq!(metrics.streams_too_slow.get(), 1);
    }
}
