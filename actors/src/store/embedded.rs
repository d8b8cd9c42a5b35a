//! The embedded store: a redb database file in `data_dir`, durable and
//! crash-safe (every commit is fsynced; a torn commit is rolled back on open).
//!
//! Tables: `entities` (ARN → header + entry JSON), `tombstones` (ARN → JSON),
//! `history` (revision → the change made at it: stream resume, entity
//! history, the state at a past moment), `versions` ((kind, cluster ARN, ARN,
//! revision) → when it was committed and whether it was a deletion: each
//! entity's revisions, in order), `meta` (`revision` → the global revision
//! counter, `history_floor` → the oldest revision whose change is still in
//! `history`, `state_floor` and `history_from_ms` → the oldest revision and
//! moment whose state can be told). The value header holds the ECS version
//! and the cluster ARN so that the version rule needs no JSON parsing on the
//! write path.
//!
//! Compaction keeps, below `history_floor`, each entity's last version before
//! it (unless that was a deletion): with the versions after it, the state at
//! any revision from `state_floor` on is every entity's last version at or
//! before it.

use super::{
    supersedes, BoxFuture, Change, Current, Error, Feed, Loaded, Op, Outcome, Page, Result, Resume,
    Retained, Store, Tombstone, Version,
};
use crate::model::{Entry, Key, Kind, SharedEntry};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

const ENTITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entities");
const TOMBSTONES: TableDefinition<&str, &[u8]> = TableDefinition::new("tombstones");
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
/// (kind, cluster ARN, ARN, revision) → (commit time in Unix ms, deleted).
type VersionKey<'a> = (u8, &'a str, &'a str, u64);
const VERSIONS: TableDefinition<VersionKey, (i64, bool)> = TableDefinition::new("versions");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
const HISTORY_FLOOR: &str = "history_floor";
const STATE_FLOOR: &str = "state_floor";
const HISTORY_FROM: &str = "history_from_ms";
/// Bumped by [`probe`], the write that tells whether the disk takes writes.
const PROBE: &str = "probe";
const NO_VERSION: u64 = u64::MAX;
/// Changes per page of a history read.
const HISTORY_PAGE: usize = 512;
/// Most history rows compacted in one transaction.
const COMPACT_BATCH: usize = 10_000;

/// The embedded store. Cheap to clone; all clones share one open database.
///
/// A write that fails (the disk is full, say) leaves redb refusing every
/// later one until the file is opened again, so the database is reopened
/// after each failed write; nothing of the failed write is stored (a commit
/// is checked against the revision counter). Until a write succeeds again
/// the store reports itself down ([`Store::ping`] tries a small write).
#[derive(Clone)]
pub struct Embedded {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    /// `None` while it could not be opened again after a failed write; the
    /// next use tries again.
    db: RwLock<Option<Database>>,
    /// A write failed and none has succeeded since.
    failing: AtomicBool,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::Corrupt(e.to_string())
}

/// redb's page cache. Its default (1 GiB) fills during the load at start and
/// is never given back: 100,000 tasks left the process at 1.1 GB resident.
/// The view holds every entity anyway, so the store is read in full only
/// at start; the cache needs little more than the B-trees' interior pages.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Opens (or creates) the database file at `path`, with its tables. A
/// store that has them is opened without a write, so that one on a full
/// disk still opens and serves.
fn open_db(path: &Path) -> Result<Database> {
    let db = redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::Locked(path.display().to_string()),
            e => unavailable(format!("cannot open {}: {e}", path.display())),
        })?;
    let ready = db
        .begin_read()
        .map_err(unavailable)?
        .open_table(META)
        .is_ok_and(|meta| matches!(meta.get(STATE_FLOOR), Ok(Some(_))));
    if ready {
        return Ok(db);
    }
    let txn = db.begin_write().map_err(unavailable)?;
    for t in [ENTITIES, TOMBSTONES] {
        txn.open_table(t).map_err(unavailable)?;
    }
    txn.open_table(HISTORY).map_err(unavailable)?;
    txn.open_table(VERSIONS).map_err(unavailable)?;
    {
        let mut meta = txn.open_table(META).map_err(unavailable)?;
        let revision = meta
            .get(REVISION)
            .map_err(unavailable)?
            .map_or(0, |g| g.value());
        // A store made before history was kept has history from now on.
        if meta.get(HISTORY_FLOOR).map_err(unavailable)?.is_none() {
            meta.insert(HISTORY_FLOOR, revision + 1)
                .map_err(unavailable)?;
        }
        meta.insert(STATE_FLOOR, revision).map_err(unavailable)?;
        let now = u64::try_from(crate::time::now_ms()).unwrap_or(0);
        meta.insert(HISTORY_FROM, now).map_err(unavailable)?;
    }
    index_versions(&txn)?;
    txn.commit().map_err(unavailable)?;
    Ok(db)
}

/// Fills `versions` for a store made before it existed: from the history
/// rows, plus a base row for each entity that has none (its state now,
/// which is its state at `state_floor`).
fn index_versions(txn: &redb::WriteTransaction) -> Result<()> {
    let mut history = txn.open_table(HISTORY).map_err(unavailable)?;
    let mut versions = txn.open_table(VERSIONS).map_err(unavailable)?;
    let mut rows = Vec::new();
    for row in history.iter().map_err(unavailable)? {
        let (k, v) = row.map_err(unavailable)?;
        let v = v.value();
        let id = ident(&row_json(v)?)?;
        rows.push((k.value(), row_time(v)?, v.get(8) == Some(&1), id));
    }
    for (rev, at, deleted, id) in &rows {
        versions
            .insert(id.key(*rev), (*at, *deleted))
            .map_err(unavailable)?;
    }
    let entities = txn.open_table(ENTITIES).map_err(unavailable)?;
    for row in entities.iter().map_err(unavailable)? {
        let (_, v) = row.map_err(unavailable)?;
        let (_, _, json) = split(v.value())?;
        let entry = Entry::from_stored(json).map_err(corrupt)?;
        if history.get(entry.revision).map_err(unavailable)?.is_some() {
            continue;
        }
        let change = Change {
            entry: Arc::new(entry),
            deleted: false,
            moved_from: None,
        };
        let at = change.entry.stored_at_ms;
        let row = history_row(&change, at)?;
        history
            .insert(change.entry.revision, row.as_slice())
            .map_err(unavailable)?;
        versions
            .insert(version_key(&change.entry), (at, false))
            .map_err(unavailable)?;
    }
    Ok(())
}

/// Who a history row is about, read without the rest of its entry.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ident {
    kind: Kind,
    arn: String,
    cluster_arn: String,
}

impl Ident {
    fn key(&self, revision: u64) -> VersionKey<'_> {
        (
            self.kind.index() as u8,
            &self.cluster_arn,
            &self.arn,
            revision,
        )
    }
}

fn ident(json: &[u8]) -> Result<Ident> {
    serde_json::from_slice(json).map_err(corrupt)
}

fn version_key(entry: &Entry) -> VersionKey<'_> {
    (
        entry.kind.index() as u8,
        &entry.cluster_arn,
        &entry.arn,
        entry.revision,
    )
}

/// A counter of the `meta` table, 0 when unset.
fn counter(txn: &redb::ReadTransaction, key: &str) -> Result<u64> {
    let meta = txn.open_table(META).map_err(unavailable)?;
    let value = meta.get(key).map_err(unavailable)?;
    Ok(value.map_or(0, |g| g.value()))
}

fn revision_of(db: &Database) -> Result<u64> {
    counter(&db.begin_read().map_err(unavailable)?, REVISION)
}

impl Embedded {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Embedded> {
        std::fs::create_dir_all(dir)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("css.redb");
        let db = open_db(&path)?;
        Ok(Embedded {
            shared: Arc::new(Shared {
                path,
                db: RwLock::new(Some(db)),
                failing: AtomicBool::new(false),
            }),
        })
    }

    /// Runs `f` on the open database (opening it again first if a failed
    /// write left it closed).
    fn with<T>(&self, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        let closed = self.read()?.is_none();
        if closed {
            self.reopen()?;
        }
        match self.read()?.as_ref() {
            Some(db) => f(db),
            None => Err(unavailable(format!(
                "{} is not open",
                self.shared.path.display()
            ))),
        }
    }

    /// Runs the write `f`. When it fails, the database is opened again (redb
    /// takes no write after an I/O error until then) and the store counts
    /// as failing until a write succeeds.
    fn write<T>(&self, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        match self.with(f) {
            Ok(v) => {
                self.shared.failing.store(false, Ordering::SeqCst);
                Ok(v)
            }
            Err(Error::Unavailable(e)) => {
                self.shared.failing.store(true, Ordering::SeqCst);
                let reopened = self.reopen();
                let path = self.shared.path.display();
                Err(match reopened {
                    Ok(()) => Error::Unavailable(format!("cannot write {path}: {e}")),
                    Err(again) => Error::Unavailable(format!("cannot write {path}: {e}; {again}")),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Closes the database and opens it again.
    fn reopen(&self) -> Result<()> {
        let mut db = self
            .shared
            .db
            .write()
            .map_err(|_| unavailable("the store's lock is poisoned"))?;
        // The old handle goes first: a file is opened once at a time.
        *db = None;
        *db = Some(open_db(&self.shared.path)?);
        Ok(())
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Option<Database>>> {
        self.shared
            .db
            .read()
            .map_err(|_| unavailable("the store's lock is poisoned"))
    }

    fn load_sync(&self) -> Result<Loaded> {
        self.with(load)
    }

    /// Commits `ops`. When the commit fails, the revision counter of the
    /// reopened database tells whether it was stored after all.
    fn commit_sync(&self, ops: Vec<Op>, now_ms: i64) -> Result<Vec<Outcome>> {
        let mut attempted = None;
        let err = match self.write(|db| commit(db, ops, now_ms, &mut attempted)) {
            Ok(outcomes) => return Ok(outcomes),
            Err(e) => e,
        };
        match attempted {
            Some(Attempt {
                before,
                after,
                outcomes,
            }) if after != before => match self.with(revision_of) {
                Ok(r) if r == before => Err(err),
                Ok(r) if r == after => Ok(outcomes),
                Ok(r) => Err(Error::Indeterminate(format!(
                    "{err}; the revision is {r}, neither {before} nor {after}"
                ))),
                Err(again) => Err(Error::Indeterminate(format!("{err}; {again}"))),
            },
            _ => Err(err),
        }
    }

    fn purge_sync(&self, before_ms: i64) -> Result<usize> {
        self.write(|db| purge(db, before_ms))
    }

    fn resume_sync(&self, from: u64) -> Result<Resume> {
        self.with(|db| resume(db, from))
    }

    /// Up to `HISTORY_PAGE` changes from revision `from` on.
    fn history_page(&self, from: u64) -> Result<Vec<Change>> {
        self.with(|db| history_page(db, from))
    }

    fn read_sync<T>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<T>) -> Result<T> {
        self.with(|db| f(&db.begin_read().map_err(unavailable)?))
    }

    /// Drops history rows written before `before_ms`, a batch per transaction.
    fn compact_sync(&self, before_ms: i64) -> Result<()> {
        while !self.write(|db| compact_batch(db, before_ms))? {}
        Ok(())
    }

    /// Whether writes land: after a failed one, a small write tells.
    fn ping_sync(&self) -> Result<()> {
        if self.shared.failing.load(Ordering::SeqCst) {
            self.write(probe)
        } else {
            self.with(|_| Ok(()))
        }
    }

    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Embedded) -> Result<T> + Send + 'static,
    ) -> BoxFuture<'_, Result<T>> {
        let this = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(this))
                .await
                .map_err(|e| unavailable(format!("store task failed: {e}")))?
        })
    }
}

/// A commit on its way: what it would make of the revision counter, and its
/// outcomes, from just before the transaction commits.
struct Attempt {
    before: u64,
    after: u64,
    outcomes: Vec<Outcome>,
}

fn load(db: &Database) -> Result<Loaded> {
    let txn = db.begin_read().map_err(unavailable)?;
    let entities = txn.open_table(ENTITIES).map_err(unavailable)?;
    let mut entries = Vec::with_capacity(entities.len().unwrap_or(0) as usize);
    for row in entities.iter().map_err(unavailable)? {
        let (_, v) = row.map_err(unavailable)?;
        let (_, _, json) = split(v.value())?;
        entries.push(Arc::new(Entry::from_stored(json).map_err(corrupt)?));
    }
    let revision = counter(&txn, REVISION)?;
    let tombstones = txn
        .open_table(TOMBSTONES)
        .map_err(unavailable)?
        .len()
        .map_err(unavailable)? as usize;
    Ok(Loaded {
        revision,
        entries,
        tombstones,
    })
}

/// One commit; `attempted` holds its outcomes while the transaction commits.
fn commit(
    db: &Database,
    ops: Vec<Op>,
    now_ms: i64,
    attempted: &mut Option<Attempt>,
) -> Result<Vec<Outcome>> {
    let txn = db.begin_write().map_err(unavailable)?;
    let mut outcomes = Vec::with_capacity(ops.len());
    let before;
    let after;
    {
        let mut entities = txn.open_table(ENTITIES).map_err(unavailable)?;
        let mut tombs = txn.open_table(TOMBSTONES).map_err(unavailable)?;
        let mut meta = txn.open_table(META).map_err(unavailable)?;
        before = meta
            .get(REVISION)
            .map_err(unavailable)?
            .map_or(0, |g| g.value());
        let mut rev = before;
        for op in ops {
            let outcome = match op {
                Op::Put(entry) => put(&mut entities, &mut tombs, entry, &mut rev, now_ms)?,
                Op::Delete { arn, if_revision } => delete(
                    &mut entities,
                    &mut tombs,
                    &arn,
                    if_revision,
                    &mut rev,
                    now_ms,
                )?,
            };
            outcomes.push(outcome);
        }
        meta.insert(REVISION, rev).map_err(unavailable)?;
        after = rev;
        let mut history = txn.open_table(HISTORY).map_err(unavailable)?;
        let mut versions = txn.open_table(VERSIONS).map_err(unavailable)?;
        for o in &outcomes {
            if let Outcome::Applied(c) = o {
                let row = history_row(c, now_ms)?;
                history
                    .insert(c.entry.revision, row.as_slice())
                    .map_err(unavailable)?;
                versions
                    .insert(version_key(&c.entry), (now_ms, c.deleted))
                    .map_err(unavailable)?;
            }
        }
    }
    *attempted = Some(Attempt {
        before,
        after,
        outcomes,
    });
    txn.commit().map_err(unavailable)?;
    Ok(attempted.take().map(|a| a.outcomes).unwrap_or_default())
}

fn purge(db: &Database, before_ms: i64) -> Result<usize> {
    let txn = db.begin_write().map_err(unavailable)?;
    let mut purged = 0;
    {
        let mut tombs = txn.open_table(TOMBSTONES).map_err(unavailable)?;
        tombs
            .retain(|_, v| {
                let keep = serde_json::from_slice::<Tombstone>(v)
                    .is_ok_and(|t| t.deleted_at_ms >= before_ms);
                purged += usize::from(!keep);
                keep
            })
            .map_err(unavailable)?;
    }
    txn.commit().map_err(unavailable)?;
    Ok(purged)
}

fn resume(db: &Database, from: u64) -> Result<Resume> {
    let txn = db.begin_read().map_err(unavailable)?;
    let (revision, floor) = (counter(&txn, REVISION)?, counter(&txn, HISTORY_FLOOR)?);
    Ok(if from > revision + 1 {
        Resume::Future { revision }
    } else if from < floor {
        Resume::Compacted
    } else {
        Resume::Available
    })
}

fn history_page(db: &Database, from: u64) -> Result<Vec<Change>> {
    let txn = db.begin_read().map_err(unavailable)?;
    if from < counter(&txn, HISTORY_FLOOR)? {
        return Err(Error::Compacted);
    }
    let history = txn.open_table(HISTORY).map_err(unavailable)?;
    let mut changes = Vec::new();
    for row in history
        .range(from..)
        .map_err(unavailable)?
        .take(HISTORY_PAGE)
    {
        let (_, v) = row.map_err(unavailable)?;
        changes.push(parse_history_row(v.value())?);
    }
    Ok(changes)
}

/// Compacts up to `COMPACT_BATCH` history rows written before `before_ms`;
/// returns whether none older is left. Each such row replaces its entity's
/// earlier base row, and stays as the new base unless it is a deletion.
fn compact_batch(db: &Database, before_ms: i64) -> Result<bool> {
    let txn = db.begin_write().map_err(unavailable)?;
    let done;
    let last;
    {
        let mut history = txn.open_table(HISTORY).map_err(unavailable)?;
        let mut versions = txn.open_table(VERSIONS).map_err(unavailable)?;
        let mut meta = txn.open_table(META).map_err(unavailable)?;
        let floor = meta
            .get(HISTORY_FLOOR)
            .map_err(unavailable)?
            .map_or(0, |g| g.value());
        let mut old = Vec::new();
        for row in history
            .range(floor..)
            .map_err(unavailable)?
            .take(COMPACT_BATCH)
        {
            let (k, v) = row.map_err(unavailable)?;
            let v = v.value();
            let at = row_time(v)?;
            if at >= before_ms {
                break;
            }
            let id = ident(&row_json(v)?)?;
            old.push((k.value(), at, v.get(8) == Some(&1), id));
        }
        for (rev, _, deleted, id) in &old {
            let earlier: Vec<u64> = versions
                .range(id.key(0)..id.key(*rev))
                .map_err(unavailable)?
                .map(|row| row.map(|(k, _)| k.value().3))
                .collect::<Result<_, _>>()
                .map_err(unavailable)?;
            let gone = earlier.into_iter().chain(deleted.then_some(*rev));
            for r in gone {
                versions.remove(id.key(r)).map_err(unavailable)?;
                history.remove(r).map_err(unavailable)?;
            }
        }
        done = old.len() < COMPACT_BATCH;
        last = old.last().map(|(rev, at, ..)| (*rev, *at));
        if let Some((rev, at)) = last {
            meta.insert(HISTORY_FLOOR, rev + 1).map_err(unavailable)?;
            meta.insert(STATE_FLOOR, rev).map_err(unavailable)?;
            meta.insert(HISTORY_FROM, u64::try_from(at).unwrap_or(0))
                .map_err(unavailable)?;
        }
    }
    if last.is_none() {
        txn.abort().map_err(unavailable)?;
        return Ok(true);
    }
    txn.commit().map_err(unavailable)?;
    Ok(done)
}

/// How far back the state is known. Until a first compaction, history
/// goes back to the store's making, or to its first commit if that was
/// stamped earlier (a store built with the times of a replayed past).
fn retained(txn: &redb::ReadTransaction) -> Result<Retained> {
    let revision = counter(txn, STATE_FLOOR)?;
    let mut from_ms = i64::try_from(counter(txn, HISTORY_FROM)?).unwrap_or(i64::MAX);
    if revision == 0 {
        let history = txn.open_table(HISTORY).map_err(unavailable)?;
        if let Some(first) = history.get(1).map_err(unavailable)? {
            from_ms = from_ms.min(row_time(first.value())?);
        }
    }
    Ok(Retained { revision, from_ms })
}

/// The last revision committed at or before `at_ms`: a binary search of
/// the history rows from the floor on, which hold every revision since.
fn revision_at(db: &Database, at_ms: i64) -> Result<Option<u64>> {
    let txn = db.begin_read().map_err(unavailable)?;
    let kept = retained(&txn)?;
    if at_ms < kept.from_ms {
        return Ok(None);
    }
    let history = txn.open_table(HISTORY).map_err(unavailable)?;
    let (mut lo, mut hi) = (counter(&txn, HISTORY_FLOOR)?, counter(&txn, REVISION)?);
    let mut found = kept.revision;
    while lo <= hi {
        let mid = lo + (hi - lo) / 2;
        let at = match history.get(mid).map_err(unavailable)? {
            Some(v) => row_time(v.value())?,
            None => return Err(Error::Corrupt(format!("history row {mid} is missing"))),
        };
        if at <= at_ms {
            found = mid;
            lo = mid + 1;
        } else if mid == 0 {
            break;
        } else {
            hi = mid - 1;
        }
    }
    Ok(Some(found))
}

/// The entities of `kind` (in `cluster_arn`, or all) as they were at
/// `revision`: every window of [`state_page`] at once.
fn state_at(
    db: &Database,
    revision: u64,
    kind: Kind,
    cluster_arn: Option<&str>,
) -> Result<Vec<SharedEntry>> {
    let all = state_page(
        db,
        revision,
        kind,
        cluster_arn,
        &Bound::Unbounded,
        usize::MAX,
    )?;
    Ok(all.entries)
}

/// The entity a walk of the `versions` index is on, and its last row at or
/// before the revision asked for (revision, deleted).
struct Walked {
    cluster: String,
    arn: String,
    row: Option<(u64, bool)>,
}

/// Up to `max` live entities of the state at `revision`, from `from` on
/// (in `cluster_arn` or in all), read from the `versions` index in its
/// (cluster, ARN) order: each entity's last row at or before `revision`.
fn state_page(
    db: &Database,
    revision: u64,
    kind: Kind,
    cluster_arn: Option<&str>,
    from: &Bound<Key>,
    max: usize,
) -> Result<Page> {
    let txn = db.begin_read().map_err(unavailable)?;
    if revision < retained(&txn)?.revision {
        return Err(Error::Compacted);
    }
    let history = txn.open_table(HISTORY).map_err(unavailable)?;
    let versions = txn.open_table(VERSIONS).map_err(unavailable)?;
    let k = kind.index() as u8;
    let past = cluster_arn.map(|c| format!("{c}\0"));
    let end: VersionKey = match &past {
        Some(p) => (k, p.as_str(), "", 0),
        None => (k + 1, "", "", 0),
    };
    let first: VersionKey = (k, cluster_arn.unwrap_or(""), "", 0);
    let start: Bound<VersionKey> = match from {
        Bound::Included(f) if (f.cluster_arn.as_str(), f.arn.as_str()) > (first.1, "") => {
            Bound::Included((k, &f.cluster_arn, &f.arn, 0))
        }
        Bound::Excluded(f) if (f.cluster_arn.as_str(), f.arn.as_str()) >= (first.1, "") => {
            Bound::Excluded((k, &f.cluster_arn, &f.arn, u64::MAX))
        }
        _ => Bound::Included(first),
    };
    let mut out = Vec::new();
    let mut more = false;
    let mut current: Option<Walked> = None;
    let take = |cur: Option<Walked>, out: &mut Vec<SharedEntry>| -> Result<()> {
        if let Some(Walked {
            row: Some((rev, false)),
            ..
        }) = cur
        {
            match history.get(rev).map_err(unavailable)? {
                Some(v) => out.push(parse_history_row(v.value())?.entry),
                None => return Err(Error::Corrupt(format!("history row {rev} is missing"))),
            }
        }
        Ok(())
    };
    for row in versions
        .range::<VersionKey>((start, Bound::Excluded(end)))
        .map_err(unavailable)?
    {
        let (key, value) = row.map_err(unavailable)?;
        let (_, cluster, arn, rev) = key.value();
        let same = current
            .as_ref()
            .is_some_and(|w| w.cluster == cluster && w.arn == arn);
        if !same {
            take(current.take(), &mut out)?;
            if out.len() >= max {
                more = true;
                break;
            }
            current = Some(Walked {
                cluster: cluster.to_owned(),
                arn: arn.to_owned(),
                row: None,
            });
        }
        if let (true, Some(w)) = (rev <= revision, current.as_mut()) {
            w.row = Some((rev, value.value().1));
        }
    }
    if !more {
        take(current.take(), &mut out)?;
    }
    Ok(Page { entries: out, more })
}

/// Every retained version of one entity (`arn`), or of every entity of
/// `kind` in `cluster_arn` (`None`), in (ARN, revision) order.
fn versions(
    db: &Database,
    kind: Kind,
    cluster_arn: &str,
    arn: Option<&str>,
) -> Result<Vec<Version>> {
    let txn = db.begin_read().map_err(unavailable)?;
    let history = txn.open_table(HISTORY).map_err(unavailable)?;
    let versions = txn.open_table(VERSIONS).map_err(unavailable)?;
    let k = kind.index() as u8;
    let past = format!("{cluster_arn}\0");
    let range = match arn {
        Some(a) => versions.range((k, cluster_arn, a, 0)..=(k, cluster_arn, a, u64::MAX)),
        None => versions.range((k, cluster_arn, "", 0)..(k, past.as_str(), "", 0)),
    };
    let mut out = Vec::new();
    for row in range.map_err(unavailable)? {
        let (key, value) = row.map_err(unavailable)?;
        let rev = key.value().3;
        let (observed_at_ms, deleted) = value.value();
        let Some(v) = history.get(rev).map_err(unavailable)? else {
            return Err(Error::Corrupt(format!("history row {rev} is missing")));
        };
        out.push(Version {
            entry: parse_history_row(v.value())?.entry,
            deleted,
            observed_at_ms,
        });
    }
    Ok(out)
}

/// A small write: whether the store takes writes again.
fn probe(db: &Database) -> Result<()> {
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let mut meta = txn.open_table(META).map_err(unavailable)?;
        let n = meta
            .get(PROBE)
            .map_err(unavailable)?
            .map_or(0, |g| g.value());
        meta.insert(PROBE, n.wrapping_add(1)).map_err(unavailable)?;
    }
    txn.commit().map_err(unavailable)
}

type Table<'t> = redb::Table<'t, &'static str, &'static [u8]>;

fn put(
    entities: &mut Table<'_>,
    tombs: &mut Table<'_>,
    mut entry: Entry,
    rev: &mut u64,
    now_ms: i64,
) -> Result<Outcome> {
    let (applies, moved_from) = match entities.get(entry.arn.as_str()).map_err(unavailable)? {
        Some(g) => {
            let (version, cluster, json) = split(g.value())?;
            let old_entity;
            let entity = if version.is_none() && entry.version.is_none() {
                old_entity = Entry::from_stored(json).map_err(corrupt)?.entity;
                old_entity.get()
            } else {
                ""
            };
            let current = Current::Live { version, entity };
            let moved = (cluster != entry.cluster_arn).then(|| cluster.to_owned());
            (
                supersedes(entry.kind, entry.version, entry.entity.get(), current),
                moved,
            )
        }
        None => {
            let current = match tombs.get(entry.arn.as_str()).map_err(unavailable)? {
                Some(t) => Current::Gone {
                    version: serde_json::from_slice::<Tombstone>(t.value())
                        .map_err(corrupt)?
                        .version,
                },
                None => Current::Absent,
            };
            (
                supersedes(entry.kind, entry.version, entry.entity.get(), current),
                None,
            )
        }
    };
    if !applies {
        return Ok(Outcome::Stale);
    }
    *rev += 1;
    entry.revision = *rev;
    entry.stored_at_ms = now_ms;
    let value = join(&entry)?;
    entities
        .insert(entry.arn.as_str(), value.as_slice())
        .map_err(unavailable)?;
    tombs.remove(entry.arn.as_str()).map_err(unavailable)?;
    Ok(Outcome::Applied(Change {
        entry: Arc::new(entry),
        deleted: false,
        moved_from,
    }))
}

fn delete(
    entities: &mut Table<'_>,
    tombs: &mut Table<'_>,
    arn: &str,
    if_revision: u64,
    rev: &mut u64,
    now_ms: i64,
) -> Result<Outcome> {
    let mut entry = match entities.get(arn).map_err(unavailable)? {
        Some(g) => Entry::from_stored(split(g.value())?.2).map_err(corrupt)?,
        None => return Ok(Outcome::Stale),
    };
    if entry.revision != if_revision {
        return Ok(Outcome::Stale);
    }
    *rev += 1;
    entry.revision = *rev;
    let tomb = Tombstone {
        kind: entry.kind,
        version: entry.version,
        revision: *rev,
        deleted_at_ms: now_ms,
    };
    let tomb = serde_json::to_vec(&tomb).map_err(corrupt)?;
    entities.remove(arn).map_err(unavailable)?;
    tombs.insert(arn, tomb.as_slice()).map_err(unavailable)?;
    Ok(Outcome::Applied(Change {
        entry: Arc::new(entry),
        deleted: true,
        moved_from: None,
    }))
}

/// History row layout: the commit time (i64 LE ms), 1 if a deletion, then
/// the entry JSON packed ([`crate::model::Packed`]: a format byte, then LZ4
/// against a dictionary of ECS JSON; a quarter of the JSON's size). Rows of
/// an older version hold the JSON as it is (it starts with `{`).
fn history_row(c: &Change, now_ms: i64) -> Result<Vec<u8>> {
    let json = serde_json::to_string(&*c.entry).map_err(corrupt)?;
    let packed = crate::model::Packed::pack(&json);
    let mut v = Vec::with_capacity(9 + packed.len());
    v.extend_from_slice(&now_ms.to_le_bytes());
    v.push(u8::from(c.deleted));
    v.extend_from_slice(packed.bytes());
    Ok(v)
}

/// The entry JSON of a history row.
fn row_json(v: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>> {
    let body = v.get(9..).unwrap_or_default();
    if body.first() == Some(&b'{') {
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    match crate::model::Packed::from_bytes(body).unpack() {
        Some(json) => Ok(std::borrow::Cow::Owned(json.into_bytes())),
        None => Err(Error::Corrupt("unreadable history record".into())),
    }
}

fn row_time(v: &[u8]) -> Result<i64> {
    let bytes = v.get(..8).and_then(|b| b.try_into().ok());
    bytes
        .map(i64::from_le_bytes)
        .ok_or_else(|| Error::Corrupt("truncated history record".into()))
}

fn parse_history_row(v: &[u8]) -> Result<Change> {
    row_time(v)?;
    let (deleted, json) = (v.get(8) == Some(&1), row_json(v)?);
    Ok(Change {
        entry: Arc::new(Entry::from_stored(&json).map_err(corrupt)?),
        deleted,
        moved_from: None,
    })
}

/// Value layout: ECS version (u64 LE, `u64::MAX` = unknown), cluster ARN length
/// (u32 LE), cluster ARN, entry JSON.
fn join(entry: &Entry) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(entry).map_err(corrupt)?;
    let cluster = entry.cluster_arn.as_bytes();
    let mut v = Vec::with_capacity(12 + cluster.len() + json.len());
    v.extend_from_slice(&entry.version.unwrap_or(NO_VERSION).to_le_bytes());
    v.extend_from_slice(&(cluster.len() as u32).to_le_bytes());
    v.extend_from_slice(cluster);
    v.extend_from_slice(&json);
    Ok(v)
}

fn split(v: &[u8]) -> Result<(Option<u64>, &str, &[u8])> {
    let bad = || Error::Corrupt("truncated entity record".into());
    let version = u64::from_le_bytes(v.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
    let len = u32::from_le_bytes(
        v.get(8..12)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    let end = 12 + len as usize;
    let cluster = std::str::from_utf8(v.get(12..end).ok_or_else(bad)?).map_err(corrupt)?;
    let json = v.get(end..).ok_or_else(bad)?;
    Ok(((version != NO_VERSION).then_some(version), cluster, json))
}

impl Store for Embedded {
    fn load(&self) -> BoxFuture<'_, Result<Loaded>> {
        self.blocking(|s| s.load_sync())
    }

    fn commit(&self, ops: Vec<Op>, now_ms: i64) -> BoxFuture<'_, Result<Vec<Outcome>>> {
        self.blocking(move |s| s.commit_sync(ops, now_ms))
    }

    fn purge_tombstones(&self, before_ms: i64) -> BoxFuture<'_, Result<usize>> {
        self.blocking(move |s| s.purge_sync(before_ms))
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        self.blocking(|s| s.ping_sync())
    }

    fn compact_history(&self, now_ms: i64, retention: Duration) -> BoxFuture<'_, Result<()>> {
        let before = now_ms.saturating_sub(retention.as_millis() as i64);
        self.blocking(move |s| s.compact_sync(before))
    }

    fn check_resume(&self, from: u64) -> BoxFuture<'_, Result<Resume>> {
        self.blocking(move |s| s.resume_sync(from))
    }

    fn retained(&self) -> BoxFuture<'_, Result<Retained>> {
        self.blocking(|s| s.read_sync(retained))
    }

    fn revision_at(&self, at_ms: i64) -> BoxFuture<'_, Result<Option<u64>>> {
        self.blocking(move |s| s.with(|db| revision_at(db, at_ms)))
    }

    fn state_at(
        &self,
        revision: u64,
        kind: Kind,
        cluster_arn: Option<String>,
    ) -> BoxFuture<'_, Result<Vec<SharedEntry>>> {
        self.blocking(move |s| s.with(|db| state_at(db, revision, kind, cluster_arn.as_deref())))
    }

    fn versions(
        &self,
        kind: Kind,
        cluster_arn: String,
        arn: String,
    ) -> BoxFuture<'_, Result<Vec<Version>>> {
        self.blocking(move |s| s.with(|db| versions(db, kind, &cluster_arn, Some(&arn))))
    }

    fn state_page(
        &self,
        revision: u64,
        kind: Kind,
        cluster_arn: Option<String>,
        from: Bound<Key>,
        max: usize,
    ) -> BoxFuture<'_, Result<Page>> {
        self.blocking(move |s| {
            s.with(|db| state_page(db, revision, kind, cluster_arn.as_deref(), &from, max))
        })
    }

    fn versions_in(&self, kind: Kind, cluster_arn: String) -> BoxFuture<'_, Result<Vec<Version>>> {
        self.blocking(move |s| s.with(|db| versions(db, kind, &cluster_arn, None)))
    }

    /// Pages through the `history` table up to its end, then ends: this
    /// process is the store's only writer, and its StreamHub has the rest.
    fn history(&self, from: u64) -> Feed {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let this = self.clone();
        actix::spawn(async move {
            let mut from = from;
            loop {
                let page = this.blocking(move |s| s.history_page(from)).await;
                let full = match &page {
                    Ok(changes) => match changes.last() {
                        Some(last) => {
                            from = last.entry.revision + 1;
                            changes.len() == HISTORY_PAGE
                        }
                        None => return,
                    },
                    Err(_) => false,
                };
                if tx.send(page).await.is_err() || !full {
                    return;
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Entry;

    fn entry(arn: &str, version: Option<u64>, status: &str) -> Entry {
        Entry::test_task(arn, version, status)
    }

    fn applied(o: &Outcome) -> bool {
        matches!(o, Outcome::Applied(_))
    }

    #[test]
    fn applies_the_version_rule_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Embedded::open(dir.path()).unwrap();
            let out = s
                .commit_sync(
                    vec![
                        Op::Put(entry("a", Some(2), "RUNNING")),
                        Op::Put(entry("a", Some(1), "PENDING")),
                        Op::Put(entry("a", Some(2), "RUNNING")),
                        Op::Put(entry("b", None, "RUNNING")),
                        Op::Put(entry("b", None, "RUNNING")),
                        Op::Put(entry("b", None, "STOPPED")),
                    ],
                    5,
                )
                .unwrap();
            let flags: Vec<bool> = out.iter().map(applied).collect();
            assert_eq!(flags, [true, false, false, true, false, true]);
            assert!(Embedded::open(dir.path()).is_err(), "second open must fail");
        }
        let s = Embedded::open(dir.path()).unwrap();
        let loaded = s.load_sync().unwrap();
        assert_eq!(loaded.revision, 3);
        assert_eq!(loaded.entries.len(), 2);
        let b = loaded.entries.iter().find(|e| e.arn == "b").unwrap();
        assert_eq!(
            (b.revision, b.status.as_str(), b.stored_at_ms),
            (3, "STOPPED", 5)
        );
    }

    #[test]
    fn delete_leaves_a_tombstone_that_blocks_older_events() {
        let dir = tempfile::tempdir().unwrap();
        let s = Embedded::open(dir.path()).unwrap();
        s.commit_sync(vec![Op::Put(entry("a", Some(5), "RUNNING"))], 1)
            .unwrap();
        let stale_delete = s
            .commit_sync(
                vec![Op::Delete {
                    arn: "a".into(),
                    if_revision: 7,
                }],
                2,
            )
            .unwrap();
        assert!(!applied(&stale_delete[0]));
        let out = s
            .commit_sync(
                vec![
                    Op::Delete {
                        arn: "a".into(),
                        if_revision: 1,
                    },
                    Op::Put(entry("a", Some(4), "PENDING")),
                    Op::Put(entry("a", Some(5), "RUNNING")),
                ],
                3,
            )
            .unwrap();
        match &out[0] {
            Outcome::Applied(c) => assert!(c.deleted && c.entry.revision == 2),
            o => panic!("{o:?}"),
        }
        assert!(!applied(&out[1]) && !applied(&out[2]));
        assert_eq!(s.load_sync().unwrap().tombstones, 1);
        assert_eq!(s.purge_sync(3).unwrap(), 0);
        assert_eq!(s.purge_sync(4).unwrap(), 1);
        let out = s
            .commit_sync(vec![Op::Put(entry("a", Some(6), "STOPPED"))], 5)
            .unwrap();
        assert!(applied(&out[0]));
    }

    #[test]
    fn a_short_arn_moving_cluster_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let s = Embedded::open(dir.path()).unwrap();
        s.commit_sync(vec![Op::Put(entry("a", Some(1), "RUNNING"))], 1)
            .unwrap();
        let mut moved = entry("a", Some(2), "RUNNING");
        moved.cluster_arn = "arn:aws:ecs:r:1:cluster/d".into();
        match &s.commit_sync(vec![Op::Put(moved)], 2).unwrap()[0] {
            Outcome::Applied(c) => {
                assert_eq!(c.moved_from.as_deref(), Some("arn:aws:ecs:r:1:cluster/c"))
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn history_keeps_every_change_until_compacted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Embedded::open(dir.path()).unwrap();
            assert_eq!(s.resume_sync(1).unwrap(), Resume::Available);
            s.commit_sync(
                vec![
                    Op::Put(entry("a", Some(1), "PENDING")),
                    Op::Put(entry("a", Some(2), "RUNNING")),
                    Op::Put(entry("a", Some(1), "PENDING")),
                ],
                10,
            )
            .unwrap();
            s.commit_sync(
                vec![Op::Delete {
                    arn: "a".into(),
                    if_revision: 2,
                }],
                20,
            )
            .unwrap();
            let h = s.history_page(1).unwrap();
            let seen: Vec<_> = h
                .iter()
                .map(|c| (c.entry.revision, c.entry.status.as_str(), c.deleted))
                .collect();
            assert_eq!(
                seen,
                [
                    (1, "PENDING", false),
                    (2, "RUNNING", false),
                    (3, "RUNNING", true)
                ]
            );
            assert_eq!(s.history_page(3).unwrap().len(), 1);
            assert!(s.history_page(4).unwrap().is_empty());
            assert_eq!(s.resume_sync(4).unwrap(), Resume::Available);
            assert_eq!(s.resume_sync(5).unwrap(), Resume::Future { revision: 3 });
            // Rows written before 15 go; the floor moves past them.
            s.compact_sync(15).unwrap();
            assert_eq!(s.resume_sync(2).unwrap(), Resume::Compacted);
            assert!(matches!(s.history_page(1), Err(Error::Compacted)));
            assert_eq!(s.history_page(3).unwrap().len(), 1);
        }
        let s = Embedded::open(dir.path()).unwrap();
        assert_eq!(s.resume_sync(2).unwrap(), Resume::Compacted);
        assert_eq!(s.resume_sync(3).unwrap(), Resume::Available);
        s.compact_sync(100).unwrap();
        assert_eq!(s.resume_sync(3).unwrap(), Resume::Compacted);
        assert_eq!(s.resume_sync(4).unwrap(), Resume::Available);
    }

    #[test]
    fn a_store_from_before_history_starts_its_history_at_the_next_revision() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Embedded::open(dir.path()).unwrap();
            s.commit_sync(vec![Op::Put(entry("a", Some(1), "RUNNING"))], 1)
                .unwrap();
            // As an older version left it: no floor recorded.
            let db = s.shared.db.read().unwrap();
            let txn = db.as_ref().unwrap().begin_write().unwrap();
            txn.open_table(META).unwrap().remove(HISTORY_FLOOR).unwrap();
            txn.open_table(META).unwrap().remove(STATE_FLOOR).unwrap();
            txn.delete_table(HISTORY).unwrap();
            txn.commit().unwrap();
        }
        let s = Embedded::open(dir.path()).unwrap();
        assert_eq!(s.resume_sync(1).unwrap(), Resume::Compacted);
        assert_eq!(s.resume_sync(2).unwrap(), Resume::Available);
    }

    fn statuses(s: &Embedded, revision: u64) -> Vec<(String, String)> {
        let db = s.shared.db.read().unwrap();
        let mut out: Vec<_> = state_at(db.as_ref().unwrap(), revision, Kind::Task, None)
            .unwrap()
            .iter()
            .map(|e| (e.arn.clone(), e.status.clone()))
            .collect();
        out.sort();
        out
    }

    fn pair(arn: &str, status: &str) -> (String, String) {
        (arn.to_owned(), status.to_owned())
    }

    #[test]
    fn the_state_at_each_revision_and_each_entity_s_versions_survive_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let s = Embedded::open(dir.path()).unwrap();
        // Times after the store was made: history starts then.
        let t0 = crate::time::now_ms() + 1000;
        let put = |arn, v, status, at| {
            s.commit_sync(vec![Op::Put(entry(arn, Some(v), status))], at)
                .unwrap()
        };
        put("a", 1, "PENDING", t0 + 10); // 1
        put("b", 1, "PENDING", t0 + 20); // 2
        put("a", 2, "RUNNING", t0 + 30); // 3
        s.commit_sync(
            vec![Op::Delete {
                arn: "b".into(),
                if_revision: 2,
            }],
            t0 + 40,
        )
        .unwrap(); // 4
        put("a", 3, "STOPPED", t0 + 50); // 5
        assert_eq!(statuses(&s, 0), []);
        assert_eq!(
            statuses(&s, 2),
            [pair("a", "PENDING"), pair("b", "PENDING")]
        );
        assert_eq!(
            statuses(&s, 3),
            [pair("a", "RUNNING"), pair("b", "PENDING")]
        );
        assert_eq!(statuses(&s, 4), [pair("a", "RUNNING")]);
        assert_eq!(statuses(&s, 5), [pair("a", "STOPPED")]);
        let guard = s.shared.db.read().unwrap();
        let db = guard.as_ref().unwrap();
        let cluster = "arn:aws:ecs:r:1:cluster/c";
        let of = |arn| -> Vec<(u64, bool, i64)> {
            versions(db, Kind::Task, cluster, Some(arn))
                .unwrap()
                .iter()
                .map(|v| (v.entry.revision, v.deleted, v.observed_at_ms))
                .collect()
        };
        assert_eq!(
            of("a"),
            [
                (1, false, t0 + 10),
                (3, false, t0 + 30),
                (5, false, t0 + 50)
            ]
        );
        assert_eq!(of("b"), [(2, false, t0 + 20), (4, true, t0 + 40)]);
        assert!(state_at(db, 3, Kind::Instance, None).unwrap().is_empty());
        assert_eq!(state_at(db, 3, Kind::Task, Some(cluster)).unwrap().len(), 2);
        assert!(
            state_at(db, 3, Kind::Task, Some("arn:aws:ecs:r:1:cluster/d"))
                .unwrap()
                .is_empty()
        );
        // Revision by time: the last committed at or before it.
        assert_eq!(revision_at(db, t0 + 29).unwrap(), Some(2));
        assert_eq!(revision_at(db, t0 + 30).unwrap(), Some(3));
        assert_eq!(revision_at(db, t0 + 99).unwrap(), Some(5));
        drop(guard);

        // Rows before 35 go: a's base is its version 3, b's deletion goes
        // at the next compaction past it.
        s.compact_sync(t0 + 35).unwrap();
        let guard = s.shared.db.read().unwrap();
        let db = guard.as_ref().unwrap();
        let kept = retained(&db.begin_read().unwrap()).unwrap();
        assert_eq!(
            kept,
            Retained {
                revision: 3,
                from_ms: t0 + 30
            }
        );
        assert!(matches!(
            state_at(db, 2, Kind::Task, None),
            Err(Error::Compacted)
        ));
        assert_eq!(revision_at(db, t0 + 29).unwrap(), None);
        assert_eq!(revision_at(db, t0 + 30).unwrap(), Some(3));
        drop(guard);
        assert_eq!(
            statuses(&s, 3),
            [pair("a", "RUNNING"), pair("b", "PENDING")]
        );
        assert_eq!(statuses(&s, 5), [pair("a", "STOPPED")]);
        s.compact_sync(t0 + 45).unwrap();
        assert_eq!(statuses(&s, 4), [pair("a", "RUNNING")]);
        let guard = s.shared.db.read().unwrap();
        let db = guard.as_ref().unwrap();
        let of = |arn| -> Vec<u64> {
            versions(db, Kind::Task, cluster, Some(arn))
                .unwrap()
                .iter()
                .map(|v| v.entry.revision)
                .collect()
        };
        assert_eq!(of("a"), [3, 5]);
        assert_eq!(of("b"), Vec::<u64>::new());
        // Stream resume is unchanged: from the floor on.
        assert!(matches!(history_page(db, 4), Err(Error::Compacted)));
        assert_eq!(history_page(db, 5).unwrap().len(), 1);
    }

    #[test]
    fn windows_of_the_past_put_together_are_the_state_at_that_revision() {
        let dir = tempfile::tempdir().unwrap();
        let s = Embedded::open(dir.path()).unwrap();
        let t0 = crate::time::now_ms() + 1000;
        let mut ops = Vec::new();
        for c in ["a", "b"] {
            for i in 0..5 {
                let mut e = entry(&format!("arn:aws:ecs:r:1:task/{c}/{i}"), Some(1), "RUNNING");
                e.cluster_arn = format!("arn:aws:ecs:r:1:cluster/{c}");
                ops.push(Op::Put(e));
            }
        }
        s.commit_sync(ops, t0).unwrap();
        let then = 10;
        s.commit_sync(
            vec![
                Op::Delete {
                    arn: "arn:aws:ecs:r:1:task/a/1".into(),
                    if_revision: 2,
                },
                Op::Put(entry("arn:aws:ecs:r:1:task/c/9", Some(1), "PENDING")),
            ],
            t0 + 1,
        )
        .unwrap();
        let guard = s.shared.db.read().unwrap();
        let db = guard.as_ref().unwrap();
        let keys = |cluster: Option<&str>, revision: u64| -> Vec<String> {
            let mut out = Vec::new();
            let mut from = Bound::Unbounded;
            for _ in 0..20 {
                let page = state_page(db, revision, Kind::Task, cluster, &from, 3).unwrap();
                out.extend(page.entries.iter().map(|e| e.arn.clone()));
                match (page.more, page.entries.last()) {
                    (true, Some(last)) => from = Bound::Excluded(last.key()),
                    _ => return out,
                }
            }
            panic!("more than 20 windows");
        };
        let whole = |cluster: Option<&str>, revision: u64| -> Vec<String> {
            let mut all = state_at(db, revision, Kind::Task, cluster).unwrap();
            all.sort_by_key(|e| e.key());
            all.iter().map(|e| e.arn.clone()).collect()
        };
        for revision in [then, 12] {
            assert_eq!(keys(None, revision), whole(None, revision), "at {revision}");
            let b = Some("arn:aws:ecs:r:1:cluster/b");
            assert_eq!(keys(b, revision), whole(b, revision), "b at {revision}");
        }
        assert_eq!(keys(None, then).len(), 10);
        assert_eq!(keys(None, 12).len(), 10, "a/1 gone, c/9 came");
        // A window may start inside a cluster, or before the one asked for.
        let from = Bound::Excluded(Key {
            cluster_arn: "arn:aws:ecs:r:1:cluster/a".into(),
            arn: "arn:aws:ecs:r:1:task/a/4".into(),
        });
        let page = state_page(
            db,
            then,
            Kind::Task,
            Some("arn:aws:ecs:r:1:cluster/b"),
            &from,
            100,
        )
        .unwrap();
        assert_eq!(page.entries.len(), 5);
        let page = state_page(db, then, Kind::Task, None, &from, 100).unwrap();
        assert_eq!(
            page.entries.first().map(|e| e.arn.as_str()),
            Some("arn:aws:ecs:r:1:task/b/0")
        );
    }

    #[test]
    fn a_store_from_before_versions_were_indexed_gets_its_index_and_base_rows() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Embedded::open(dir.path()).unwrap();
            s.commit_sync(vec![Op::Put(entry("a", Some(1), "RUNNING"))], 1)
                .unwrap();
            s.commit_sync(vec![Op::Put(entry("b", Some(1), "RUNNING"))], 2)
                .unwrap();
            s.compact_sync(2).unwrap();
            // As an older version left it: no versions, no state floor, and
            // compaction that dropped a's only row.
            let db = s.shared.db.read().unwrap();
            let txn = db.as_ref().unwrap().begin_write().unwrap();
            txn.open_table(META).unwrap().remove(STATE_FLOOR).unwrap();
            txn.open_table(HISTORY).unwrap().remove(1).unwrap();
            txn.delete_table(VERSIONS).unwrap();
            txn.commit().unwrap();
        }
        let s = Embedded::open(dir.path()).unwrap();
        assert_eq!(
            statuses(&s, 2),
            [pair("a", "RUNNING"), pair("b", "RUNNING")]
        );
        let db = s.shared.db.read().unwrap();
        let kept = retained(&db.as_ref().unwrap().begin_read().unwrap()).unwrap();
        assert_eq!(kept.revision, 2, "the state is known from the upgrade on");
    }
}
