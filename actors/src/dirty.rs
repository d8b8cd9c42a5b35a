//! The services to describe again soon ("dirty"), by cluster: marked by the
//! decoder (a service event names one) and by the writer (a task of one
//! changed), taken by the cluster's reconciler, which describes them at most
//! once per `service_refresh` each (services.md).
//!
//! Only clusters a reconciler works on take marks, and there are at most
//! [`MAX_MARKS`] in all: a service that cannot be marked is still described
//! by the next sweep.

use crate::arn::cluster_name;
use crate::metrics::{Gauge, RefreshReason};
use crate::model::Kind;
use crate::store::Change;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Marks kept at most, over every cluster.
pub const MAX_MARKS: usize = 100_000;

/// Why and since when a service is dirty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The strongest reason it was marked for (an event outranks a task).
    pub reason: RefreshReason,
    /// When it was last marked.
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    /// Cluster (its ARN, or its name) → service name → mark.
    clusters: HashMap<String, HashMap<String, Mark>>,
    marks: usize,
    /// Marks taken and not yet done with ([`InFlight`]).
    in_flight: usize,
    /// Shows `marks + in_flight` (`css_service_refreshes_pending`).
    gauge: Option<Gauge>,
}

impl Inner {
    fn show(&self) {
        if let Some(g) = &self.gauge {
            g.set((self.marks + self.in_flight) as u64);
        }
    }
}

/// The shared dirty set; cheap to clone.
#[derive(Clone, Default)]
pub struct Dirty(Arc<Mutex<Inner>>);

/// Marks [`take`](Dirty::take)n for a describe that is under way; they
/// count as pending until this is dropped.
pub struct InFlight {
    dirty: Dirty,
    n: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut inner = self.dirty.lock();
        inner.in_flight -= self.n;
        inner.show();
    }
}

/// Updates the gauge whatever way a change of the set ends.
struct Shown<'a>(MutexGuard<'a, Inner>);

impl Drop for Shown<'_> {
    fn drop(&mut self) {
        self.0.show();
    }
}

impl Dirty {
    /// A dirty set that shows how many services are pending on `gauge`.
    pub fn with_gauge(gauge: Gauge) -> Dirty {
        let dirty = Dirty::default();
        dirty.lock().gauge = Some(gauge);
        dirty
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn change(&self) -> Shown<'_> {
        Shown(self.lock())
    }

    /// Takes marks for cluster `name` from now on.
    pub fn register(&self, name: &str) {
        self.lock().clusters.entry(name.to_owned()).or_default();
    }

    /// Stops taking marks for cluster `name` and forgets its marks.
    pub fn retire(&self, name: &str) {
        let mut inner = self.change();
        let inner = &mut inner.0;
        if let Some(marks) = inner.clusters.remove(name) {
            inner.marks -= marks.len();
        }
    }

    /// Marks `service` (a name or an ARN) of `cluster` (a name or an ARN)
    /// dirty; false when no reconciler works on that cluster (or the set is
    /// full), so nothing will come of it. A reconciler registers its cluster
    /// by ARN where it knows it (so that clusters of one name in several
    /// accounts or regions stay apart), else by name: the ARN is tried first.
    pub fn mark(&self, cluster: &str, service: &str, reason: RefreshReason) -> bool {
        let name = cluster_name(cluster).unwrap_or(cluster);
        let service = service.rsplit('/').next().unwrap_or(service);
        let at = Instant::now();
        let key = match self.lock().clusters.contains_key(cluster) {
            true => cluster,
            false => name,
        };
        self.put(key, service, Mark { reason, at }, |m| {
            m.reason = m.reason.max(reason);
            m.at = at;
        })
    }

    /// Puts back a mark that [`take`](Self::take) gave and whose describe
    /// failed, so the service is described again; a mark made since stays,
    /// with the stronger of the two reasons. False as for [`mark`](Self::mark).
    pub fn restore(&self, name: &str, service: &str, mark: Mark) -> bool {
        self.put(name, service, mark, |m| {
            m.reason = m.reason.max(mark.reason)
        })
    }

    /// Adds `mark`, or `update`s the one `service` has.
    fn put(&self, name: &str, service: &str, mark: Mark, update: impl FnOnce(&mut Mark)) -> bool {
        let mut guard = self.change();
        let inner = &mut *guard.0;
        let Some(marks) = inner.clusters.get_mut(name) else {
            return false;
        };
        match marks.get_mut(service) {
            Some(m) => update(m),
            None if inner.marks < MAX_MARKS => {
                marks.insert(service.to_owned(), mark);
                inner.marks += 1;
            }
            None => return false,
        }
        true
    }

    /// Marks the services whose tasks these committed changes touch.
    pub fn tasks_changed(&self, changes: &[Change]) {
        for c in changes {
            let e = &c.entry;
            if e.kind != Kind::Task {
                continue;
            }
            if let Some(service) = e.service() {
                self.mark(&e.cluster_arn, service, RefreshReason::Task);
            }
        }
    }

    /// Removes and returns the marks of cluster `name` that `due` accepts
    /// (by service name); the others stay. They count as pending until the
    /// returned [`InFlight`] is dropped.
    pub fn take(
        &self,
        name: &str,
        mut due: impl FnMut(&str) -> bool,
    ) -> (Vec<(String, Mark)>, InFlight) {
        let mut guard = self.change();
        let inner = &mut *guard.0;
        let out: Vec<(String, Mark)> = match inner.clusters.get_mut(name) {
            None => Vec::new(),
            Some(marks) => {
                let taken: Vec<String> = marks.keys().filter(|s| due(s)).cloned().collect();
                taken
                    .into_iter()
                    .filter_map(|s| marks.remove(&s).map(|m| (s, m)))
                    .collect()
            }
        };
        inner.marks -= out.len();
        inner.in_flight += out.len();
        let n = out.len();
        (
            out,
            InFlight {
                dirty: self.clone(),
                n,
            },
        )
    }

    /// Forgets the mark of `service` of cluster `name` if it was made at or
    /// before `asked`: a describe requested then already sees what caused it.
    pub fn covered(&self, name: &str, service: &str, asked: Instant) {
        let mut guard = self.change();
        let inner = &mut *guard.0;
        let Some(marks) = inner.clusters.get_mut(name) else {
            return;
        };
        if marks.get(service).is_some_and(|m| m.at <= asked) {
            marks.remove(service);
            inner.marks -= 1;
        }
    }

    /// Marks held now, over every cluster.
    pub fn len(&self) -> usize {
        self.lock().marks
    }

    /// Services marked or being described, over every cluster.
    pub fn pending(&self) -> usize {
        let inner = self.lock();
        inner.marks + inner.in_flight
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Entry;

    fn task_change(cluster: &str, group: &str) -> Change {
        let mut e = Entry::test_task("arn:aws:ecs:r:1:task/c/t", Some(1), "RUNNING");
        e.cluster_arn = format!("arn:aws:ecs:r:1:cluster/{cluster}");
        e.group = Some(group.into());
        Change {
            entry: Arc::new(e),
            deleted: false,
            moved_from: None,
        }
    }

    #[test]
    fn marks_are_kept_for_registered_clusters_only_and_taken_when_due() {
        let gauge = Gauge::new("pending", "pending").unwrap();
        let d = Dirty::with_gauge(gauge.clone());
        d.register("prod");
        assert!(d.mark(
            "arn:aws:ecs:r:1:cluster/prod",
            "arn:aws:ecs:r:1:service/prod/web",
            RefreshReason::Event
        ));
        assert!(
            !d.mark("other", "web", RefreshReason::Event),
            "not reconciled"
        );
        d.tasks_changed(&[
            task_change("prod", "service:web"),
            task_change("prod", "service:api"),
            task_change("prod", "family:cron"),
            task_change("other", "service:web"),
        ]);
        assert_eq!(d.len(), 2);
        assert_eq!(gauge.get(), 2);
        let (later, later_flight) = d.take("prod", |s| s == "api");
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].1.reason, RefreshReason::Task);
        let (web, web_flight) = d.take("prod", |_| true);
        assert_eq!(web[0].0, "web");
        assert_eq!(
            web[0].1.reason,
            RefreshReason::Event,
            "an event outranks a task"
        );
        assert!(d.is_empty());
        assert_eq!((d.pending(), gauge.get()), (2, 2), "being described");
        drop(later_flight);
        drop(web_flight);
        assert_eq!((d.pending(), gauge.get()), (0, 0), "described");

        d.mark("prod", "web", RefreshReason::Task);
        let asked = Instant::now();
        d.covered("prod", "web", asked);
        assert!(d.is_empty(), "a describe asked after the mark covers it");
        d.mark("prod", "web", RefreshReason::Task);
        d.covered("prod", "web", asked);
        assert_eq!(d.len(), 1, "a mark made after the describe was asked stays");
        d.retire("prod");
        assert!(d.is_empty());
        assert!(!d.mark("prod", "web", RefreshReason::Task));
    }

    #[test]
    fn clusters_of_one_name_in_two_places_take_their_own_marks() {
        let (us, eu) = (
            "arn:aws:ecs:us-east-1:111111111111:cluster/web",
            "arn:aws:ecs:eu-west-1:222222222222:cluster/web",
        );
        let d = Dirty::default();
        d.register(us);
        d.register(eu);
        assert!(d.mark(us, "api", RefreshReason::Event));
        assert!(d.mark(eu, "shop", RefreshReason::Task));
        assert!(
            !d.mark("web", "api", RefreshReason::Task),
            "a name alone is neither"
        );
        assert_eq!(d.take(us, |_| true).0[0].0, "api");
        assert_eq!(d.take(eu, |_| true).0[0].0, "shop");
        assert!(d.is_empty());
    }

    #[test]
    fn a_failed_describes_marks_are_put_back_without_losing_newer_ones() {
        let d = Dirty::default();
        d.register("prod");
        d.mark("prod", "web", RefreshReason::Event);
        d.mark("prod", "api", RefreshReason::Task);
        let (taken, _flight) = d.take("prod", |_| true);
        assert!(d.is_empty());
        // While the describe was out, `api` changed again.
        d.mark("prod", "api", RefreshReason::Task);
        let (newer, _) = d.take("prod", |_| false);
        assert!(newer.is_empty());
        for (service, mark) in &taken {
            assert!(d.restore("prod", service, *mark));
        }
        assert_eq!(d.len(), 2, "each service once");
        let back: HashMap<String, Mark> = d.take("prod", |_| true).0.into_iter().collect();
        assert_eq!(
            back["web"],
            taken.iter().find(|(s, _)| s == "web").unwrap().1
        );
        let api_taken = taken.iter().find(|(s, _)| s == "api").unwrap().1;
        assert!(back["api"].at > api_taken.at, "the newer mark's time stays");
        assert_eq!(back["api"].reason, RefreshReason::Task);
        d.retire("prod");
        assert!(!d.restore("prod", "web", taken[0].1), "not reconciled");
    }
}
