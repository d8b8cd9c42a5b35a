//! The read side of the [`StoreWriter`](crate::writer::StoreWriter): a
//! cloneable [`Reader`] is the only way anything outside the writer observes
//! the store (its view, its health, its history). In the manner of
//! kube-runtime's `reflector::store::Writer::as_reader()`: the writer holds a
//! [`Publisher`], everyone else a [`Reader`] of it.

use crate::store::{self, BoxFuture, Feed, Resume, Store};
use crate::view::Snapshot;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// What readiness depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The view is loaded from the store.
    pub loaded: bool,
    /// The store answered its last ping.
    pub store_up: bool,
    /// The accounts and regions whose clusters are not known yet (empty
    /// without reconcile).
    pub undiscovered: BTreeSet<String>,
    /// Clusters whose first sweep is not done yet.
    pub unswept: BTreeSet<String>,
    /// Clusters a reconciler runs for (names or ARNs, as configured or
    /// discovered).
    pub reconciled: BTreeSet<String>,
    /// Why a cluster's sweeps fail now, by cluster (as in `reconciled`);
    /// cleared by the next successful sweep.
    pub reconcile_errors: std::collections::BTreeMap<String, String>,
    /// Why the clusters of an account and region cannot be listed now;
    /// cleared by the next success.
    pub discovery_errors: std::collections::BTreeMap<crate::accounts::Place, String>,
    /// Whether the event source delivers; shown, not waited for: readiness
    /// is about serving, which a replica does from its store without SQS.
    pub source: SourceState,
}

/// What the event source is doing (`/readyz`'s `source`, `css_source_up`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SourceState {
    /// No source: the service serves its store as it is.
    #[default]
    None,
    /// The queue answered its last receive (the simulator and a replay file
    /// are always up).
    Up,
    /// The queue cannot be resolved or its last receive failed; the API
    /// keeps serving the state it has.
    Down,
}

impl SourceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::None => "none",
            SourceState::Up => "up",
            SourceState::Down => "down",
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Health {
            loaded: false,
            store_up: false,
            undiscovered: BTreeSet::new(),
            unswept: BTreeSet::new(),
            reconciled: BTreeSet::new(),
            reconcile_errors: Default::default(),
            discovery_errors: Default::default(),
            source: SourceState::None,
        }
    }
}

impl Health {
    /// Writes would be taken: events may be received.
    pub fn writable(&self) -> bool {
        self.loaded && self.store_up
    }

    /// Clusters whose first sweep is not done, plus the accounts and
    /// regions whose clusters are not known yet.
    pub fn reconcile_pending(&self) -> usize {
        self.unswept.len() + self.undiscovered.len()
    }

    /// What readiness still waits for: `store`, `view`, `reconcile`.
    pub fn waiting_for(&self) -> Vec<&'static str> {
        [
            (!self.store_up, "store"),
            (!self.loaded, "view"),
            (self.reconcile_pending() > 0, "reconcile"),
        ]
        .into_iter()
        .filter_map(|(waiting, what)| waiting.then_some(what))
        .collect()
    }
}

/// Shared between the publisher and its readers.
struct Shared {
    /// The latest view; `None` while it is (re)loading.
    view: RwLock<Option<Snapshot>>,
    health: watch::Sender<Health>,
}

/// The writer's side: publishes the view and the health.
#[derive(Clone)]
pub struct Publisher(Arc<Shared>);

/// Reports the source's state into the health readers see.
#[derive(Clone)]
pub struct SourceStatus {
    shared: Arc<Shared>,
    /// For one of several sources: the states of all, and which is this one.
    part: Option<(Arc<std::sync::Mutex<Vec<SourceState>>>, usize)>,
}

impl SourceStatus {
    /// Publishes the source's state; returns whether it changed. Of several
    /// sources ([`SourceStatus::parts`]), the published state is down while
    /// any is down, up once all are.
    pub fn set(&self, state: SourceState) -> bool {
        let (shown, changed) = match &self.part {
            None => (state, None),
            Some((all, i)) => {
                let mut all = all.lock().unwrap_or_else(|p| p.into_inner());
                let changed = std::mem::replace(&mut all[*i], state) != state;
                let shown = match all.contains(&SourceState::Down) {
                    true => SourceState::Down,
                    false => state,
                };
                (shown, Some(changed))
            }
        };
        let published = self
            .shared
            .health
            .send_if_modified(|h| std::mem::replace(&mut h.source, shown) != shown);
        changed.unwrap_or(published)
    }

    /// `n` statuses, one per source, that publish one state together.
    pub fn parts(&self, n: usize) -> Vec<SourceStatus> {
        let initial = self.shared.health.borrow().source;
        let all = Arc::new(std::sync::Mutex::new(vec![initial; n]));
        (0..n)
            .map(|i| SourceStatus {
                shared: self.shared.clone(),
                part: Some((all.clone(), i)),
            })
            .collect()
    }
}

/// Reports reconcile progress into the health readers see.
#[derive(Clone)]
pub struct ReconcileProgress(Arc<Shared>);

/// Observes the store: cheap to clone, never waits on the writer.
#[derive(Clone)]
pub struct Reader {
    shared: Arc<Shared>,
    store: Arc<dyn Store>,
}

/// A publisher for the writer of `store`, and its reader.
pub fn channel(store: Arc<dyn Store>) -> (Publisher, Reader) {
    let (health, _) = watch::channel(Health::default());
    let shared = Arc::new(Shared {
        view: RwLock::new(None),
        health,
    });
    (Publisher(shared.clone()), Reader { shared, store })
}

impl Publisher {
    /// Publishes the view (`None`: it is being reloaded).
    pub fn view(&self, view: Option<Snapshot>) {
        let loaded = view.is_some();
        if let Ok(mut v) = self.0.view.write() {
            *v = view;
        }
        self.0
            .health
            .send_if_modified(|h| std::mem::replace(&mut h.loaded, loaded) != loaded);
    }

    /// Publishes whether the store answers; returns whether that changed.
    pub fn store_up(&self, up: bool) -> bool {
        self.0
            .health
            .send_if_modified(|h| std::mem::replace(&mut h.store_up, up) != up)
    }

    /// The handle the source reports its state with.
    pub fn source_status(&self) -> SourceStatus {
        SourceStatus {
            shared: self.0.clone(),
            part: None,
        }
    }

    /// The handle reconcile reports its progress with.
    pub fn reconcile_progress(&self) -> ReconcileProgress {
        ReconcileProgress(self.0.clone())
    }
}

impl ReconcileProgress {
    /// Readiness waits for the clusters of `place` (an account and region) to be known.
    pub fn discovering(&self, place: &str) {
        self.0
            .health
            .send_if_modified(|h| h.undiscovered.insert(place.to_owned()));
    }

    /// A reconciler runs for `cluster`; readiness waits for its first sweep.
    pub fn waiting(&self, cluster: &str) {
        self.0.health.send_if_modified(|h| {
            let new = h.reconciled.insert(cluster.to_owned());
            h.unswept.insert(cluster.to_owned()) || new
        });
    }

    /// No reconciler runs for `cluster` any more (it is gone from ECS).
    pub fn retired(&self, cluster: &str) {
        self.0.health.send_if_modified(|h| {
            let was = h.reconciled.remove(cluster);
            h.unswept.remove(cluster) || was
        });
    }

    /// The clusters of `place` are known (those to wait for are
    /// [`waiting`](Self::waiting)), or cannot be, with its credentials.
    pub fn known(&self, place: &str) {
        self.0
            .health
            .send_if_modified(|h| h.undiscovered.remove(place));
    }

    /// The sweeps of `cluster` fail now with `error`, or (`None`) work again.
    pub fn error(&self, cluster: &str, error: Option<String>) {
        self.0.health.send_if_modified(|h| match error {
            Some(e) => h.reconcile_errors.insert(cluster.to_owned(), e.clone()) != Some(e),
            None => h.reconcile_errors.remove(cluster).is_some(),
        });
    }

    /// The clusters of `place` cannot be listed now (`error`), or (`None`) can.
    pub fn discovery_error(&self, place: &crate::accounts::Place, error: Option<String>) {
        self.0.health.send_if_modified(|h| match error {
            Some(e) => h.discovery_errors.insert(place.clone(), e.clone()) != Some(e),
            None => h.discovery_errors.remove(place).is_some(),
        });
    }

    /// `cluster` no longer holds readiness back (swept, standing by, or gone).
    pub fn swept(&self, cluster: &str) {
        self.0
            .health
            .send_if_modified(|h| h.unswept.remove(cluster));
    }
}

impl Reader {
    /// The latest view; `Unavailable` while it loads.
    pub fn snapshot(&self) -> store::Result<Snapshot> {
        self.shared
            .view
            .read()
            .ok()
            .and_then(|v| v.clone())
            .ok_or_else(|| store::Error::Unavailable("the view is not loaded".into()))
    }

    /// The health now.
    pub fn health(&self) -> Health {
        self.shared.health.borrow().clone()
    }

    /// Waits until the health satisfies `ready`.
    pub async fn wait_for(&self, ready: impl FnMut(&Health) -> bool) {
        let mut rx = self.shared.health.subscribe();
        // The sender lives in `shared`, which this reader holds: never closed.
        let _ = rx.wait_for(ready).await;
    }

    /// Whether this replica leads `name`'s reconcile now (see [`Store::leads`]).
    pub fn leads(&self, name: &str) -> bool {
        self.store.leads(name)
    }

    /// Every change from revision `from` on (see [`Store::history`]).
    pub fn history(&self, from: u64) -> Feed {
        self.store.history(from)
    }

    /// How far back the state can be told (see [`Store::retained`]).
    pub fn retained(&self) -> BoxFuture<'_, store::Result<store::Retained>> {
        self.store.retained()
    }

    /// The last revision committed at or before `at_ms` (see [`Store::revision_at`]).
    pub fn revision_at(&self, at_ms: i64) -> BoxFuture<'_, store::Result<Option<u64>>> {
        self.store.revision_at(at_ms)
    }

    /// A view of the entities of `kind` (in `cluster_arn`, or all) as they
    /// were at `revision` (see [`Store::state_at`]).
    pub async fn snapshot_at(
        &self,
        revision: u64,
        kind: crate::model::Kind,
        cluster_arn: Option<String>,
    ) -> store::Result<Snapshot> {
        let entries = self.store.state_at(revision, kind, cluster_arn).await?;
        let mut snap = Snapshot::at(revision);
        for e in entries {
            snap.insert(e);
        }
        Ok(snap)
    }

    /// A window of the state at `revision` (see [`Store::state_page`]).
    pub fn state_page(
        &self,
        revision: u64,
        kind: crate::model::Kind,
        cluster_arn: Option<String>,
        from: std::ops::Bound<crate::model::Key>,
        max: usize,
    ) -> BoxFuture<'_, store::Result<store::Page>> {
        self.store
            .state_page(revision, kind, cluster_arn, from, max)
    }

    /// Every retained version of one entity (see [`Store::versions`]).
    pub fn versions(
        &self,
        kind: crate::model::Kind,
        cluster_arn: String,
        arn: String,
    ) -> BoxFuture<'_, store::Result<Vec<store::Version>>> {
        self.store.versions(kind, cluster_arn, arn)
    }

    /// Every retained version of the entities of `kind` in `cluster_arn`
    /// (see [`Store::versions_in`]).
    pub fn versions_in(
        &self,
        kind: crate::model::Kind,
        cluster_arn: String,
    ) -> BoxFuture<'_, store::Result<Vec<store::Version>>> {
        self.store.versions_in(kind, cluster_arn)
    }

    /// Whether a stream may resume at revision `from` (see [`Store::check_resume`]).
    pub fn check_resume(&self, from: u64) -> BoxFuture<'_, store::Result<Resume>> {
        self.store.check_resume(from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Embedded;
    use std::time::Duration;

    fn reader() -> (Publisher, Reader, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(&dir.path().join("s.redb")).unwrap();
        let (p, r) = channel(Arc::new(store));
        (p, r, dir)
    }

    #[tokio::test]
    async fn readers_see_what_the_writer_publishes() {
        let (p, r, _dir) = reader();
        assert!(r.snapshot().is_err());
        assert_eq!(r.health().waiting_for(), ["store", "view"]);
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.wait_for(Health::writable).await }
        });
        p.view(Some(Snapshot::at(7)));
        assert!(!waiter.is_finished());
        assert!(p.store_up(true));
        assert!(!p.store_up(true), "unchanged");
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(r.snapshot().unwrap().revision, 7);
        assert!(r.health().waiting_for().is_empty());
        p.view(None);
        assert_eq!(r.health().waiting_for(), ["view"]);
    }

    #[test]
    fn reconcile_holds_readiness_until_every_cluster_is_swept() {
        let (p, r, _dir) = reader();
        let progress = p.reconcile_progress();
        progress.discovering("111111111111/us-east-1");
        progress.discovering("222222222222/us-east-1");
        assert_eq!(r.health().reconcile_pending(), 2);
        progress.waiting("a");
        progress.waiting("b");
        assert_eq!(r.health().reconcile_pending(), 4);
        progress.known("111111111111/us-east-1");
        progress.known("222222222222/us-east-1");
        assert_eq!(r.health().reconcile_pending(), 2);
        progress.swept("a");
        progress.swept("a");
        assert_eq!(r.health().reconcile_pending(), 1);
        progress.swept("b");
        assert_eq!(r.health().reconcile_pending(), 0);
        progress.error("b", Some("access denied".into()));
        assert_eq!(r.health().reconcile_errors["b"], "access denied");
        progress.error("b", None);
        assert!(r.health().reconcile_errors.is_empty());
    }

    #[test]
    fn several_sources_are_up_only_when_every_one_is() {
        let (p, r, _dir) = reader();
        let status = p.source_status();
        status.set(SourceState::Down);
        let parts = status.parts(2);
        assert!(parts[0].set(SourceState::Up));
        assert_eq!(
            r.health().source,
            SourceState::Down,
            "the other is still down"
        );
        assert!(parts[1].set(SourceState::Up));
        assert_eq!(r.health().source, SourceState::Up);
        assert!(!parts[1].set(SourceState::Up), "unchanged");
        assert!(parts[0].set(SourceState::Down));
        assert_eq!(r.health().source, SourceState::Down);
    }
}
