//! `[reconcile]`: how each cluster is reconciled against the ECS API.

use super::{Settings, Tuning};
use crate::arn;
use crate::check::within;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// The shortest `service_refresh`: dirty services are described no more often.
const MIN_SERVICE_REFRESH: Duration = Duration::from_millis(100);

/// `[reconcile]`. Every key but `clusters` may also be set per cluster.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Sweep at all. Default true.
    pub enabled: bool,
    /// Time between two sweeps of a cluster. Default 5m.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Share of the interval added or removed at random, so replicas and
    /// clusters do not sweep in lockstep: `"10%"` or `0.1`, 0–100 %. Default 10 %.
    #[serde(deserialize_with = "ratio")]
    pub jitter: f64,
    /// ECS calls per second (client-side, against throttling), 0.01–1,000,000:
    /// the budget of each account and region, shared by its clusters' sweeps
    /// and service refreshes (ECS throttles per account and region); set per
    /// cluster, it limits that cluster further. Default 10.
    pub max_requests_per_second: f64,
    /// An entity stored more recently than this before a sweep is never
    /// removed by it. Default 1m.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// A dirty service (services.md) is described again at most this often.
    /// Default 5s.
    #[serde(with = "humantime_serde")]
    pub service_refresh: Duration,
    /// A list of cluster names (or ARNs) to reconcile (no discovery), or a
    /// table of per-cluster tuning (`[reconcile.clusters.KEY]`, KEY a cluster
    /// name: every cluster of that name, or a cluster ARN: that one, which
    /// wins). Default: discover every cluster with ListClusters.
    pub clusters: Clusters,
}

impl Default for Config {
    fn default() -> Self {
        let t = Tuning::default();
        Config {
            enabled: t.enabled,
            interval: t.interval,
            jitter: t.jitter,
            max_requests_per_second: t.max_requests_per_second,
            grace_period: t.grace_period,
            service_refresh: t.service_refresh,
            clusters: Clusters::default(),
        }
    }
}

/// `reconcile.clusters`: discover, a list of names, or per-cluster tuning.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Clusters {
    #[default]
    Discover,
    List(Vec<String>),
    Tuned(HashMap<String, ClusterTuning>),
}

/// `[reconcile.clusters.KEY]`: any `[reconcile]` key, for the clusters of a
/// name or the one of an ARN.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterTuning {
    pub enabled: Option<bool>,
    #[serde(with = "humantime_serde::option")]
    pub interval: Option<Duration>,
    #[serde(deserialize_with = "some_ratio")]
    pub jitter: Option<f64>,
    pub max_requests_per_second: Option<f64>,
    #[serde(with = "humantime_serde::option")]
    pub grace_period: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    pub service_refresh: Option<Duration>,
}

impl Config {
    /// The reconcilers' settings: the base tuning, and each cluster's.
    pub fn settings(&self) -> Settings {
        let base = Tuning {
            enabled: self.enabled,
            interval: self.interval,
            jitter: self.jitter,
            max_requests_per_second: self.max_requests_per_second,
            grace_period: self.grace_period,
            service_refresh: self.service_refresh,
        };
        let tune = |t: &ClusterTuning| Tuning {
            enabled: t.enabled.unwrap_or(base.enabled),
            interval: t.interval.unwrap_or(base.interval),
            jitter: t.jitter.unwrap_or(base.jitter),
            max_requests_per_second: t
                .max_requests_per_second
                .unwrap_or(base.max_requests_per_second),
            grace_period: t.grace_period.unwrap_or(base.grace_period),
            service_refresh: t.service_refresh.unwrap_or(base.service_refresh),
        };
        let (per_cluster, clusters) = match &self.clusters {
            Clusters::Discover => (HashMap::new(), None),
            Clusters::List(names) => (HashMap::new(), Some(names.clone())),
            Clusters::Tuned(tuned) => (
                tuned.iter().map(|(n, t)| (n.clone(), tune(t))).collect(),
                None,
            ),
        };
        Settings {
            base,
            per_cluster,
            clusters,
        }
    }

    /// Ranges and names serde's types do not check.
    pub fn check(&self, problems: &mut Vec<String>) {
        let rate = |key: &str, r: f64, problems: &mut Vec<String>| {
            within(key, r, 0.01, 1e6, problems);
        };
        rate(
            "reconcile.max_requests_per_second",
            self.max_requests_per_second,
            problems,
        );
        let refresh = |key: &str, d: Duration, problems: &mut Vec<String>| {
            if d < MIN_SERVICE_REFRESH {
                problems.push(format!("{key}: must be at least 100ms, not {d:?}"));
            }
        };
        refresh("reconcile.service_refresh", self.service_refresh, problems);
        if let Clusters::Tuned(tuned) = &self.clusters {
            for (name, t) in tuned {
                if let Some(d) = t.service_refresh {
                    refresh(
                        &format!("reconcile.clusters.{name}.service_refresh"),
                        d,
                        problems,
                    );
                }
            }
        }
        let names: Vec<&String> = match &self.clusters {
            Clusters::Discover => Vec::new(),
            Clusters::List(names) => names.iter().collect(),
            Clusters::Tuned(tuned) => {
                for (name, t) in tuned {
                    if let Some(r) = t.max_requests_per_second {
                        let key = format!("reconcile.clusters.{name}.max_requests_per_second");
                        rate(&key, r, problems);
                    }
                }
                tuned.keys().collect()
            }
        };
        let valid = |n: &str| arn::is_valid_cluster_name(n) || arn::cluster_name(n).is_some();
        for name in names.into_iter().filter(|n| !valid(n)) {
            problems.push(format!(
                "reconcile.clusters: {name:?} is not a cluster name (1-255 letters, digits, - and _) \
                 or cluster ARN"
            ));
        }
    }
}

/// A share: `"10%"`, `"0.1"` or `0.1`, from 0 to 1.
fn ratio<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Share {
        Number(f64),
        Text(String),
    }
    let share = match Share::deserialize(d)? {
        Share::Number(n) => Some(n),
        Share::Text(s) => match s.trim().strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().ok().map(|p| p / 100.0),
            None => s.trim().parse().ok(),
        },
    };
    share
        .filter(|n| (0.0..=1.0).contains(n))
        .ok_or_else(|| de::Error::custom("expected a share like \"10%\" or 0.1, from 0 to 100%"))
}

fn some_ratio<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    ratio(d).map(Some)
}

impl<'de> Deserialize<'de> for Clusters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ClustersVisitor;

        impl<'de> Visitor<'de> for ClustersVisitor {
            type Value = Clusters;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of cluster names or a table of per-cluster settings")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Clusters, E> {
                let names = s.split(',').map(str::trim).filter(|s| !s.is_empty());
                Ok(Clusters::List(names.map(str::to_owned).collect()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Clusters, A::Error> {
                let d = de::value::SeqAccessDeserializer::new(seq);
                Vec::deserialize(d).map(Clusters::List)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Clusters, A::Error> {
                let d = de::value::MapAccessDeserializer::new(map);
                HashMap::deserialize(d).map(Clusters::Tuned)
            }
        }

        d.deserialize_any(ClustersVisitor)
    }
}
