//! The etcd store: the production backend, and the one several replicas share.
//!
//! Keys (under `key_prefix`): `{prefix}/e/{ARN}` holds an entry's JSON,
//! `{prefix}/t/{ARN}` a tombstone. Each write is a compare-and-swap
//! transaction on the `mod_revision` of both keys, as read just before, so the
//! version rule holds whichever replica writes; a lost race re-reads and
//! decides again. One entity per transaction: every change gets its own etcd
//! revision, which is its `entityVersion`.
//!
//! The view of every replica is fed by a watch on `{prefix}/e/` ([`Store::feed`]),
//! so a write made by another replica shows up too.

use super::{
    supersedes, BoxFuture, Change, Current, Error, Feed, Loaded, Op, Outcome, Result, Resume,
    Store, Tombstone,
};
use crate::model::Entry;
use etcd_client::{
    Certificate, Client, CompactionOptions, Compare, CompareOp, ConnectOptions, EventType,
    GetOptions, Identity, KeyValue, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use slog::{info, warn, Logger};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Attempts at one write while other replicas keep winning the race.
const MAX_CONFLICTS: usize = 32;
/// Entries per page of the initial load.
const PAGE: i64 = 1000;
/// Changes batches buffered between the watch and the writer.
const FEED_BUFFER: usize = 64;
/// How long a replica's leaderships outlive it (its lease's TTL).
pub const LEADER_TTL: Duration = Duration::from_secs(6);

/// This replica's lease, kept alive in the background while `alive`.
struct Lease {
    id: i64,
    alive: Arc<AtomicBool>,
}

/// How to reach etcd.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub endpoints: Vec<String>,
    pub key_prefix: String,
    pub username: Option<String>,
    /// Read from a file so it never appears in a command line or a log.
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// The etcd store. Cheap to clone.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    entities: String,
    tombstones: String,
    log: Logger,
    /// (time, revision) samples for compaction by age.
    samples: Arc<Mutex<VecDeque<(i64, i64)>>>,
    leaders: String,
    /// Who this process is, as a leader.
    holder: String,
    lease: Arc<tokio::sync::Mutex<Option<Lease>>>,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::Corrupt(e.to_string())
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
}

fn parse_entry(kv: &KeyValue) -> Result<Entry> {
    let mut e: Entry = serde_json::from_slice(kv.value()).map_err(corrupt)?;
    e.revision = kv.mod_revision() as u64;
    Ok(e)
}

impl Etcd {
    /// Connects (lazily: an unreachable etcd shows up as `Unavailable` later).
    pub async fn connect(config: &Config, log: Logger) -> Result<Etcd> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            opts = opts.with_user(user.clone(), password.clone());
        }
        if config.ca_file.is_some() || config.cert_file.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &config.ca_file {
                let pem =
                    std::fs::read(ca).map_err(|e| unavailable(format!("{}: {e}", ca.display())))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
                let c = std::fs::read(cert)
                    .map_err(|e| unavailable(format!("{}: {e}", cert.display())))?;
                let k = std::fs::read(key)
                    .map_err(|e| unavailable(format!("{}: {e}", key.display())))?;
                tls = tls.identity(Identity::from_pem(c, k));
            }
            opts = opts.with_tls(tls);
        }
        let client = Client::connect(&config.endpoints, Some(opts))
            .await
            .map_err(unavailable)?;
        let prefix = config.key_prefix.trim_end_matches('/');
        Ok(Etcd {
            client,
            entities: format!("{prefix}/e/"),
            tombstones: format!("{prefix}/t/"),
            leaders: format!("{prefix}/leader/"),
            holder: format!("{}-{}", std::process::id(), crate::time::now_ms()),
            log,
            samples: Arc::default(),
            lease: Arc::default(),
        })
    }

    fn entity_key(&self, arn: &str) -> String {
        format!("{}{arn}", self.entities)
    }

    fn tombstone_key(&self, arn: &str) -> String {
        format!("{}{arn}", self.tombstones)
    }

    async fn load_all(&self) -> Result<Loaded> {
        let mut kv = self.client.kv_client();
        let end = prefix_end(&self.entities);
        let mut from = self.entities.clone().into_bytes();
        let mut revision = 0;
        let mut entries = Vec::new();
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                // Every page from the revision of the first: one consistent state.
                opts = opts.with_revision(revision);
            }
            let resp = kv
                .get(from.clone(), Some(opts))
                .await
                .map_err(unavailable)?;
            if revision == 0 {
                revision = revision_of(resp.header());
            }
            for kv in resp.kvs() {
                entries.push(parse_entry(kv)?);
            }
            match (resp.more(), resp.kvs().last()) {
                (true, Some(last)) => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        let tombstones = kv
            .get(
                self.tombstones.clone(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .map_err(unavailable)?
            .count() as usize;
        Ok(Loaded {
            revision: revision.max(0) as u64,
            entries,
            tombstones,
        })
    }

    /// Reads an entity and its tombstone together.
    async fn read(&self, arn: &str) -> Result<(Option<KeyValue>, Option<KeyValue>)> {
        let mut kv = self.client.kv_client();
        let txn = Txn::new().and_then([
            TxnOp::get(self.entity_key(arn), None),
            TxnOp::get(self.tombstone_key(arn), None),
        ]);
        let resp = kv.txn(txn).await.map_err(unavailable)?;
        let mut found = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(mut g) => g.take_kvs().into_iter().next(),
            _ => None,
        });
        Ok((found.next().flatten(), found.next().flatten()))
    }

    async fn put(&self, mut entry: Entry, now_ms: i64) -> Result<Outcome> {
        let ekey = self.entity_key(&entry.arn);
        let tkey = self.tombstone_key(&entry.arn);
        for _ in 0..MAX_CONFLICTS {
            let (live, tomb) = self.read(&entry.arn).await?;
            let old = live.as_ref().map(parse_entry).transpose()?;
            let current = match (&old, &tomb) {
                (Some(e), _) => Current::Live {
                    version: e.version,
                    entity: e.entity.get(),
                },
                (None, Some(t)) => Current::Gone {
                    version: serde_json::from_slice::<Tombstone>(t.value())
                        .map_err(corrupt)?
                        .version,
                },
                (None, None) => Current::Absent,
            };
            if !supersedes(entry.version, entry.entity.get(), current) {
                return Ok(Outcome::Stale);
            }
            entry.stored_at_ms = now_ms;
            entry.revision = 0;
            let value = serde_json::to_vec(&entry).map_err(corrupt)?;
            let seen = |kv: &Option<KeyValue>| kv.as_ref().map_or(0, |kv| kv.mod_revision());
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(ekey.clone(), CompareOp::Equal, seen(&live)),
                    Compare::mod_revision(tkey.clone(), CompareOp::Equal, seen(&tomb)),
                ])
                .and_then([
                    TxnOp::put(ekey.clone(), value, None),
                    TxnOp::delete(tkey.clone(), None),
                ]);
            let resp = self
                .client
                .kv_client()
                .txn(txn)
                .await
                .map_err(unavailable)?;
            if resp.succeeded() {
                entry.revision = revision_of(resp.header()) as u64;
                let moved_from = old
                    .filter(|o| o.cluster_arn != entry.cluster_arn)
                    .map(|o| o.cluster_arn);
                return Ok(Outcome::Applied(Change {
                    entry: Arc::new(entry),
                    deleted: false,
                    moved_from,
                }));
            }
        }
        Err(Error::Unavailable(format!(
            "gave up on {} after {MAX_CONFLICTS} write conflicts",
            entry.arn
        )))
    }

    async fn delete(&self, arn: &str, if_revision: u64, now_ms: i64) -> Result<Outcome> {
        let (Some(live), _) = self.read(arn).await? else {
            return Ok(Outcome::Stale);
        };
        if live.mod_revision() as u64 != if_revision {
            return Ok(Outcome::Stale);
        }
        let mut entry = parse_entry(&live)?;
        let tomb = Tombstone {
            kind: entry.kind,
            version: entry.version,
            revision: 0,
            deleted_at_ms: now_ms,
        };
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.entity_key(arn),
                CompareOp::Equal,
                live.mod_revision(),
            )])
            .and_then([
                TxnOp::delete(self.entity_key(arn), None),
                TxnOp::put(
                    self.tombstone_key(arn),
                    serde_json::to_vec(&tomb).map_err(corrupt)?,
                    None,
                ),
            ]);
        let resp = self
            .client
            .kv_client()
            .txn(txn)
            .await
            .map_err(unavailable)?;
        if !resp.succeeded() {
            return Ok(Outcome::Stale);
        }
        entry.revision = revision_of(resp.header()) as u64;
        Ok(Outcome::Applied(Change {
            entry: Arc::new(entry),
            deleted: true,
            moved_from: None,
        }))
    }

    async fn purge(&self, before_ms: i64) -> Result<usize> {
        let mut kv = self.client.kv_client();
        let resp = kv
            .get(
                self.tombstones.clone(),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(unavailable)?;
        let mut purged = 0;
        for t in resp.kvs() {
            let old = serde_json::from_slice::<Tombstone>(t.value())
                .map_or(true, |t| t.deleted_at_ms < before_ms);
            if !old {
                continue;
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    t.key(),
                    CompareOp::Equal,
                    t.mod_revision(),
                )])
                .and_then([TxnOp::delete(t.key(), None)]);
            if kv.txn(txn).await.map_err(unavailable)?.succeeded() {
                purged += 1;
            }
        }
        Ok(purged)
    }

    /// The store's current revision (a count-only read: cheap).
    async fn revision(&self) -> Result<i64> {
        let resp = self
            .client
            .kv_client()
            .get(
                self.entities.clone(),
                Some(GetOptions::new().with_count_only()),
            )
            .await
            .map_err(unavailable)?;
        Ok(revision_of(resp.header()))
    }

    /// Whether etcd still has every revision from `from` on: a count-only read
    /// at `from` fails once it is compacted.
    async fn resume(&self, from: u64) -> Result<Resume> {
        let revision = self.revision().await?.max(0) as u64;
        if from > revision + 1 {
            return Ok(Resume::Future { revision });
        }
        if from > revision {
            return Ok(Resume::Available);
        }
        let opts = GetOptions::new()
            .with_count_only()
            .with_revision(from.max(1) as i64);
        match self
            .client
            .kv_client()
            .get(self.entities.clone(), Some(opts))
            .await
        {
            Ok(_) => Ok(Resume::Available),
            Err(e) if e.to_string().contains("compacted") => Ok(Resume::Compacted),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn compact(&self, now_ms: i64, retention: Duration) -> Result<()> {
        let revision = self.revision().await?;
        let cutoff = now_ms - retention.as_millis() as i64;
        let target = {
            let Ok(mut s) = self.samples.lock() else {
                return Ok(());
            };
            s.push_back((now_ms, revision));
            // The newest sample older than the retention is the compaction point.
            let mut target = None;
            while s.front().is_some_and(|&(at, _)| at <= cutoff) {
                target = s.pop_front().map(|(_, r)| r);
            }
            if let Some(t) = target {
                s.push_front((cutoff, t));
            }
            target
        };
        if let Some(t) = target.filter(|&t| t > 1) {
            match self
                .client
                .kv_client()
                .compact(t, Some(CompactionOptions::new()))
                .await
            {
                Ok(_) => info!(self.log, "compacted etcd history"; "revision" => t),
                // Another replica compacted at or past it already.
                Err(e) if e.to_string().contains("compacted") => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(())
    }

    /// This replica's lease: granted on first use, kept alive in the
    /// background, granted anew if it was lost.
    async fn lease(&self) -> Result<i64> {
        let mut slot = self.lease.lock().await;
        if let Some(l) = slot.as_ref().filter(|l| l.alive.load(Ordering::SeqCst)) {
            return Ok(l.id);
        }
        let mut leases = self.client.lease_client();
        let id = leases
            .grant(LEADER_TTL.as_secs() as i64, None)
            .await
            .map_err(unavailable)?
            .id();
        let (mut keeper, mut responses) = leases.keep_alive(id).await.map_err(unavailable)?;
        let alive = Arc::new(AtomicBool::new(true));
        let flag = alive.clone();
        let log = self.log.clone();
        actix::spawn(async move {
            loop {
                tokio::time::sleep(LEADER_TTL / 3).await;
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match responses.message().await {
                    Ok(Some(r)) if r.ttl() > 0 => {}
                    _ => break,
                }
            }
            warn!(log, "leadership lease lost"; "lease" => id);
            flag.store(false, Ordering::SeqCst);
        });
        *slot = Some(Lease { id, alive });
        Ok(id)
    }

    async fn try_lead(&self, name: &str) -> Result<bool> {
        let lease = self.lease().await?;
        let key = format!("{}{name}", self.leaders);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                self.holder.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self
            .client
            .kv_client()
            .txn(txn)
            .await
            .map_err(unavailable)?;
        if resp.succeeded() {
            return Ok(true);
        }
        let holder = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        Ok(holder.as_deref() == Some(self.holder.as_bytes()))
    }

    fn change_of(&self, ev: &etcd_client::Event) -> Result<Option<Change>> {
        let (Some(kv), prev) = (ev.kv(), ev.prev_kv()) else {
            return Ok(None);
        };
        let prev = prev.map(parse_entry).transpose()?;
        match ev.event_type() {
            EventType::Put => {
                let entry = parse_entry(kv)?;
                let moved_from = prev
                    .filter(|p| p.cluster_arn != entry.cluster_arn)
                    .map(|p| p.cluster_arn);
                Ok(Some(Change {
                    entry: Arc::new(entry),
                    deleted: false,
                    moved_from,
                }))
            }
            EventType::Delete => Ok(prev.map(|mut last| {
                last.revision = kv.mod_revision() as u64;
                Change {
                    entry: Arc::new(last),
                    deleted: true,
                    moved_from: None,
                }
            })),
        }
    }

    /// Watches `{prefix}/e/` from `from` on, forever: reconnects after errors,
    /// and ends with `Compacted` when the history it needs is gone.
    async fn watch(self, mut from: i64, tx: mpsc::Sender<Result<Vec<Change>>>) {
        let mut delay = Duration::from_millis(100);
        loop {
            let opts = WatchOptions::new()
                .with_prefix()
                .with_start_revision(from)
                .with_prev_key()
                .with_progress_notify();
            let mut watch = self.client.watch_client();
            match watch.watch(self.entities.clone(), Some(opts)).await {
                Ok(mut stream) => loop {
                    let message = tokio::select! {
                        m = stream.message() => m,
                        // Nobody reads any more (a stream reader went live).
                        () = tx.closed() => return,
                    };
                    match message {
                        Ok(Some(resp)) => {
                            delay = Duration::from_millis(100);
                            if resp.compact_revision() > 0 {
                                let _ = tx.send(Err(Error::Compacted)).await;
                                return;
                            }
                            if resp.canceled() {
                                break;
                            }
                            let mut changes = Vec::with_capacity(resp.events().len());
                            for ev in resp.events() {
                                match self.change_of(ev) {
                                    Ok(Some(c)) => changes.push(c),
                                    Ok(None) => {}
                                    Err(e) => {
                                        warn!(self.log, "unreadable entry in etcd"; "error" => %e)
                                    }
                                }
                            }
                            if let Some(last) = resp.events().last().and_then(|e| e.kv()) {
                                from = last.mod_revision() + 1;
                            }
                            if !changes.is_empty() && tx.send(Ok(changes)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            warn!(self.log, "etcd watch failed; resuming"; "error" => %e, "from" => from);
                            break;
                        }
                    }
                },
                Err(e) => warn!(self.log, "cannot watch etcd; retrying"; "error" => %e),
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

impl Store for Etcd {
    fn load(&self) -> BoxFuture<'_, Result<Loaded>> {
        Box::pin(self.load_all())
    }

    fn commit(&self, ops: Vec<Op>, now_ms: i64) -> BoxFuture<'_, Result<Vec<Outcome>>> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(ops.len());
            for op in ops {
                outcomes.push(match op {
                    Op::Put(entry) => self.put(entry, now_ms).await?,
                    Op::Delete { arn, if_revision } => {
                        self.delete(&arn, if_revision, now_ms).await?
                    }
                });
            }
            Ok(outcomes)
        })
    }

    fn purge_tombstones(&self, before_ms: i64) -> BoxFuture<'_, Result<usize>> {
        Box::pin(self.purge(before_ms))
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.revision().await.map(|_| ()) })
    }

    fn feed(&self, from_revision: u64) -> Option<Feed> {
        let (tx, rx) = mpsc::channel(FEED_BUFFER);
        actix::spawn(self.clone().watch(from_revision as i64, tx));
        Some(rx)
    }

    fn compact_history(&self, now_ms: i64, retention: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.compact(now_ms, retention))
    }

    fn check_resume(&self, from: u64) -> BoxFuture<'_, Result<Resume>> {
        Box::pin(self.resume(from))
    }

    /// A watch from `from`: history first, then live changes, until dropped.
    fn history(&self, from: u64) -> Feed {
        let (tx, rx) = mpsc::channel(4);
        actix::spawn(self.clone().watch(from.max(1) as i64, tx));
        rx
    }

    fn lead(&self, name: &str) -> BoxFuture<'_, Result<bool>> {
        let name = name.to_owned();
        Box::pin(async move { self.try_lead(&name).await })
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("css/e/"), b"css/e0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
