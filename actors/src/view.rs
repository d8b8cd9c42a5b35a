//! The in-memory view: every stored entity, ordered by `(clusterARN, ARN)`.
//!
//! Persistent maps (`imbl::OrdMap`) share structure between versions, so a
//! [`Snapshot`] is an O(1) clone that a reader can keep as long as it likes
//! while the writer goes on changing its own copy.

use crate::model::{Key, Kind, SharedEntry};
use crate::store::Change;
use imbl::OrdMap;

/// Entities of one kind, in API order.
pub type Entities = OrdMap<Key, SharedEntry>;

/// A consistent read-only state of the store at `revision`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The store revision this snapshot reflects (`metadata.entityVersion` of lists).
    pub revision: u64,
    /// One map per kind, in [`Kind::ALL`] order.
    entities: [Entities; Kind::ALL.len()],
}

impl Snapshot {
    /// An empty view at `revision`.
    pub fn at(revision: u64) -> Snapshot {
        Snapshot {
            revision,
            ..Snapshot::default()
        }
    }

    /// The entities of `kind`.
    pub fn of(&self, kind: Kind) -> &Entities {
        &self.entities[kind.index()]
    }

    fn of_mut(&mut self, kind: Kind) -> &mut Entities {
        &mut self.entities[kind.index()]
    }

    /// Adds a loaded entry (no change to announce).
    pub fn insert(&mut self, entry: SharedEntry) {
        self.of_mut(entry.kind).insert(entry.key(), entry);
    }

    /// Every entity of every kind, kind by kind.
    pub fn all(&self) -> impl Iterator<Item = &SharedEntry> + '_ {
        self.entities.iter().flat_map(|m| m.values())
    }

    /// The clusters it holds anything of, in ARN order: one step per
    /// cluster and kind, jumping over each cluster's entities.
    pub fn clusters(&self) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        for map in &self.entities {
            let mut from = std::ops::Bound::Unbounded;
            while let Some((k, _)) = map.range((from, std::ops::Bound::Unbounded)).next() {
                out.insert(k.cluster_arn.clone());
                from = std::ops::Bound::Included(Key::past(&k.cluster_arn));
            }
        }
        out
    }

    /// The entities of `kind` in the cluster `cluster_arn`: a range of the
    /// map, not a scan.
    pub fn of_cluster<'a>(
        &'a self,
        kind: Kind,
        cluster_arn: &str,
    ) -> impl Iterator<Item = &'a SharedEntry> + 'a {
        let range = Key::first_of(cluster_arn)..Key::past(cluster_arn);
        self.of(kind).range(range).map(|(_, e)| e)
    }

    /// Applies one committed change.
    pub fn apply(&mut self, change: &Change) {
        let entry = &change.entry;
        let map = self.of_mut(entry.kind);
        if let Some(old_cluster) = &change.moved_from {
            map.remove(&Key {
                cluster_arn: old_cluster.clone(),
                arn: entry.arn.clone(),
            });
        }
        if change.deleted {
            map.remove(&entry.key());
        } else {
            map.insert(entry.key(), entry.clone());
        }
        self.revision = self.revision.max(entry.revision);
    }
}
