//! Counters shared by the actors and rendered by the HTTP layer at `/metrics`.
//!
//! Plain atomics: incrementing one is cheap enough for the event hot path.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Adds one; returns the new value.
    pub fn inc(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
    pub fn dec(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every metric of the service. Names in `/metrics` are given beside each.
#[derive(Debug, Default)]
pub struct Metrics {
    /// `css_events_total{outcome="received"}`: messages handed to the decoder.
    pub events_received: Counter,
    /// `css_events_total{outcome="applied"}`: events that changed the store.
    pub events_applied: Counter,
    /// `css_events_total{outcome="stale"}`: events at or below the stored version.
    pub events_stale: Counter,
    /// `css_events_total{outcome="ignored"}`: valid events of types not stored.
    pub events_ignored: Counter,
    /// `css_events_total{outcome="invalid"}`: messages that could not be decoded.
    pub events_invalid: Counter,
    /// `css_store_commits_total`: durable commits.
    pub store_commits: Counter,
    /// `css_store_commit_seconds_total`: time spent in commits (microseconds here).
    pub store_commit_micros: Counter,
    /// `css_store_errors_total`: failed commits and loads.
    pub store_errors: Counter,
    /// `css_store_revision`: the store's revision.
    pub store_revision: Gauge,
    /// `css_view_entities{kind="task"}`.
    pub view_tasks: Gauge,
    /// `css_view_entities{kind="instance"}`.
    pub view_instances: Gauge,
    /// `css_store_deletions_total{reason="retention"}`: STOPPED tasks expired.
    pub retention_deletions: Counter,
    /// `css_actor_restarts_total{actor="…"}`.
    pub writer_restarts: Counter,
    pub decoder_restarts: Counter,
    pub hub_restarts: Counter,
    /// `css_stream_changes_total`: changes the StreamHub received.
    pub hub_changes: Counter,
    /// `css_streams_open`: change streams open now.
    pub streams_open: Gauge,
    /// `css_stream_items_sent_total`: item lines written to stream clients.
    pub stream_items_sent: Counter,
    /// `css_streams_dropped_total{reason="too_slow"}`: streams cut because
    /// their client did not keep up.
    pub streams_too_slow: Counter,
    /// `css_streams_dropped_total{reason="expired"}`: catch-ups that history
    /// retention overtook.
    pub streams_expired: Counter,
    /// `css_sqs_receive_seconds` (summary): ReceiveMessage calls and their time.
    pub sqs_receives: Counter,
    pub sqs_receive_micros: Counter,
    /// `css_sqs_errors_total{op="receive"}`.
    pub sqs_receive_errors: Counter,
    /// `css_sqs_delete_seconds` (summary): DeleteMessageBatch calls and their time.
    pub sqs_deletes: Counter,
    pub sqs_delete_micros: Counter,
    /// `css_sqs_errors_total{op="delete"}`.
    pub sqs_delete_errors: Counter,
    /// `css_events_dead_lettered_total`: invalid messages sent to the dead-letter queue.
    pub dead_lettered: Counter,
    /// `css_store_feed_reloads_total`: full reloads because the feed fell behind.
    pub feed_reloads: Counter,
    /// Per-cluster reconcile counters, by cluster name.
    pub reconcile: Mutex<BTreeMap<String, Arc<ClusterStats>>>,
}

/// Reconcile counters of one cluster (`css_reconcile_*{cluster="…"}`).
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub sweeps: Counter,
    pub sweep_errors: Counter,
    pub sweep_micros: Counter,
    pub added: Counter,
    pub updated: Counter,
    pub removed: Counter,
    pub api_calls: Counter,
    pub throttles: Counter,
    /// 1 while this replica leads the cluster's reconcile.
    pub leader: Gauge,
}

impl Metrics {
    /// The counters of cluster `name`, made on first use.
    pub fn cluster(&self, name: &str) -> Arc<ClusterStats> {
        match self.reconcile.lock() {
            Ok(mut m) => m.entry(name.to_owned()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }
}
