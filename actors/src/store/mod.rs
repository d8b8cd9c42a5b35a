//! The durable store behind the [`crate::writer::StoreWriter`]: one trait, two
//! backends (embedded here; etcd next), and the version rule both enforce.
//!
//! Start with [`Store`]: a backend loads everything at start and commits
//! batches of [`Op`]s, deciding inside its own transaction whether each op
//! still applies, so that the rule holds even when several replicas write.

mod config;
mod embedded;
pub mod etcd;

pub use config::{Backend, Config};
pub use embedded::Embedded;
pub use etcd::Etcd;

use crate::model::{Entry, Key, Kind, SharedEntry};
use std::future::Future;
use std::ops::Bound;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future, so that [`Store`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Result of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The store cannot be reached or written right now. Retryable: nothing of
    /// the failed commit was applied.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A commit failed and whether it took effect cannot be told: the view
    /// must be read from the store again. Retryable, after that reload.
    #[error("store outcome unknown: {0}")]
    Indeterminate(String),
    /// The store holds data this version cannot read. Not retryable.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    /// The store is already opened by another process. Not retryable.
    #[error("store is locked by another process: {0}")]
    Locked(String),
    /// The change feed fell behind the store's compacted history: the view
    /// must be loaded again. Retryable, by a full reload.
    #[error("the change feed fell behind the compacted history")]
    Compacted,
    /// A write made as the leader of `0` found another replica leads it now
    /// (or this one's lease ran out): nothing was written.
    #[error("no longer the leader of {0}")]
    NotLeader(String),
}

/// Batches of committed changes, in revision order, from a store that other
/// processes write too, or from the store's history.
pub type Feed = tokio::sync::mpsc::Receiver<Result<Vec<Change>>>;

/// Whether a change stream can start at a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Every change from there on is still in the history (or yet to come).
    Available,
    /// History before it was compacted: changes would be missing.
    Compacted,
    /// It lies beyond the next revision; `revision` is the store's current one.
    Future { revision: u64 },
}

/// One write to apply.
// Nearly every op is a `Put`: boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Op {
    /// Store this entry if the version rule allows it.
    Put(Entry),
    /// Remove an entity (leaving a tombstone), but only if it is still at
    /// `if_revision`, so that a change made since it was judged gone survives.
    Delete { arn: String, if_revision: u64 },
}

/// A committed change: what the view applies and the StreamHub broadcasts.
#[derive(Debug, Clone)]
pub struct Change {
    /// The entry as now stored; for a deletion, the last known entry with
    /// `revision` set to the revision of the deletion.
    pub entry: SharedEntry,
    pub deleted: bool,
    /// The cluster the entity was stored under before, when this change moved
    /// it (a short-format ARN re-announced in another cluster).
    pub moved_from: Option<String>,
}

/// What became of one [`Op`].
#[derive(Debug, Clone)]
pub enum Outcome {
    Applied(Change),
    /// The rule said no: an equal or older version, an unchanged entity, or a
    /// delete of something that has changed or gone.
    Stale,
}

/// A remembered deletion: an event older than it cannot bring the entity back
/// for `tombstone_retention`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tombstone {
    pub kind: Kind,
    pub version: Option<u64>,
    pub revision: u64,
    pub deleted_at_ms: i64,
}

/// One retained version of an entity ([`Store::versions`]).
#[derive(Debug, Clone)]
pub struct Version {
    /// The entity as written at `entry.revision`; for a deletion, the last
    /// known entry with `revision` set to the deletion's.
    pub entry: SharedEntry,
    pub deleted: bool,
    /// When this service committed it, in Unix milliseconds.
    pub observed_at_ms: i64,
}

/// How far back the history goes: the state of every revision from
/// `revision` on, and of every moment from `from_ms` on, can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retained {
    pub revision: u64,
    pub from_ms: i64,
}

/// A window of the state at a past revision ([`Store::state_page`]).
#[derive(Debug, Default)]
pub struct Page {
    /// Entities in (cluster ARN, ARN) order.
    pub entries: Vec<SharedEntry>,
    /// The store may hold more after the last of them.
    pub more: bool,
}

/// Whether `key` lies at or after `from`.
pub fn from_on(key: &Key, from: &Bound<Key>) -> bool {
    match from {
        Bound::Unbounded => true,
        Bound::Included(f) => key >= f,
        Bound::Excluded(f) => key > f,
    }
}

/// Everything a store holds, as loaded at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub revision: u64,
    pub entries: Vec<SharedEntry>,
    pub tombstones: usize,
}

/// A durable store of entries with a global, persistent revision counter.
pub trait Store: Send + Sync + 'static {
    /// Reads every entry and the current revision.
    fn load(&self) -> BoxFuture<'_, Result<Loaded>>;

    /// Applies `ops` in order, durably, each under the version rule; returns one
    /// outcome per op. All or nothing: on error none of them was applied.
    fn commit(&self, ops: Vec<Op>, now_ms: i64) -> BoxFuture<'_, Result<Vec<Outcome>>>;

    /// Forgets tombstones made before `before_ms`; returns how many.
    fn purge_tombstones(&self, before_ms: i64) -> BoxFuture<'_, Result<usize>>;

    /// Checks that the store can be reached.
    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Every change committed from `from_revision` on, by any process, when
    /// others may write this store too. `None` (the default) means the
    /// outcomes of [`Store::commit`] are all the changes there are.
    fn feed(&self, _from_revision: u64) -> Option<Feed> {
        None
    }

    /// Tries to be, or stay, the one replica that works on `name` (a cluster
    /// to reconcile). Always true for a store only one process uses.
    fn lead(&self, _name: &str) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async { Ok(true) })
    }

    /// Whether this replica leads `name` now, by what it knows without
    /// asking: it won [`Store::lead`] and its lease has not run out by its
    /// own clock.
    fn leads(&self, _name: &str) -> bool {
        true
    }

    /// As [`Store::commit`], for the leader of `name`: each write applies
    /// only while this replica still leads it (else `NotLeader`, and what
    /// was written before the lead was lost stays). A store only one process
    /// uses needs no fence.
    fn commit_as_leader(
        &self,
        ops: Vec<Op>,
        now_ms: i64,
        _name: &str,
    ) -> BoxFuture<'_, Result<Vec<Outcome>>> {
        self.commit(ops, now_ms)
    }

    /// Drops history older than `retention` (streams cannot resume before it).
    fn compact_history(&self, now_ms: i64, retention: Duration) -> BoxFuture<'_, Result<()>>;

    /// Whether the history still holds every change from revision `from` (≥ 1).
    fn check_resume(&self, from: u64) -> BoxFuture<'_, Result<Resume>>;

    /// How far back the state can be told ([`Store::state_at`], [`Store::versions`]).
    fn retained(&self) -> BoxFuture<'_, Result<Retained>>;

    /// The last revision committed at or before `at_ms`: `None` when that
    /// is before [`Store::retained`]'s `from_ms`.
    fn revision_at(&self, at_ms: i64) -> BoxFuture<'_, Result<Option<u64>>>;

    /// Every entity of `kind` as it was at `revision` (its last version at or
    /// before it, unless that was a deletion), in the cluster `cluster_arn`
    /// or in all; `Err(Compacted)` when `revision` is older than retained.
    fn state_at(
        &self,
        revision: u64,
        kind: Kind,
        cluster_arn: Option<String>,
    ) -> BoxFuture<'_, Result<Vec<SharedEntry>>>;

    /// Up to `max` entities of the state at `revision` ([`Store::state_at`])
    /// from `from` on, in (cluster ARN, ARN) order: a listing of the past
    /// reads it window by window, in the memory of one window. By default,
    /// the whole state at once.
    fn state_page(
        &self,
        revision: u64,
        kind: Kind,
        cluster_arn: Option<String>,
        from: Bound<Key>,
        _max: usize,
    ) -> BoxFuture<'_, Result<Page>> {
        Box::pin(async move {
            let mut entries = self.state_at(revision, kind, cluster_arn).await?;
            entries.retain(|e| from_on(&e.key(), &from));
            entries.sort_by_key(|e| e.key());
            Ok(Page {
                entries,
                more: false,
            })
        })
    }

    /// Every retained version of one entity, oldest first.
    fn versions(
        &self,
        kind: Kind,
        cluster_arn: String,
        arn: String,
    ) -> BoxFuture<'_, Result<Vec<Version>>>;

    /// Every retained version of every entity of `kind` in `cluster_arn`,
    /// in (ARN, revision) order.
    fn versions_in(&self, kind: Kind, cluster_arn: String) -> BoxFuture<'_, Result<Vec<Version>>>;

    /// Every change with a revision ≥ `from` (≥ 1), in revision order, read
    /// from the store's history: those committed so far, then (for a store
    /// others write) the ones still to come. A reader that retention overtakes
    /// gets `Err(Compacted)`. Dropping the receiver stops the reading.
    fn history(&self, from: u64) -> Feed;
}

/// What the store holds for an ARN when a new state arrives.
#[derive(Debug, Clone, Copy)]
pub enum Current<'a> {
    Absent,
    Live {
        version: Option<u64>,
        entity: &'a str,
    },
    Gone {
        version: Option<u64>,
    },
}

/// The version rule: whether a new state of an entity of `kind`, with ECS
/// `version` and rendered `entity`, replaces what is stored.
///
/// - a known version applies only above the stored one; equal or lower is stale;
/// - a known version beats an unknown one; an unknown one never overwrites a
///   known one, and replaces an unknown one only when the entity changed
///   (a service's read time aside: [`crate::model::same_state`]);
/// - a tombstone blocks every known version up to its own, and, when its
///   own version is unknown, every event (it cannot be shown to be newer).
pub fn supersedes(kind: Kind, version: Option<u64>, entity: &str, current: Current<'_>) -> bool {
    match (current, version) {
        (Current::Absent, _) => true,
        (
            Current::Live {
                version: Some(old), ..
            },
            Some(new),
        ) => new > old,
        (Current::Live { version: None, .. }, Some(_)) => true,
        (
            Current::Live {
                version: Some(_), ..
            },
            None,
        ) => false,
        (
            Current::Live {
                version: None,
                entity: old,
            },
            None,
        ) => !crate::model::same_state(kind, old, entity),
        (Current::Gone { version: Some(old) }, Some(new)) => new > old,
        (Current::Gone { version: None }, Some(_)) => false,
        // An API answer (no version) says the entity exists now.
        (Current::Gone { .. }, None) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_rule() {
        let live = |v| Current::Live {
            version: v,
            entity: "{}",
        };
        assert!(supersedes(Kind::Task, Some(1), "{}", Current::Absent));
        assert!(supersedes(Kind::Task, None, "{}", Current::Absent));
        assert!(supersedes(Kind::Task, Some(3), "{}", live(Some(2))));
        assert!(!supersedes(Kind::Task, Some(2), "{}", live(Some(2))));
        assert!(!supersedes(Kind::Task, Some(1), "{}", live(Some(2))));
        assert!(supersedes(Kind::Task, Some(1), "{}", live(None)));
        assert!(!supersedes(Kind::Task, None, "{\"a\":1}", live(Some(1))));
        assert!(!supersedes(Kind::Task, None, "{}", live(None)));
        assert!(supersedes(Kind::Task, None, "{\"a\":1}", live(None)));
        assert!(!supersedes(
            Kind::Task,
            Some(5),
            "{}",
            Current::Gone { version: Some(5) }
        ));
        assert!(supersedes(
            Kind::Task,
            Some(6),
            "{}",
            Current::Gone { version: Some(5) }
        ));
        assert!(!supersedes(
            Kind::Task,
            Some(6),
            "{}",
            Current::Gone { version: None }
        ));
        assert!(supersedes(
            Kind::Task,
            None,
            "{}",
            Current::Gone { version: Some(5) }
        ));
    }
}
