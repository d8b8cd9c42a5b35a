//! Every metric of the service, declared once with its help text in a
//! `prometheus` registry, and encoded in the Prometheus text format at
//! `/metrics` by [`Metrics::render`].
//!
//! The actors hold the metrics (atomic children of each family), so counting
//! an event is one atomic add on the hot path. Label sets are bounded: fixed
//! outcome, actor and reason names, one `cluster` label (with its `account`
//! and `region`) per reconciled cluster, the configured accounts and regions,
//! and at most [`MAX_UNRECONCILED_PLACES`] others.

use crate::accounts::Place;
use crate::model::Kind;
use crate::reader::Health;
use prometheus::core::{AtomicU64, GenericGauge, GenericGaugeVec};
use prometheus::{
    Counter, CounterVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry,
};

/// A value that goes up and down.
pub type Gauge = GenericGauge<AtomicU64>;
type GaugeVec = GenericGaugeVec<AtomicU64>;

/// Buckets of SQS calls, in seconds (a receive long-polls up to 20 s).
const SQS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
];

/// Accounts and regions counted apart in `css_events_unreconciled_total`;
/// the ones after them count under `account="other",region="other"`.
pub const MAX_UNRECONCILED_PLACES: usize = 100;

/// Every metric of the service.
pub struct Metrics {
    registry: Registry,
    /// The clusters' state (`/metrics/state`), apart from the service's own.
    pub cluster_state: crate::cluster_state::ClusterState,
    /// `css_events_total{outcome}`: messages handed to the decoder (`received`),
    /// events that changed the store (`applied`), events at or below the
    /// stored version (`stale`), valid events of types not stored
    /// (`ignored`), messages that could not be decoded (`invalid`).
    pub events_received: IntCounter,
    pub events_applied: IntCounter,
    pub events_stale: IntCounter,
    pub events_ignored: IntCounter,
    pub events_invalid: IntCounter,
    pub store_commits: IntCounter,
    pub store_commit_seconds: Counter,
    pub store_errors: IntCounter,
    pub store_revision: Gauge,
    /// `css_ecs_api_requests_total{operation, outcome}`.
    ecs_requests: IntCounterVec,
    /// `css_ecs_calls_total{account, region, operation}`.
    ecs_calls: IntCounterVec,
    /// `css_events_unreconciled_total{account, region}`.
    unreconciled: IntCounterVec,
    /// `css_reconcile_discovery_errors_total{account, region}`.
    discovery_errors: IntCounterVec,
    unreconciled_places: std::sync::Mutex<std::collections::HashSet<Place>>,
    /// `css_view_entities{kind}`, in [`Kind::ALL`] order.
    pub view_entities: [Gauge; Kind::ALL.len()],
    pub feed_reloads: IntCounter,
    /// `css_store_deletions_total{reason="retention"}`.
    pub retention_deletions: IntCounter,
    /// `css_actor_restarts_total{actor}`.
    pub writer_restarts: IntCounter,
    pub decoder_restarts: IntCounter,
    pub hub_restarts: IntCounter,
    pub hub_changes: IntCounter,
    pub streams_open: Gauge,
    pub stream_items_sent: IntCounter,
    /// `css_streams_dropped_total{reason}`.
    pub streams_too_slow: IntCounter,
    pub streams_expired: IntCounter,
    pub sqs: SqsMetrics,
    /// Rendered from the [`Health`] at each scrape.
    health: HealthGauges,
    clusters: ClusterFamilies,
    /// The clusters with series (by their key: ARN, or name), for
    /// `css_reconcile_leader` at each scrape.
    cluster_names: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// The QueueReader's metrics.
pub struct SqsMetrics {
    /// `css_sqs_receive_seconds`.
    pub receive_seconds: Histogram,
    /// `css_sqs_delete_seconds`.
    pub delete_seconds: Histogram,
    /// `css_sqs_errors_total{op}`.
    pub receive_errors: IntCounter,
    pub delete_errors: IntCounter,
    /// `css_events_dead_lettered_total`.
    pub dead_lettered: IntCounter,
}

impl SqsMetrics {
    fn declare(d: &Declare) -> SqsMetrics {
        let errors = d.counters("css_sqs_errors_total", "Failed SQS calls.", &["op"]);
        SqsMetrics {
            receive_seconds: d.histogram(
                "css_sqs_receive_seconds",
                "SQS ReceiveMessage calls (long polls included).",
            ),
            delete_seconds: d.histogram("css_sqs_delete_seconds", "SQS DeleteMessageBatch calls."),
            receive_errors: errors.with_label_values(&["receive"]),
            delete_errors: errors.with_label_values(&["delete"]),
            dead_lettered: d.counter(
                "css_events_dead_lettered_total",
                "Invalid messages sent to the dead-letter queue.",
            ),
        }
    }
}

/// The per-cluster families (`css_reconcile_*{cluster}`).
/// The gauges that show the [`Health`].
struct HealthGauges {
    store_up: Gauge,
    view_loaded: Gauge,
    reconcile_pending: Gauge,
    source_up: Gauge,
}

impl HealthGauges {
    fn declare(d: &Declare) -> HealthGauges {
        HealthGauges {
            store_up: d.gauge("css_store_up", "1 while the store answers."),
            view_loaded: d.gauge(
                "css_view_loaded",
                "1 once the view is loaded from the store.",
            ),
            reconcile_pending: d.gauge(
                "css_reconcile_pending",
                "Clusters whose first sweep is not done yet.",
            ),
            source_up: d.gauge(
                "css_source_up",
                "1 while the event source delivers: the queue answered its last receive \
                 (the simulator and a replay file always); 0 while it fails, or with no source.",
            ),
        }
    }

    fn show(&self, health: &Health) {
        self.store_up.set(u64::from(health.store_up));
        self.view_loaded.set(u64::from(health.loaded));
        self.reconcile_pending
            .set(health.reconcile_pending() as u64);
        let up = health.source == crate::reader::SourceState::Up;
        self.source_up.set(u64::from(up));
    }
}

struct ClusterFamilies {
    sweeps: IntCounterVec,
    sweep_errors: IntCounterVec,
    sweep_seconds: CounterVec,
    added: IntCounterVec,
    updated: IntCounterVec,
    removed: IntCounterVec,
    api_calls: IntCounterVec,
    throttles: IntCounterVec,
    leader: GaugeVec,
    refreshes: IntCounterVec,
    /// Services marked to be described again, or being described.
    refreshes_pending: Gauge,
}

/// What made a `DescribeServices` call (`css_service_refreshes_total{reason}`),
/// weakest first: a batch counts under its strongest reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefreshReason {
    /// A sweep.
    Sweep,
    /// A task of the service changed.
    Task,
    /// A service event named it.
    Event,
}

impl RefreshReason {
    pub const ALL: [RefreshReason; 3] = [
        RefreshReason::Sweep,
        RefreshReason::Task,
        RefreshReason::Event,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefreshReason::Task => "task",
            RefreshReason::Event => "event",
            RefreshReason::Sweep => "sweep",
        }
    }
}

/// Reconcile metrics of one cluster.
#[derive(Debug, Clone)]
pub struct ClusterStats {
    pub sweeps: IntCounter,
    pub sweep_errors: IntCounter,
    pub sweep_seconds: Counter,
    pub added: IntCounter,
    pub updated: IntCounter,
    pub removed: IntCounter,
    pub api_calls: IntCounter,
    pub throttles: IntCounter,
    /// 1 while this replica leads the cluster's reconcile (set at each scrape).
    pub leader: Gauge,
    /// `DescribeServices` calls, in [`RefreshReason::ALL`] order.
    pub refreshes: [IntCounter; 3],
}

impl ClusterStats {
    /// Counts one `DescribeServices` call made for `reason`.
    pub fn refreshed(&self, reason: RefreshReason) {
        self.refreshes[reason as usize].inc();
    }
}

/// Declares metrics in one registry. Names and help texts are constants, so
/// a failure to register is a programming error caught by every test.
struct Declare<'a>(&'a Registry);

impl Declare<'_> {
    fn register<M: prometheus::core::Collector + Clone + 'static>(&self, m: M) -> M {
        self.0
            .register(Box::new(m.clone()))
            .expect("metric names are unique and valid");
        m
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid metric"))
    }

    fn seconds(&self, name: &str, help: &str) -> Counter {
        self.register(Counter::new(name, help).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.register(Gauge::new(name, help).expect("valid metric"))
    }

    fn histogram(&self, name: &str, help: &str) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(SQS_BUCKETS.to_vec());
        self.register(Histogram::with_opts(opts).expect("valid metric"))
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauges(&self, name: &str, help: &str, label: &str) -> GaugeVec {
        self.register(GaugeVec::new(Opts::new(name, help), &[label]).expect("valid metric"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let d = Declare(&registry);
        let events = d.counters("css_events_total", "ECS events by outcome.", &["outcome"]);
        let restarts = d.counters(
            "css_actor_restarts_total",
            "Supervised actor restarts.",
            &["actor"],
        );
        let views = d.gauges(
            "css_view_entities",
            "Entities in the in-memory view.",
            "kind",
        );
        let dropped = d.counters(
            "css_streams_dropped_total",
            "Streams ended by the server: too_slow (the client did not keep up), \
             expired (history retention overtook a catch-up).",
            &["reason"],
        );
        let deletions = d.counters(
            "css_store_deletions_total",
            "Entities deleted by the service.",
            &["reason"],
        );
        Metrics {
            events_received: events.with_label_values(&["received"]),
            events_applied: events.with_label_values(&["applied"]),
            events_stale: events.with_label_values(&["stale"]),
            events_ignored: events.with_label_values(&["ignored"]),
            events_invalid: events.with_label_values(&["invalid"]),
            store_commits: d.counter("css_store_commits_total", "Durable store commits."),
            store_commit_seconds: d.seconds(
                "css_store_commit_seconds_total",
                "Time spent in store commits.",
            ),
            store_errors: d.counter("css_store_errors_total", "Failed store loads and commits."),
            store_revision: d.gauge("css_store_revision", "Current store revision."),
            view_entities: Kind::ALL.map(|k| views.with_label_values(&[k.as_str()])),
            ecs_requests: d.counters(
                "css_ecs_api_requests_total",
                "Requests to the ECS read API (/ecs), by operation (\"other\": one \
                 not served) and outcome: ok, or client_error.",
                &["operation", "outcome"],
            ),
            ecs_calls: d.counters(
                "css_ecs_calls_total",
                "Calls this service made to the ECS API (sweeps, service refreshes, \
                 cluster discovery), by account, region and operation.",
                &["account", "region", "operation"],
            ),
            unreconciled: d.counters(
                "css_events_unreconciled_total",
                "Valid events from an account or region that no reconciler covers (they are applied all the same).",
                &["account", "region"],
            ),
            unreconciled_places: Default::default(),
            discovery_errors: d.counters(
                "css_reconcile_discovery_errors_total",
                "Failed listings of an account and region's clusters (ListClusters, or \
                 no credentials for the account: a role that cannot be assumed).",
                &["account", "region"],
            ),
            feed_reloads: d.counter(
                "css_store_feed_reloads_total",
                "Full view reloads because the store's feed fell behind.",
            ),
            retention_deletions: deletions.with_label_values(&["retention"]),
            writer_restarts: restarts.with_label_values(&["StoreWriter"]),
            decoder_restarts: restarts.with_label_values(&["EventDecoder"]),
            hub_restarts: restarts.with_label_values(&["StreamHub"]),
            hub_changes: d.counter(
                "css_stream_changes_total",
                "Committed changes received by the StreamHub.",
            ),
            streams_open: d.gauge("css_streams_open", "Change streams open now."),
            stream_items_sent: d.counter(
                "css_stream_items_sent_total",
                "Item lines written to change-stream clients.",
            ),
            streams_too_slow: dropped.with_label_values(&["too_slow"]),
            streams_expired: dropped.with_label_values(&["expired"]),
            sqs: SqsMetrics::declare(&d),
            health: HealthGauges::declare(&d),
            clusters: ClusterFamilies::declare(&d),
            cluster_names: Default::default(),
            registry,
            cluster_state: crate::cluster_state::ClusterState::new(),
        }
    }

    /// `css_service_refreshes_pending`, which the dirty set keeps.
    pub fn service_refreshes_pending(&self) -> Gauge {
        self.clusters.refreshes_pending.clone()
    }

    /// The metrics of the cluster `key` (its ARN, or its name where the
    /// ARN is not known): labelled with its name, account and region.
    pub fn cluster(&self, key: &str) -> ClusterStats {
        if let Ok(mut names) = self.cluster_names.lock() {
            names.insert(key.to_owned());
        }
        let c = &self.clusters;
        let labels = cluster_labels(key);
        let labels = [labels[0].as_str(), labels[1].as_str(), labels[2].as_str()];
        let of = |v: &IntCounterVec| v.with_label_values(&labels);
        let [name, account, region] = labels;
        ClusterStats {
            sweeps: of(&c.sweeps),
            sweep_errors: of(&c.sweep_errors),
            sweep_seconds: c.sweep_seconds.with_label_values(&labels),
            added: of(&c.added),
            updated: of(&c.updated),
            removed: of(&c.removed),
            api_calls: of(&c.api_calls),
            throttles: of(&c.throttles),
            leader: c.leader.with_label_values(&labels),
            refreshes: RefreshReason::ALL.map(|r| {
                c.refreshes
                    .with_label_values(&[name, account, region, r.as_str()])
            }),
        }
    }

    /// Counts a call this service made to ECS in `place`; `operation` is
    /// one of the few the reconcilers make.
    pub fn ecs_call(&self, place: &Place, operation: &str) {
        self.ecs_calls
            .with_label_values(&[place.account_label(), place.region_label(), operation])
            .inc();
    }

    /// Counts a failed listing of the clusters of `place`.
    pub fn discovery_error(&self, place: &Place) {
        self.discovery_errors
            .with_label_values(&[place.account_label(), place.region_label()])
            .inc();
    }

    /// Counts an event applied from `place`, which no reconciler covers.
    pub fn event_unreconciled(&self, place: &Place) {
        let counted_apart = match self.unreconciled_places.lock() {
            Ok(mut seen) => {
                seen.contains(place)
                    || (seen.len() < MAX_UNRECONCILED_PLACES && seen.insert(place.clone()))
            }
            Err(_) => false,
        };
        let labels = match counted_apart {
            true => [place.account_label(), place.region_label()],
            false => ["other", "other"],
        };
        self.unreconciled.with_label_values(&labels).inc();
    }

    /// Counts a request to the ECS read API. `operation` is one of the
    /// operations served, or `other`: a bounded set.
    pub fn ecs_request(&self, operation: &str, ok: bool) {
        let outcome = if ok { "ok" } else { "client_error" };
        self.ecs_requests
            .with_label_values(&[operation, outcome])
            .inc();
    }

    /// Forgets the metrics of a cluster that is no longer reconciled.
    pub fn forget_cluster(&self, key: &str) {
        if let Ok(mut names) = self.cluster_names.lock() {
            names.remove(key);
        }
        let labels = cluster_labels(key);
        let name = [labels[0].as_str(), labels[1].as_str(), labels[2].as_str()];
        let c = &self.clusters;
        for v in [
            &c.sweeps,
            &c.sweep_errors,
            &c.added,
            &c.updated,
            &c.removed,
            &c.api_calls,
            &c.throttles,
        ] {
            let _ = v.remove_label_values(&name);
        }
        let _ = c.sweep_seconds.remove_label_values(&name);
        let _ = c.leader.remove_label_values(&name);
        for r in RefreshReason::ALL {
            let _ = c
                .refreshes
                .remove_label_values(&[name[0], name[1], name[2], r.as_str()]);
        }
    }

    /// Everything, in the Prometheus text format (version 0.0.4), with the
    /// readiness gauges taken from `health` and each cluster's
    /// `css_reconcile_leader` from `leads` (asked now: a replica whose lease
    /// ran out while it was frozen says so at once).
    pub fn render(&self, health: &Health, leads: impl Fn(&str) -> bool) -> String {
        if let Ok(names) = self.cluster_names.lock() {
            for key in names.iter() {
                let l = cluster_labels(key);
                let leader = self.clusters.leader.with_label_values(&[
                    l[0].as_str(),
                    l[1].as_str(),
                    l[2].as_str(),
                ]);
                leader.set(u64::from(leads(key)));
            }
        }
        self.health.show(health);
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

/// The `cluster`, `account` and `region` labels of the cluster `key` (an
/// ARN, or a name: then the account and region are empty).
fn cluster_labels(key: &str) -> [String; 3] {
    let name = crate::arn::cluster_name(key).unwrap_or(key);
    let place = Place::of_arn(key);
    [
        name.to_owned(),
        place.account_label().to_owned(),
        place.region_label().to_owned(),
    ]
}

/// The labels of every per-cluster family.
const CLUSTER: &[&str] = &["cluster", "account", "region"];

impl ClusterFamilies {
    fn declare(d: &Declare) -> ClusterFamilies {
        ClusterFamilies {
            sweeps: d.counters("css_reconcile_sweeps_total", "Reconcile sweeps.", CLUSTER),
            sweep_errors: d.counters(
                "css_reconcile_sweep_errors_total",
                "Sweeps that failed (and deleted nothing).",
                CLUSTER,
            ),
            sweep_seconds: d.register(
                CounterVec::new(
                    Opts::new("css_reconcile_sweep_seconds_total", "Time spent sweeping."),
                    CLUSTER,
                )
                .expect("valid metric"),
            ),
            added: d.counters(
                "css_reconcile_added_total",
                "Entities the reconciler found missing (by a sweep; services also by a refresh).",
                CLUSTER,
            ),
            updated: d.counters(
                "css_reconcile_updated_total",
                "Entities a sweep found stale.",
                CLUSTER,
            ),
            removed: d.counters(
                "css_reconcile_removed_total",
                "Entities a sweep removed.",
                CLUSTER,
            ),
            api_calls: d.counters("css_reconcile_api_calls_total", "ECS API calls.", CLUSTER),
            throttles: d.counters(
                "css_reconcile_throttled_total",
                "ECS API calls throttled.",
                CLUSTER,
            ),
            leader: d.register(
                GaugeVec::new(
                    Opts::new(
                        "css_reconcile_leader",
                        "1 while this replica leads the cluster's reconcile.",
                    ),
                    CLUSTER,
                )
                .expect("valid metric"),
            ),
            refreshes: d.register(
                IntCounterVec::new(
                    Opts::new(
                        "css_service_refreshes_total",
                        "DescribeServices calls, by what caused them: a service event, \
                         a change of one of its tasks, or a sweep.",
                    ),
                    &["cluster", "account", "region", "reason"],
                )
                .expect("valid metric"),
            ),
            refreshes_pending: d.gauge(
                "css_service_refreshes_pending",
                "Services marked to be described again, or being described.",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_rendered_with_its_help_and_values() {
        let m = Metrics::new();
        m.events_applied.inc_by(3);
        m.cluster("web").sweeps.inc();
        m.sqs.receive_seconds.observe(0.2);
        let text = m.render(&Health::default(), |_| false);
        for line in [
            "# HELP css_events_total ECS events by outcome.",
            "# TYPE css_events_total counter",
            "css_events_total{outcome=\"applied\"} 3",
            "css_events_total{outcome=\"invalid\"} 0",
            "css_reconcile_sweeps_total{account=\"\",cluster=\"web\",region=\"\"} 1",
            "css_sqs_receive_seconds_count 1",
            "css_view_loaded 0",
            "css_store_up 0",
            "css_reconcile_pending 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        m.forget_cluster("web");
        assert!(!m
            .render(&Health::default(), |_| false)
            .contains("cluster=\"web\""));
    }

    #[test]
    fn clusters_are_labelled_with_their_place_and_other_places_are_bounded() {
        let m = Metrics::new();
        let arn = "arn:aws:ecs:eu-west-1:222222222222:cluster/web";
        m.cluster(arn).sweeps.inc();
        let place = Place::of_arn(arn);
        m.ecs_call(&place, "ListTasks");
        for i in 0..MAX_UNRECONCILED_PLACES + 5 {
            m.event_unreconciled(&Place::new(Some(&format!("{i:012}")), Some("us-east-1")));
        }
        m.event_unreconciled(&Place::new(Some("000000000000"), Some("us-east-1")));
        let text = m.render(&Health::default(), |_| true);
        for line in [
            "css_reconcile_sweeps_total{account=\"222222222222\",cluster=\"web\",region=\"eu-west-1\"} 1",
            "css_reconcile_leader{account=\"222222222222\",cluster=\"web\",region=\"eu-west-1\"} 1",
            "css_ecs_calls_total{account=\"222222222222\",operation=\"ListTasks\",region=\"eu-west-1\"} 1",
            "css_events_unreconciled_total{account=\"000000000000\",region=\"us-east-1\"} 2",
            "css_events_unreconciled_total{account=\"other\",region=\"other\"} 5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        let series = text
            .lines()
            .filter(|l| l.starts_with("css_events_unreconciled_total{"))
            .count();
        assert_eq!(series, MAX_UNRECONCILED_PLACES + 1);
    }
}
