//! The etcd store: the production backend, and the one several replicas share.
//!
//! Keys (under `key_prefix`): `{prefix}/e/{ARN}` holds an entry's JSON,
//! `{prefix}/t/{ARN}` a tombstone. Each write is a compare-and-swap
//! transaction on the `mod_revision` of both keys, so the version rule holds
//! whichever replica writes; a lost race re-reads and decides again. One
//! entity per transaction: every change gets its own etcd revision, which is
//! its `entityVersion`.
//!
//! What the compares expect comes from what this replica last saw of the ARN
//! ([`Seen`]: loaded at start, then what it wrote), so a write is one round
//! trip, not a read and a write. That is only a guess, checked by the
//! compares: when another replica wrote in between, the transaction fails and
//! the write reads and decides again, and a guess that says "stale" is
//! confirmed by a read before the event is dropped.
//!
//! The view of every replica is fed by a watch on `{prefix}/e/` ([`Store::feed`]),
//! so a write made by another replica shows up too.

use super::{
    supersedes, BoxFuture, Change, Current, Error, Feed, Loaded, Op, Outcome, Result, Resume,
    Retained, Store, Tombstone, Version,
};
use crate::model::{Entry, Kind, SharedEntry};
use crate::retry::Backoff;
use etcd_client::{
    Certificate, CompactionOptions, Compare, CompareOp, ConnectOptions, EventType, GetOptions,
    Identity, KeyValue, PutOptions, SortOrder, SortTarget, TlsOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use members::Members;
use slog::{info, warn, Logger};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

mod members;

/// Attempts at one write while other replicas keep winning the race.
const MAX_CONFLICTS: usize = 32;
/// Entries per page of the initial load.
const PAGE: i64 = 1000;
/// Changes batches buffered between the watch and the writer.
const FEED_BUFFER: usize = 64;
/// How long a replica's leaderships outlive it (its lease's TTL).
pub const LEADER_TTL: Duration = Duration::from_secs(6);

/// Taken off a lease's life as this replica counts it, for the time a
/// keep-alive takes to reach etcd.
const LEASE_MARGIN: Duration = Duration::from_secs(1);

/// This replica's lease. It is counted on only until `valid_until` by this
/// process's monotonic clock: the time the last keep-alive etcd answered was
/// sent, plus the TTL it answered, less a margin. A process that was frozen
/// or cut off finds it has passed before it does anything as a leader.
#[derive(Clone)]
struct Lease {
    id: i64,
    valid_until: Arc<Mutex<tokio::time::Instant>>,
}

impl Lease {
    fn valid(&self) -> bool {
        self.valid_until
            .lock()
            .is_ok_and(|until| tokio::time::Instant::now() < *until)
    }
}

/// How long a lease granted or renewed with `ttl` seconds is counted on.
fn lease_life(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64).saturating_sub(LEASE_MARGIN)
}

/// Keeps lease `id` alive every third of its TTL while its [`Lease`] lives,
/// moving `valid_until` on with each answer; stops at the first keep-alive
/// etcd does not answer in time (the lease then runs out by the clock).
async fn keep_alive(
    id: i64,
    mut keeper: etcd_client::LeaseKeeper,
    mut responses: etcd_client::LeaseKeepAliveStream,
    valid_until: std::sync::Weak<Mutex<tokio::time::Instant>>,
    log: Logger,
) {
    loop {
        tokio::time::sleep(LEADER_TTL / 3).await;
        let Some(until) = valid_until.upgrade() else {
            return; // replaced by a new lease
        };
        let sent = tokio::time::Instant::now();
        let answered = tokio::time::timeout(LEADER_TTL / 3, async {
            keeper.keep_alive().await?;
            responses.message().await
        })
        .await;
        match answered {
            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                if let Ok(mut u) = until.lock() {
                    *u = sent + lease_life(r.ttl());
                }
            }
            _ => break,
        }
    }
    warn!(log, "leadership lease lost"; "lease" => id);
}

/// How to reach etcd.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub endpoints: Vec<String>,
    pub key_prefix: String,
    /// Writes (transactions) in flight together, for different ARNs.
    pub max_in_flight: usize,
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
    members: Arc<Members>,
    max_in_flight: usize,
    entities: String,
    tombstones: String,
    log: Logger,
    /// (time, revision) samples for compaction by age.
    samples: Arc<Mutex<VecDeque<(i64, i64)>>>,
    leaders: String,
    /// Who this process is, as a leader.
    holder: String,
    /// Held while a lease is being granted, so that one is granted at a time.
    granting: Arc<tokio::sync::Mutex<()>>,
    /// The current lease (read without waiting by `leads_now`).
    lease: Arc<Mutex<Option<Lease>>>,
    /// The names this replica won the lead of, under its current lease
    /// (emptied when a new lease is granted).
    led: Arc<Mutex<std::collections::HashSet<String>>>,
    /// What this replica last saw of each ARN it holds or remembers deleted.
    seen: Arc<Mutex<HashMap<String, Seen>>>,
}

/// What an ARN's two keys held when this replica last read or wrote them.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// The live entry; its `revision` is the key's `mod_revision`.
    live: Option<SharedEntry>,
    tomb: Option<SeenTomb>,
}

/// Where what [`Seen`] records was learnt.
#[derive(Debug, Clone, Copy)]
enum Learnt {
    Read,
    Write,
    Feed,
}

#[derive(Debug, Clone, Copy)]
struct SeenTomb {
    /// The key's `mod_revision`.
    revision: i64,
    /// The version it blocks up to.
    version: Option<u64>,
    deleted_at_ms: i64,
}

impl Seen {
    fn live(entry: SharedEntry) -> Seen {
        Seen {
            live: Some(entry),
            tomb: None,
        }
    }

    /// Deleted at `revision`, blocking versions up to `version`.
    fn gone(revision: u64, version: Option<u64>, deleted_at_ms: i64) -> Seen {
        Seen {
            live: None,
            tomb: Some(SeenTomb {
                revision: revision as i64,
                version,
                deleted_at_ms,
            }),
        }
    }

    fn current(&self) -> Current<'_> {
        match (&self.live, self.tomb) {
            (Some(e), _) => Current::Live {
                version: e.version,
                entity: e.entity.get(),
            },
            (None, Some(t)) => Current::Gone { version: t.version },
            (None, None) => Current::Absent,
        }
    }

    fn live_revision(&self) -> i64 {
        self.live.as_ref().map_or(0, |e| e.revision as i64)
    }

    fn tomb_revision(&self) -> i64 {
        self.tomb.map_or(0, |t| t.revision)
    }
}

/// etcd refuses a read at, or a compaction to, a revision its history no
/// longer holds with gRPC `OUT_OF_RANGE` ("required revision has been
/// compacted"); callers ask only for revisions it has reached.
fn is_compacted(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::OutOfRange)
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
    let mut e = Entry::from_stored(kv.value()).map_err(corrupt)?;
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
        // A member that has lost its leader refuses calls rather than answer
        // from a stale state; the next member is asked.
        let opts = opts.with_require_leader(true);
        let members = Arc::new(Members::new(&config.endpoints, opts, log.clone()));
        // With credentials, one member checks them now.
        members
            .call(|_| async { Ok(()) })
            .await
            .map_err(unavailable)?;
        let prefix = config.key_prefix.trim_end_matches('/');
        Ok(Etcd {
            members,
            max_in_flight: config.max_in_flight.max(1),
            entities: format!("{prefix}/e/"),
            tombstones: format!("{prefix}/t/"),
            leaders: format!("{prefix}/leader/"),
            holder: format!("{}-{}", std::process::id(), crate::time::now_ms()),
            log,
            samples: Arc::default(),
            granting: Arc::default(),
            lease: Arc::default(),
            led: Arc::default(),
            seen: Arc::default(),
        })
    }

    /// A range read, on whichever member answers.
    async fn get(&self, key: Vec<u8>, opts: GetOptions) -> Result<etcd_client::GetResponse> {
        self.members
            .call(|c| {
                let (key, opts) = (key.clone(), opts.clone());
                async move { c.kv_client().get(key, Some(opts)).await }
            })
            .await
            .map_err(unavailable)
    }

    /// A transaction, on whichever member answers. A transaction whose
    /// answer was lost may have been applied: its compares then fail on the
    /// retry, and the caller reads and decides again.
    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse> {
        self.members
            .call(|c| {
                let txn = txn.clone();
                async move { c.kv_client().txn(txn).await }
            })
            .await
            .map_err(unavailable)
    }

    /// Writes `ops`, one compare-and-swap transaction each (with `fence`,
    /// only while this replica leads that name): the ops of one ARN in
    /// order, those of different ARNs up to `max_in_flight` at once. The
    /// outcomes are in the order of `ops`; on an error, some ops may have
    /// been written (the feed shows which) and the caller retries.
    async fn write(&self, ops: Vec<Op>, now_ms: i64, fence: Option<&str>) -> Result<Vec<Outcome>> {
        use futures_util::StreamExt as _;
        let count = ops.len();
        let mut chains: Vec<Vec<(usize, Op)>> = Vec::new();
        let mut chain_of: HashMap<String, usize> = HashMap::new();
        for (i, op) in ops.into_iter().enumerate() {
            let arn = match &op {
                Op::Put(entry) => entry.arn.clone(),
                Op::Delete { arn, .. } => arn.clone(),
            };
            let c = *chain_of.entry(arn).or_insert_with(|| {
                chains.push(Vec::new());
                chains.len() - 1
            });
            chains[c].push((i, op));
        }
        let written: Vec<Result<Vec<(usize, Outcome)>>> =
            futures_util::stream::iter(chains.into_iter().map(|chain| async move {
                let mut done = Vec::with_capacity(chain.len());
                for (i, op) in chain {
                    done.push((i, self.write_one(op, now_ms, fence).await?));
                }
                Ok(done)
            }))
            .buffer_unordered(self.max_in_flight)
            .collect()
            .await;
        let mut outcomes = Vec::with_capacity(count);
        for chain in written {
            outcomes.extend(chain?);
        }
        outcomes.sort_unstable_by_key(|(i, _)| *i);
        Ok(outcomes.into_iter().map(|(_, o)| o).collect())
    }

    async fn write_one(&self, op: Op, now_ms: i64, fence: Option<&str>) -> Result<Outcome> {
        match op {
            Op::Put(entry) => self.put(entry, now_ms, fence).await,
            Op::Delete { arn, if_revision } => self.delete(&arn, if_revision, now_ms, fence).await,
        }
    }

    /// A transaction of `compares` and `ops`; with `fence`, also on the
    /// leader key of that name holding this replica (read back when the
    /// compares fail, to tell a lost lead from a lost race). Refused at once
    /// when this replica's lease has run out by its own clock.
    fn fenced(
        &self,
        mut compares: Vec<Compare>,
        ops: Vec<TxnOp>,
        fence: Option<&str>,
    ) -> Result<Txn> {
        let Some(name) = fence else {
            return Ok(Txn::new().when(compares).and_then(ops));
        };
        if !self.leads_now(name) {
            return Err(Error::NotLeader(name.to_owned()));
        }
        let key = self.leader_key(name);
        compares.push(Compare::value(
            key.clone(),
            CompareOp::Equal,
            self.holder.clone(),
        ));
        Ok(Txn::new()
            .when(compares)
            .and_then(ops)
            .or_else([TxnOp::get(key, None)]))
    }

    /// `NotLeader` when a fenced transaction failed because the leader key
    /// no longer holds this replica.
    fn check_fence(&self, resp: &etcd_client::TxnResponse, fence: Option<&str>) -> Result<()> {
        let Some(name) = fence.filter(|_| !resp.succeeded()) else {
            return Ok(());
        };
        let holds = resp.op_responses().into_iter().any(|r| match r {
            TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .is_some_and(|kv| kv.value() == self.holder.as_bytes()),
            _ => false,
        });
        if holds {
            return Ok(());
        }
        self.led
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Err(Error::NotLeader(name.to_owned()))
    }

    /// Whether this replica won the lead of `name` and its lease has not run
    /// out by its own clock.
    fn leads_now(&self, name: &str) -> bool {
        let won = self
            .led
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name);
        won && self.current_lease().is_some()
    }

    /// The current lease, while it is counted on.
    fn current_lease(&self) -> Option<Lease> {
        let lease = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        lease.clone().filter(Lease::valid)
    }

    fn leader_key(&self, name: &str) -> String {
        format!("{}{name}", self.leaders)
    }

    fn entity_key(&self, arn: &str) -> String {
        format!("{}{arn}", self.entities)
    }

    fn tombstone_key(&self, arn: &str) -> String {
        format!("{}{arn}", self.tombstones)
    }

    async fn load_all(&self) -> Result<Loaded> {
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
            let resp = self.get(from.clone(), opts).await?;
            if revision == 0 {
                revision = revision_of(resp.header());
            }
            for kv in resp.kvs() {
                entries.push(Arc::new(parse_entry(kv)?));
            }
            match (resp.more(), resp.kvs().last()) {
                (true, Some(last)) => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        let tombstones = self
            .get(
                self.tombstones.clone().into_bytes(),
                GetOptions::new().with_prefix().with_count_only(),
            )
            .await?
            .count() as usize;
        // Tombstones are left out: a write guesses there is none, and the
        // compare tells it otherwise for the few ARNs that have one.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.clear();
        seen.extend(
            entries
                .iter()
                .map(|e| (e.arn.clone(), Seen::live(e.clone()))),
        );
        drop(seen);
        Ok(Loaded {
            revision: revision.max(0) as u64,
            entries,
            tombstones,
        })
    }

    /// What this replica last saw of `arn` (nothing known: absent).
    fn guess(&self, arn: &str) -> Seen {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(arn).cloned().unwrap_or_default()
    }

    /// Records what `arn` holds now, as learnt `from` a read, a write or the
    /// feed. A read is the truth; a write or the feed can arrive after a
    /// later state is known (the feed may show a write before the write's
    /// own answer does), and then changes nothing. At an equal revision the
    /// feed's copy wins: it is the one the view keeps, so memory holds the
    /// entry once.
    fn remember(&self, arn: &str, now: Seen, from: Learnt) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let known = seen
            .get(arn)
            .map_or(0, |old| old.live_revision().max(old.tomb_revision()));
        let new = now.live_revision().max(now.tomb_revision());
        let keep = match from {
            Learnt::Read => false,
            Learnt::Write => known >= new,
            Learnt::Feed => known > new,
        };
        if keep {
            return;
        }
        if now.live.is_none() && now.tomb.is_none() {
            seen.remove(arn);
        } else if let Some(old) = seen.get_mut(arn) {
            *old = now;
        } else {
            seen.insert(arn.to_owned(), now);
        }
    }

    /// Reads an entity and its tombstone together, and remembers them.
    async fn read(&self, arn: &str) -> Result<Seen> {
        let txn = Txn::new().and_then([
            TxnOp::get(self.entity_key(arn), None),
            TxnOp::get(self.tombstone_key(arn), None),
        ]);
        let resp = self.txn(txn).await?;
        let mut found = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(mut g) => g.take_kvs().into_iter().next(),
            _ => None,
        });
        let (live, tomb) = (found.next().flatten(), found.next().flatten());
        let now = Seen {
            live: live.as_ref().map(parse_entry).transpose()?.map(Arc::new),
            tomb: match tomb {
                Some(t) => {
                    let stored: Tombstone = serde_json::from_slice(t.value()).map_err(corrupt)?;
                    Some(SeenTomb {
                        revision: t.mod_revision(),
                        version: stored.version,
                        deleted_at_ms: stored.deleted_at_ms,
                    })
                }
                None => None,
            },
        };
        self.remember(arn, now.clone(), Learnt::Read);
        Ok(now)
    }

    async fn put(&self, mut entry: Entry, now_ms: i64, fence: Option<&str>) -> Result<Outcome> {
        let ekey = self.entity_key(&entry.arn);
        let tkey = self.tombstone_key(&entry.arn);
        let mut guess = Some(self.guess(&entry.arn));
        for _ in 0..MAX_CONFLICTS {
            let (seen, guessed) = match guess.take() {
                Some(seen) => (seen, true),
                None => (self.read(&entry.arn).await?, false),
            };
            if !supersedes(
                entry.kind,
                entry.version,
                entry.entity.get(),
                seen.current(),
            ) {
                if guessed {
                    continue; // confirm with what the store holds now
                }
                return Ok(Outcome::Stale);
            }
            entry.stored_at_ms = now_ms;
            entry.revision = 0;
            let value = serde_json::to_vec(&entry).map_err(corrupt)?;
            let txn = self.fenced(
                vec![
                    Compare::mod_revision(ekey.clone(), CompareOp::Equal, seen.live_revision()),
                    Compare::mod_revision(tkey.clone(), CompareOp::Equal, seen.tomb_revision()),
                ],
                vec![
                    TxnOp::put(ekey.clone(), value, None),
                    TxnOp::delete(tkey.clone(), None),
                ],
                fence,
            )?;
            let resp = self.txn(txn).await?;
            self.check_fence(&resp, fence)?;
            if resp.succeeded() {
                entry.revision = revision_of(resp.header()) as u64;
                let moved_from = seen
                    .live
                    .filter(|o| o.cluster_arn != entry.cluster_arn)
                    .map(|o| o.cluster_arn.clone());
                let entry = Arc::new(entry);
                self.remember(&entry.arn, Seen::live(entry.clone()), Learnt::Write);
                return Ok(Outcome::Applied(Change {
                    entry,
                    deleted: false,
                    moved_from,
                }));
            }
            // Another replica wrote it since (or the guess was wrong): read.
        }
        Err(Error::Unavailable(format!(
            "gave up on {} after {MAX_CONFLICTS} write conflicts",
            entry.arn
        )))
    }

    async fn delete(
        &self,
        arn: &str,
        if_revision: u64,
        now_ms: i64,
        fence: Option<&str>,
    ) -> Result<Outcome> {
        // The compare below holds the delete to `if_revision` whatever the
        // guess: a wrong one can only make it stale, as it should be.
        let guessed = self.guess(arn).live.filter(|e| e.revision == if_revision);
        let mut entry = match guessed {
            Some(e) => Entry::clone(&e),
            None => match self.read(arn).await?.live {
                Some(e) if e.revision == if_revision => Entry::clone(&e),
                _ => return Ok(Outcome::Stale),
            },
        };
        let tomb = Tombstone {
            kind: entry.kind,
            version: entry.version,
            revision: 0,
            deleted_at_ms: now_ms,
        };
        let txn = self.fenced(
            vec![Compare::mod_revision(
                self.entity_key(arn),
                CompareOp::Equal,
                if_revision as i64,
            )],
            vec![
                TxnOp::delete(self.entity_key(arn), None),
                TxnOp::put(
                    self.tombstone_key(arn),
                    serde_json::to_vec(&tomb).map_err(corrupt)?,
                    None,
                ),
            ],
            fence,
        )?;
        let resp = self.txn(txn).await?;
        self.check_fence(&resp, fence)?;
        if !resp.succeeded() {
            return Ok(Outcome::Stale);
        }
        entry.revision = revision_of(resp.header()) as u64;
        let gone = Seen::gone(entry.revision, entry.version, now_ms);
        self.remember(arn, gone, Learnt::Write);
        Ok(Outcome::Applied(Change {
            entry: Arc::new(entry),
            deleted: true,
            moved_from: None,
        }))
    }

    async fn purge(&self, before_ms: i64) -> Result<usize> {
        let resp = self
            .get(
                self.tombstones.clone().into_bytes(),
                GetOptions::new().with_prefix(),
            )
            .await?;
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
            if self.txn(txn).await?.succeeded() {
                purged += 1;
            }
        }
        // Whoever purged them (this replica or another), forget them too.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, s| {
            s.live.is_some() || s.tomb.is_some_and(|t| t.deleted_at_ms >= before_ms)
        });
        Ok(purged)
    }

    /// The store's current revision (a count-only read: cheap).
    async fn revision(&self) -> Result<i64> {
        let resp = self
            .get(
                self.entities.clone().into_bytes(),
                GetOptions::new().with_count_only(),
            )
            .await?;
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
        let key = self.entities.clone();
        let read = self.members.call(|c| {
            let (key, opts) = (key.clone(), opts.clone());
            async move { c.kv_client().get(key, Some(opts)).await }
        });
        match read.await {
            Ok(_) => Ok(Resume::Available),
            Err(e) if is_compacted(&e) => Ok(Resume::Compacted),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// A range read at `revision`: `Compacted` once etcd no longer has it.
    async fn get_at(
        &self,
        key: Vec<u8>,
        opts: GetOptions,
        revision: i64,
    ) -> Result<etcd_client::GetResponse> {
        let opts = opts.with_revision(revision);
        let read = self.members.call(|c| {
            let (key, opts) = (key.clone(), opts.clone());
            async move { c.kv_client().get(key, Some(opts)).await }
        });
        match read.await {
            Ok(r) => Ok(r),
            Err(e) if is_compacted(&e) => Err(Error::Compacted),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The oldest revision etcd still has: a binary search of count-only
    /// reads (cheap: no value is read).
    async fn floor(&self) -> Result<i64> {
        let current = self.revision().await?;
        let (mut lo, mut hi) = (1, current.max(1));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let opts = GetOptions::new().with_count_only();
            match self
                .get_at(self.entities.clone().into_bytes(), opts, mid)
                .await
            {
                Ok(_) => hi = mid,
                Err(Error::Compacted) => lo = mid + 1,
                Err(e) => return Err(e),
            }
        }
        Ok(lo)
    }

    /// When `revision` was written, as the store's own records tell: the
    /// write time of the newest entity or tombstone at it (`None`: nothing
    /// is stored at it).
    async fn time_of(&self, revision: i64) -> Result<Option<i64>> {
        let mut newest: Option<(i64, i64)> = None;
        for prefix in [&self.entities, &self.tombstones] {
            let opts = GetOptions::new()
                .with_range(prefix_end(prefix))
                .with_sort(SortTarget::Mod, SortOrder::Descend)
                .with_limit(1);
            let resp = self
                .get_at(prefix.clone().into_bytes(), opts, revision)
                .await?;
            let Some(kv) = resp.kvs().first() else {
                continue;
            };
            let at = match prefix == &self.entities {
                true => parse_entry(kv)?.stored_at_ms,
                false => {
                    serde_json::from_slice::<Tombstone>(kv.value())
                        .map_err(corrupt)?
                        .deleted_at_ms
                }
            };
            if newest.is_none_or(|(rev, _)| kv.mod_revision() > rev) {
                newest = Some((kv.mod_revision(), at));
            }
        }
        Ok(newest.map(|(_, at)| at))
    }

    async fn retained_now(&self) -> Result<Retained> {
        let floor = self.floor().await?;
        let from_ms = self.time_of(floor).await?.unwrap_or(0);
        Ok(Retained {
            revision: floor as u64,
            from_ms,
        })
    }

    /// The last revision written at or before `at_ms`: a binary search on
    /// the write times the entities and tombstones carry.
    async fn revision_at_time(&self, at_ms: i64) -> Result<Option<u64>> {
        let kept = self.retained_now().await?;
        if at_ms < kept.from_ms {
            return Ok(None);
        }
        let (mut lo, mut hi) = (kept.revision as i64, self.revision().await?);
        while lo < hi {
            let mid = lo + (hi - lo + 1) / 2;
            match self.time_of(mid).await? {
                Some(t) if t > at_ms => hi = mid - 1,
                _ => lo = mid,
            }
        }
        Ok(Some(lo.max(0) as u64))
    }

    /// Every entity of `kind` (in `cluster_arn`, or all) at `revision`.
    async fn read_state(
        &self,
        revision: u64,
        kind: Kind,
        cluster_arn: Option<String>,
    ) -> Result<Vec<SharedEntry>> {
        let end = prefix_end(&self.entities);
        let mut from = self.entities.clone().into_bytes();
        let mut out = Vec::new();
        loop {
            let opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            let resp = self.get_at(from.clone(), opts, revision as i64).await?;
            for kv in resp.kvs() {
                let e = parse_entry(kv)?;
                let wanted = cluster_arn.as_deref().is_none_or(|c| c == e.cluster_arn);
                if e.kind == kind && wanted {
                    out.push(Arc::new(e));
                }
            }
            match (resp.more(), resp.kvs().last()) {
                (true, Some(last)) => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(out),
            }
        }
    }

    /// Every version of `arn` etcd still has, oldest first: read backwards
    /// from the present, one revision before each version found, and
    /// across a deletion through its tombstone.
    async fn read_versions(
        &self,
        kind: Kind,
        cluster_arn: &str,
        arn: &str,
    ) -> Result<Vec<Version>> {
        let (ekey, tkey) = (self.entity_key(arn), self.tombstone_key(arn));
        let mut out = Vec::new();
        let mut at = self.revision().await?;
        // Bounded: each step goes back at least one revision.
        while at > 0 {
            let live = match self
                .get_at(ekey.clone().into_bytes(), GetOptions::new(), at)
                .await
            {
                Ok(r) => r.kvs().first().cloned(),
                Err(Error::Compacted) => break,
                Err(e) => return Err(e),
            };
            if let Some(kv) = live {
                let entry = parse_entry(&kv)?;
                out.push(Version {
                    observed_at_ms: entry.stored_at_ms,
                    entry: Arc::new(entry),
                    deleted: false,
                });
                at = kv.mod_revision() - 1;
                continue;
            }
            // Absent at `at`: deleted (its tombstone says when), or never there.
            let tomb = match self
                .get_at(tkey.clone().into_bytes(), GetOptions::new(), at)
                .await
            {
                Ok(r) => r.kvs().first().cloned(),
                Err(Error::Compacted) => break,
                Err(e) => return Err(e),
            };
            let Some(t) = tomb else { break };
            let deleted_at = t.mod_revision();
            let last = match self
                .get_at(ekey.clone().into_bytes(), GetOptions::new(), deleted_at - 1)
                .await
            {
                Ok(r) => r.kvs().first().map(parse_entry).transpose()?,
                Err(Error::Compacted) => None,
                Err(e) => return Err(e),
            };
            let Some(mut last) = last else { break };
            let tomb: Tombstone = serde_json::from_slice(t.value()).map_err(corrupt)?;
            last.revision = deleted_at as u64;
            out.push(Version {
                entry: Arc::new(last),
                deleted: true,
                observed_at_ms: tomb.deleted_at_ms,
            });
            at = deleted_at - 1;
        }
        out.retain(|v| v.entry.kind == kind && v.entry.cluster_arn == cluster_arn);
        out.reverse();
        Ok(out)
    }

    /// The last revision at or before `revision` that wrote an entity or a
    /// tombstone (a deletion writes its tombstone): where a read of the
    /// entities' history can stop.
    async fn last_change(&self, revision: i64) -> Result<i64> {
        let mut last = 0;
        for prefix in [&self.entities, &self.tombstones] {
            let opts = GetOptions::new()
                .with_range(prefix_end(prefix))
                .with_sort(SortTarget::Mod, SortOrder::Descend)
                .with_limit(1)
                .with_keys_only();
            let resp = self
                .get_at(prefix.clone().into_bytes(), opts, revision)
                .await?;
            if let Some(kv) = resp.kvs().first() {
                last = last.max(kv.mod_revision());
            }
        }
        Ok(last)
    }

    /// Every version etcd still has of the entities of `kind` in
    /// `cluster_arn`: their state at its oldest revision, then each change
    /// since, read by a watch up to the last change there was when asked
    /// ([`Etcd::last_change`]; etcd 3.4's progress notifications cannot
    /// tell, as they may come before the events they follow).
    async fn read_versions_in(&self, kind: Kind, cluster_arn: &str) -> Result<Vec<Version>> {
        let floor = self.floor().await?;
        let current = self.last_change(self.revision().await?).await?;
        let base = self
            .read_state(floor as u64, kind, Some(cluster_arn.to_owned()))
            .await?;
        let mut out: Vec<Version> = base
            .into_iter()
            .map(|entry| Version {
                observed_at_ms: entry.stored_at_ms,
                entry,
                deleted: false,
            })
            .collect();
        if current > floor {
            let opts = WatchOptions::new()
                .with_prefix()
                .with_start_revision(floor + 1)
                .with_prev_key();
            let key = self.entities.clone();
            let started = self.members.call(|c| {
                let (key, opts) = (key.clone(), opts.clone());
                async move { c.watch_client().watch(key, Some(opts)).await }
            });
            let mut stream = started.await.map_err(unavailable)?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let mut seen = floor;
            while seen < current {
                let message = tokio::select! {
                    m = stream.message() => m.map_err(unavailable)?,
                    () = tokio::time::sleep_until(deadline) => {
                        return Err(Error::Unavailable(
                            "etcd's history was not read within 30 s".into(),
                        ))
                    }
                };
                let Some(resp) = message else {
                    return Err(Error::Unavailable("the etcd watch ended".into()));
                };
                if resp.compact_revision() > 0 {
                    return Err(Error::Compacted);
                }
                if resp.canceled() {
                    return Err(Error::Unavailable("the etcd watch was canceled".into()));
                }
                for ev in resp.events() {
                    if let Some(kv) = ev.kv() {
                        seen = seen.max(kv.mod_revision());
                    }
                    let Some(c) = self.change_of(ev)? else {
                        continue;
                    };
                    if c.entry.kind != kind || c.entry.cluster_arn != cluster_arn {
                        continue;
                    }
                    let observed_at_ms = match c.deleted {
                        false => c.entry.stored_at_ms,
                        true => self.deleted_at(&c.entry.arn, c.entry.revision).await?,
                    };
                    out.push(Version {
                        entry: c.entry,
                        deleted: c.deleted,
                        observed_at_ms,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.entry.arn, a.entry.revision).cmp(&(&b.entry.arn, b.entry.revision)));
        Ok(out)
    }

    /// When `arn` was deleted at `revision`, as its tombstone says.
    async fn deleted_at(&self, arn: &str, revision: u64) -> Result<i64> {
        let key = self.tombstone_key(arn).into_bytes();
        let resp = self.get_at(key, GetOptions::new(), revision as i64).await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(0);
        };
        let tomb: Tombstone = serde_json::from_slice(kv.value()).map_err(corrupt)?;
        Ok(tomb.deleted_at_ms)
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
            let compacted = self.members.call(|c| async move {
                c.kv_client()
                    .compact(t, Some(CompactionOptions::new()))
                    .await
            });
            match compacted.await {
                Ok(_) => info!(self.log, "compacted etcd history"; "revision" => t),
                // Another replica compacted at or past it already.
                Err(e) if is_compacted(&e) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(())
    }

    /// This replica's lease: granted on first use, kept alive in the
    /// background, granted anew once it may have expired.
    async fn lease(&self) -> Result<i64> {
        let _granting = self.granting.lock().await;
        if let Some(l) = self.current_lease() {
            return Ok(l.id);
        }
        let asked = tokio::time::Instant::now();
        let (client, granted) = self
            .members
            .call(|c| async move {
                let g = c
                    .lease_client()
                    .grant(LEADER_TTL.as_secs() as i64, None)
                    .await?;
                Ok((c, g))
            })
            .await
            .map_err(unavailable)?;
        let id = granted.id();
        let valid_until = Arc::new(Mutex::new(asked + lease_life(granted.ttl())));
        let mut leases = client.lease_client();
        let (keeper, responses) = leases.keep_alive(id).await.map_err(unavailable)?;
        actix::spawn(keep_alive(
            id,
            keeper,
            responses,
            Arc::downgrade(&valid_until),
            self.log.clone(),
        ));
        // A lead won under the old lease is void until claimed again under this one.
        self.led.lock().unwrap_or_else(|p| p.into_inner()).clear();
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(Lease { id, valid_until });
        Ok(id)
    }

    async fn try_lead(&self, name: &str) -> Result<bool> {
        let leads = self.claim(name).await?;
        let mut led = self.led.lock().unwrap_or_else(|p| p.into_inner());
        if leads {
            led.insert(name.to_owned());
        } else {
            led.remove(name);
        }
        Ok(leads)
    }

    async fn claim(&self, name: &str) -> Result<bool> {
        let lease = self.lease().await?;
        let key = self.leader_key(name);
        let holder = self.holder.clone();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                holder.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = self.txn(txn).await?;
        if resp.succeeded() {
            return Ok(true);
        }
        let held = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| (kv.value().to_vec(), kv.lease())),
            _ => None,
        });
        match held {
            Some((h, l)) if h == holder.as_bytes() && l == lease => Ok(true),
            // This replica's, under a lease it no longer counts on: moved to
            // the current one, unless it changed hands meanwhile.
            Some((h, _)) if h == holder.as_bytes() => {
                let txn = Txn::new()
                    .when([Compare::value(
                        key.clone(),
                        CompareOp::Equal,
                        holder.clone(),
                    )])
                    .and_then([TxnOp::put(
                        key,
                        holder,
                        Some(PutOptions::new().with_lease(lease)),
                    )]);
                Ok(self.txn(txn).await?.succeeded())
            }
            _ => Ok(false),
        }
    }

    /// Remembers a change seen on the feed: another replica's write, or
    /// this one's coming back.
    fn track(&self, c: &Change) {
        let now = if c.deleted {
            Seen::gone(c.entry.revision, c.entry.version, crate::time::now_ms())
        } else {
            Seen::live(c.entry.clone())
        };
        self.remember(&c.entry.arn, now, Learnt::Feed);
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
    /// With `track`, what it sees updates this replica's [`Seen`] (for the
    /// feed, which follows the present; not for a reader of the history).
    async fn watch(self, mut from: i64, tx: mpsc::Sender<Result<Vec<Change>>>, track: bool) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let opts = WatchOptions::new()
                .with_prefix()
                .with_start_revision(from)
                .with_prev_key()
                .with_progress_notify();
            let key = self.entities.clone();
            let started = self.members.call(|c| {
                let (key, opts) = (key.clone(), opts.clone());
                async move { c.watch_client().watch(key, Some(opts)).await }
            });
            match started.await {
                Ok(mut stream) => loop {
                    let message = tokio::select! {
                        m = stream.message() => m,
                        // Nobody reads any more (a stream reader went live).
                        () = tx.closed() => return,
                    };
                    match message {
                        Ok(Some(resp)) => {
                            backoff.reset();
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
                                    Ok(Some(c)) => {
                                        if track {
                                            self.track(&c);
                                        }
                                        changes.push(c)
                                    }
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
            tokio::time::sleep(backoff.delay()).await;
        }
    }
}

impl Store for Etcd {
    fn load(&self) -> BoxFuture<'_, Result<Loaded>> {
        Box::pin(self.load_all())
    }

    fn commit(&self, ops: Vec<Op>, now_ms: i64) -> BoxFuture<'_, Result<Vec<Outcome>>> {
        Box::pin(self.write(ops, now_ms, None))
    }

    fn commit_as_leader(
        &self,
        ops: Vec<Op>,
        now_ms: i64,
        name: &str,
    ) -> BoxFuture<'_, Result<Vec<Outcome>>> {
        let name = name.to_owned();
        Box::pin(async move { self.write(ops, now_ms, Some(&name)).await })
    }

    fn leads(&self, name: &str) -> bool {
        self.leads_now(name)
    }

    fn purge_tombstones(&self, before_ms: i64) -> BoxFuture<'_, Result<usize>> {
        Box::pin(self.purge(before_ms))
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.revision().await.map(|_| ()) })
    }

    fn feed(&self, from_revision: u64) -> Option<Feed> {
        let (tx, rx) = mpsc::channel(FEED_BUFFER);
        actix::spawn(self.clone().watch(from_revision as i64, tx, true));
        Some(rx)
    }

    fn compact_history(&self, now_ms: i64, retention: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.compact(now_ms, retention))
    }

    fn check_resume(&self, from: u64) -> BoxFuture<'_, Result<Resume>> {
        Box::pin(self.resume(from))
    }

    fn retained(&self) -> BoxFuture<'_, Result<Retained>> {
        Box::pin(self.retained_now())
    }

    fn revision_at(&self, at_ms: i64) -> BoxFuture<'_, Result<Option<u64>>> {
        Box::pin(self.revision_at_time(at_ms))
    }

    fn state_at(
        &self,
        revision: u64,
        kind: Kind,
        cluster_arn: Option<String>,
    ) -> BoxFuture<'_, Result<Vec<SharedEntry>>> {
        Box::pin(self.read_state(revision, kind, cluster_arn))
    }

    fn versions(
        &self,
        kind: Kind,
        cluster_arn: String,
        arn: String,
    ) -> BoxFuture<'_, Result<Vec<Version>>> {
        Box::pin(async move { self.read_versions(kind, &cluster_arn, &arn).await })
    }

    fn versions_in(&self, kind: Kind, cluster_arn: String) -> BoxFuture<'_, Result<Vec<Version>>> {
        Box::pin(async move { self.read_versions_in(kind, &cluster_arn).await })
    }

    /// A watch from `from`: history first, then live changes, until dropped.
    fn history(&self, from: u64) -> Feed {
        let (tx, rx) = mpsc::channel(4);
        actix::spawn(self.clone().watch(from.max(1) as i64, tx, false));
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
