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
    /// The clusters to reconcile are known (always true without reconcile).
    pub clusters_known: bool,
    /// Clusters whose first sweep is not done yet.
    pub unswept: BTreeSet<String>,
    /// Clusters a reconciler runs for (names or ARNs, as configured or
    /// discovered).
    pub reconciled: BTreeSet<String>,
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
            clusters_known: true,
            unswept: BTreeSet::new(),
            reconciled: BTreeSet::new(),
            source: SourceState::None,
        }
    }
}

impl Health {
    /// Writes would be taken: events may be received.
    pub fn writable(&self) -> bool {
        self.loaded && self.store_up
    }

    /// Clusters whose first sweep is not done (plus one while the clusters
    /// are not known yet).
    pub fn reconcile_pending(&self) -> usize {
        self.unswept.len() + usize::from(!self.clusters_known)
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
pub struct SourceStatus(Arc<Shared>);

impl SourceStatus {
    /// Publishes the source's state; returns whether it changed.
    pub fn set(&self, state: SourceState) -> bool {
        self.0
            .health
            .send_if_modified(|h| std::mem::replace(&mut h.source, state) != state)
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
        SourceStatus(self.0.clone())
    }

    /// The handle reconcile reports its progress with.
    pub fn reconcile_progress(&self) -> ReconcileProgress {
        ReconcileProgress(self.0.clone())
    }
}

impl ReconcileProgress {
    /// Readiness waits for the clusters to be known.
    pub fn discovering(&self) {
        self.0.health.send_modify(|h| h.clusters_known = false);
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

    /// The clusters are known (those to wait for are [`waiting`](Self::waiting)).
    pub fn known(&self) {
        self.0
            .health
            .send_if_modified(|h| !std::mem::replace(&mut h.clusters_known, true));
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
        progress.discovering();
        assert_eq!(r.health().reconcile_pending(), 1);
        progress.waiting("a");
        progress.waiting("b");
        assert_eq!(r.health().reconcile_pending(), 3);
        progress.known();
        assert_eq!(r.health().reconcile_pending(), 2);
        progress.swept("a");
        progress.swept("a");
        assert_eq!(r.health().reconcile_pending(), 1);
        progress.swept("b");
        assert_eq!(r.health().reconcile_pending(), 0);
    }
}
