//! Configuration: built-in defaults < `--config` TOML file < `CSS_*` environment
//! < command-line flags (`operations.md`).
//!
//! The layers are merged with the `config` crate; the merged tree is then
//! checked key by key against [`schema`] so that every problem (unknown key,
//! bad value) is reported at once, and only then deserialized into the typed
//! [`Settings`]. Values from the environment arrive as strings and are coerced
//! to the key's type during that check.

mod cli;

pub use cli::help;

use actors::{arn, sim, writer};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the service is configured with.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: Server,
    pub store: Store,
    pub source: Source,
    pub reconcile: Reconcile,
    /// `[simulate]`: the built-in simulator of `--simulate`.
    pub simulate: sim::Config,
    pub log: Log,
}

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Listen address. Loopback by default: exposing it is a decision.
    pub bind: String,
    /// Open streams at once; more get 503.
    pub max_streams: u64,
    /// Items buffered per stream before it is cut as too slow.
    pub stream_buffer: u64,
    /// (ext) PEM certificate chain and private key: serve HTTPS (both or neither).
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
    /// (ext) A file holding the bearer token every `/v1` request must carry.
    pub auth_token_file: PathBuf,
    /// (ext) Origins (`https://host:port`) whose pages may use the API and the
    /// streams (CORS); empty: same origin only. `"*"` allows any origin.
    pub cors_allowed_origins: Vec<String>,
    /// Errors on the v0.3 paths as `text/plain` with the message as the
    /// body, as v0.3 sent them (for clients generated from its swagger).
    pub v03_errors: bool,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            bind: "127.0.0.1:3000".into(),
            max_streams: 10_000,
            stream_buffer: 1024,
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            auth_token_file: PathBuf::new(),
            cors_allowed_origins: Vec::new(),
            v03_errors: false,
        }
    }
}

/// `[store]`: where the state lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// `embedded` or `etcd`.
    pub backend: String,
    pub data_dir: PathBuf,
    pub etcd_endpoints: Vec<String>,
    pub key_prefix: String,
    /// How far back a stream may resume.
    pub history_retention: Dur,
    /// How long a STOPPED task is kept after `stoppedAt` (ECS keeps about 1 h).
    pub stopped_task_retention: Dur,
    /// How long deletions are remembered: covers SQS's longest retention (4 d).
    pub tombstone_retention: Dur,
    /// (ext) etcd user name; with `etcd_password_file`.
    pub etcd_username: String,
    /// (ext) File holding the etcd password (never the password itself, so it
    /// stays out of command lines, environments and logs).
    pub etcd_password_file: PathBuf,
    /// (ext) CA certificate (PEM) that signed etcd's; enables TLS.
    pub etcd_ca_file: PathBuf,
    /// (ext) Client certificate and key (PEM) for etcd mutual TLS.
    pub etcd_cert_file: PathBuf,
    pub etcd_key_file: PathBuf,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            backend: "embedded".into(),
            data_dir: PathBuf::from("./data"),
            etcd_endpoints: Vec::new(),
            key_prefix: "css".into(),
            history_retention: Dur::secs(3600),
            stopped_task_retention: Dur::secs(3600),
            tombstone_retention: Dur::secs(4 * 86400),
            etcd_username: String::new(),
            etcd_password_file: PathBuf::new(),
            etcd_ca_file: PathBuf::new(),
            etcd_cert_file: PathBuf::new(),
            etcd_key_file: PathBuf::new(),
        }
    }
}

/// `[source]`: the SQS queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Source {
    /// Queue name, `sqs://NAME` or URL; empty: no SQS.
    pub queue: String,
    /// Long-poll wait (SQS allows 0–20 s).
    pub wait_time: Dur,
    /// Must exceed the worst-case time from receive to durable write.
    pub visibility_timeout: Dur,
    /// Concurrent receive loops, 10 messages each.
    pub pollers: u64,
    /// Where undecodable messages go; empty: the queue's own redrive policy.
    pub dead_letter_queue: String,
}

impl Default for Source {
    fn default() -> Self {
        Source {
            queue: String::new(),
            wait_time: Dur::secs(20),
            visibility_timeout: Dur::secs(60),
            pollers: 2,
            dead_letter_queue: String::new(),
        }
    }
}

/// `[reconcile]`: drift repair against the ECS API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reconcile {
    pub enabled: bool,
    pub interval: Dur,
    /// Share of the interval added or removed at random, so replicas and
    /// clusters do not sweep in lockstep.
    pub jitter: f64,
    /// Client-side budget against ECS API throttling.
    pub max_requests_per_second: f64,
    /// An entity younger than this is never removed by a sweep.
    pub grace_period: Dur,
    /// Either a list of cluster names to reconcile (no discovery), or a table
    /// of per-cluster tuning (`[reconcile.clusters.NAME]`, any key above).
    pub clusters: Clusters,
}

impl Default for Reconcile {
    fn default() -> Self {
        Reconcile {
            enabled: true,
            interval: Dur::secs(300),
            jitter: 0.1,
            max_requests_per_second: 10.0,
            grace_period: Dur::secs(60),
            clusters: Clusters::default(),
        }
    }
}

/// `reconcile.clusters`: a list of names, or per-cluster tuning.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum Clusters {
    #[default]
    Discover,
    List(Vec<String>),
    Tuned(HashMap<String, ClusterTuning>),
}

/// `[reconcile.clusters.NAME]`: any `[reconcile]` key, for one cluster.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterTuning {
    pub enabled: Option<bool>,
    pub interval: Option<Dur>,
    pub jitter: Option<f64>,
    pub max_requests_per_second: Option<f64>,
    pub grace_period: Option<Dur>,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `debug`, `info`, `warn`, `error`, `crit` or `off`.
    pub level: String,
    /// Empty: stderr.
    pub file: String,
    /// `term` or `json`.
    pub format: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            file: String::new(),
            format: "term".into(),
        }
    }
}

impl Settings {
    /// The writer's tuning from these settings.
    pub fn writer(&self) -> writer::Config {
        let retention = self.store.stopped_task_retention.0;
        writer::Config {
            stopped_task_retention: retention,
            tombstone_retention: self.store.tombstone_retention.0,
            history_retention: self.store.history_retention.0,
            // Often enough that a task is never kept much past its retention.
            housekeeping_interval: (retention / 10)
                .clamp(Duration::from_millis(200), Duration::from_secs(30)),
            ..writer::Config::default()
        }
    }

    /// The reconcilers' settings: `[reconcile]`, with per-cluster tuning.
    pub fn reconciler(&self) -> actors::reconciler::Settings {
        let r = &self.reconcile;
        let base = actors::reconciler::Tuning {
            enabled: r.enabled,
            interval: r.interval.0,
            jitter: r.jitter,
            max_requests_per_second: r.max_requests_per_second,
            grace_period: r.grace_period.0,
        };
        let (per_cluster, clusters) = match &r.clusters {
            Clusters::Discover => (HashMap::new(), None),
            Clusters::List(names) => (HashMap::new(), Some(names.clone())),
            Clusters::Tuned(tuned) => (
                tuned
                    .iter()
                    .map(|(name, t)| {
                        let tuning = actors::reconciler::Tuning {
                            enabled: t.enabled.unwrap_or(base.enabled),
                            interval: t.interval.map_or(base.interval, |d| d.0),
                            jitter: t.jitter.unwrap_or(base.jitter),
                            max_requests_per_second: t
                                .max_requests_per_second
                                .unwrap_or(base.max_requests_per_second),
                            grace_period: t.grace_period.map_or(base.grace_period, |d| d.0),
                        };
                        (name.clone(), tuning)
                    })
                    .collect(),
                None,
            ),
        };
        actors::reconciler::Settings {
            base,
            per_cluster,
            clusters,
        }
    }

    /// The listen address (validated when loaded).
    pub fn bind_addr(&self) -> SocketAddr {
        self.server
            .bind
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 3000)))
    }
}

/// A duration written like `30s`, `5m`, `1h`, `4d`, `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration like 30s, 5m, 1h or 4d ({e})"))
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Run,
    Help,
    Version,
}

/// What feeds the pipeline: `--simulate`, `--replay`, or the queue of `source.queue`.
#[derive(Debug, Clone, PartialEq)]
pub enum Feed {
    None,
    Simulate,
    Replay(PathBuf),
    Queue,
}

/// A loaded configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub mode: Mode,
    pub feed: Feed,
    pub settings: Settings,
    pub config_file: Option<PathBuf>,
}

/// Every problem found in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Problems(pub Vec<String>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Loads the configuration from `args` (without the program name) and the
/// environment `env`.
pub fn load(args: &[String], env: &HashMap<String, String>) -> Result<Loaded, Problems> {
    let cli::Parsed {
        mode,
        cli: flags,
        mut problems,
    } = cli::parse(args);
    if mode != Mode::Run {
        return Ok(Loaded {
            mode,
            feed: Feed::None,
            settings: Settings::default(),
            config_file: None,
        });
    }

    let mut builder = config::Config::builder();
    if let Some(path) = &flags.config {
        if let Err(e) = std::fs::metadata(path) {
            problems.push(format!("cannot read config file {}: {e}", path.display()));
        } else {
            builder = builder
                .add_source(config::File::from(path.as_path()).format(config::FileFormat::Toml));
        }
    }
    let has_region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .any(|k| env.get(*k).is_some_and(|v| !v.is_empty()));
    // The original service's names for the log settings.
    let env: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("CSS_"))
        .map(|(k, v)| {
            let k = match k.as_str() {
                "CSS_LOG_LEVEL" => "CSS_LOG__LEVEL".to_owned(),
                "CSS_LOG_FILE" => "CSS_LOG__FILE".to_owned(),
                "CSS_LOG_FORMAT" => "CSS_LOG__FORMAT".to_owned(),
                _ => k.clone(),
            };
            (k, v.clone())
        })
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("CSS")
            .prefix_separator("_")
            .separator("__")
            .source(Some(env)),
    );
    let mut tree = match builder.build().and_then(|c| c.try_deserialize::<Value>()) {
        Ok(Value::Object(m)) => Value::Object(m),
        Ok(_) => Value::Object(Map::new()),
        Err(e) => {
            problems.push(e.to_string());
            Value::Object(Map::new())
        }
    };
    for (path, value) in flags.overrides() {
        set_path(&mut tree, path, value);
    }
    schema::check(&mut tree, &mut problems);

    let settings = if problems.is_empty() {
        match serde_json::from_value::<Settings>(tree) {
            Ok(s) => s,
            Err(e) => {
                problems.push(e.to_string());
                Settings::default()
            }
        }
    } else {
        Settings::default()
    };

    let feed = match (flags.simulate, flags.replay) {
        (true, Some(_)) => {
            problems.push("--simulate and --replay cannot be used together".into());
            Feed::None
        }
        (true, None) => Feed::Simulate,
        (false, Some(path)) => {
            if let Err(e) = std::fs::File::open(&path) {
                problems.push(format!("cannot read replay file {}: {e}", path.display()));
            }
            Feed::Replay(path)
        }
        (false, None) if !settings.source.queue.is_empty() => Feed::Queue,
        (false, None) => Feed::None,
    };
    if !settings.source.queue.is_empty() && matches!(feed, Feed::Simulate | Feed::Replay(_)) {
        problems.push("source.queue (--queue) cannot be used with --simulate or --replay".into());
    }
    if problems.is_empty() {
        check_settings(&settings, has_region, &mut problems);
    }
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    Ok(Loaded {
        mode: Mode::Run,
        feed,
        settings,
        config_file: flags.config,
    })
}

/// Checks that need more than one key, or the file system.
fn check_settings(s: &Settings, has_region: bool, problems: &mut Vec<String>) {
    if !s.source.queue.is_empty() && !has_region {
        problems
            .push("source.queue is set but no AWS region is configured (set AWS_REGION)".into());
    }
    let st = &s.store;
    if st.backend == "etcd" && st.etcd_endpoints.is_empty() {
        problems.push("store.backend is \"etcd\" but store.etcd_endpoints is empty".into());
    }
    if st.etcd_username.is_empty() != st.etcd_password_file.as_os_str().is_empty() {
        problems.push("store.etcd_username and store.etcd_password_file go together".into());
    }
    if st.etcd_cert_file.as_os_str().is_empty() != st.etcd_key_file.as_os_str().is_empty() {
        problems.push("store.etcd_cert_file and store.etcd_key_file go together".into());
    }
    let sv = &s.server;
    if sv.tls_cert_file.as_os_str().is_empty() != sv.tls_key_file.as_os_str().is_empty() {
        problems.push("server.tls_cert_file and server.tls_key_file go together".into());
    }
    for origin in &sv.cors_allowed_origins {
        if !crate::api::cors::valid_origin(origin) {
            problems.push(format!(
                "server.cors_allowed_origins: {origin:?} is not an origin \
                 (scheme://host[:port], no path, or \"*\")"
            ));
        }
    }
    if !sv.auth_token_file.as_os_str().is_empty() {
        match std::fs::read_to_string(&sv.auth_token_file) {
            Ok(t) if t.trim().is_empty() => {
                problems.push("server.auth_token_file: the file holds no token".into())
            }
            Ok(_) => {}
            Err(e) => problems.push(format!(
                "server.auth_token_file: cannot read {}: {e}",
                sv.auth_token_file.display()
            )),
        }
    }
    for (key, path) in [
        ("server.tls_cert_file", &sv.tls_cert_file),
        ("server.tls_key_file", &sv.tls_key_file),
        ("store.etcd_password_file", &st.etcd_password_file),
        ("store.etcd_ca_file", &st.etcd_ca_file),
        ("store.etcd_cert_file", &st.etcd_cert_file),
        ("store.etcd_key_file", &st.etcd_key_file),
    ] {
        if !path.as_os_str().is_empty() {
            if let Err(e) = std::fs::read(path) {
                problems.push(format!("{key}: cannot read {}: {e}", path.display()));
            }
        }
    }
}

fn set_path(tree: &mut Value, path: &str, value: Value) {
    let mut node = tree;
    let mut parts = path.split('.').peekable();
    while let Some(p) = parts.next() {
        let Value::Object(map) = node else { return };
        if parts.peek().is_none() {
            map.insert(p.to_owned(), value);
            return;
        }
        node = map
            .entry(p.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
    }
}

/// The known keys and their types.
mod schema {
    use super::*;

    #[derive(Clone, Copy)]
    enum Ty {
        Str,
        Addr,
        Path,
        Uint { min: u64, max: u64 },
        Float { min: f64, max: f64 },
        Bool,
        Dur,
        Ratio,
        OneOf(&'static [&'static str]),
        StrList,
    }

    const LEVELS: &[&str] = &["debug", "info", "warn", "error", "crit", "off"];

    fn reconcile_key(key: &str) -> Option<Ty> {
        Some(match key {
            "enabled" => Ty::Bool,
            "interval" | "grace_period" => Ty::Dur,
            "jitter" => Ty::Ratio,
            "max_requests_per_second" => Ty::Float {
                min: 0.01,
                max: 1e6,
            },
            _ => return None,
        })
    }

    fn ty(section: &str, key: &str) -> Option<Ty> {
        Some(match (section, key) {
            ("server", "bind") => Ty::Addr,
            ("server", "max_streams") => Ty::Uint {
                min: 1,
                max: 1_000_000,
            },
            ("server", "stream_buffer") => Ty::Uint {
                min: 1,
                max: 1_000_000,
            },
            ("server", "tls_cert_file" | "tls_key_file" | "auth_token_file") => Ty::Path,
            ("server", "cors_allowed_origins") => Ty::StrList,
            ("server", "v03_errors") => Ty::Bool,
            ("store", "backend") => Ty::OneOf(&["embedded", "etcd"]),
            ("store", "data_dir") => Ty::Path,
            ("store", "etcd_endpoints") => Ty::StrList,
            ("store", "key_prefix") => Ty::Str,
            ("store", "history_retention" | "stopped_task_retention" | "tombstone_retention") => {
                Ty::Dur
            }
            ("store", "etcd_username") => Ty::Str,
            (
                "store",
                "etcd_password_file" | "etcd_ca_file" | "etcd_cert_file" | "etcd_key_file",
            ) => Ty::Path,
            ("source", "queue" | "dead_letter_queue") => Ty::Str,
            ("source", "wait_time" | "visibility_timeout") => Ty::Dur,
            ("source", "pollers") => Ty::Uint { min: 1, max: 64 },
            ("reconcile", k) => reconcile_key(k)?,
            ("simulate", "seed") => Ty::Uint {
                min: 0,
                max: u64::MAX,
            },
            ("simulate", "clusters") => Ty::Uint { min: 1, max: 1000 },
            ("simulate", "instances_per_cluster") => Ty::Uint {
                min: 0,
                max: 100_000,
            },
            ("simulate", "tasks_per_instance") => Ty::Uint { min: 0, max: 1000 },
            ("simulate", "events_per_second") => Ty::Float { min: 0.0, max: 1e6 },
            ("simulate", "duplicate_rate" | "reorder_rate" | "drop_rate" | "malformed_rate") => {
                Ty::Float { min: 0.0, max: 1.0 }
            }
            ("log", "level") => Ty::OneOf(LEVELS),
            ("log", "file") => Ty::Str,
            ("log", "format") => Ty::OneOf(&["term", "json"]),
            _ => return None,
        })
    }

    /// Checks every key of `tree`, coercing values to their types in place.
    pub(super) fn check(tree: &mut Value, problems: &mut Vec<String>) {
        let Value::Object(top) = tree else { return };
        for (section, body) in top.iter_mut() {
            let Value::Object(keys) = body else {
                problems.push(format!("unknown key `{section}`"));
                continue;
            };
            if !matches!(
                section.as_str(),
                "server" | "store" | "source" | "reconcile" | "simulate" | "log"
            ) {
                problems.push(format!("unknown section `[{section}]`"));
                continue;
            }
            for (key, value) in keys.iter_mut() {
                let path = format!("{section}.{key}");
                if section == "reconcile" && key == "clusters" {
                    check_clusters(value, problems);
                    continue;
                }
                match ty(section, key) {
                    Some(t) => coerce(&path, t, value, problems),
                    None => problems.push(format!("unknown key `{path}`")),
                }
            }
        }
    }

    fn check_clusters(value: &mut Value, problems: &mut Vec<String>) {
        match value {
            Value::String(s) => {
                // From the environment: a comma-separated list.
                *value = Value::Array(
                    s.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::String(s.to_owned()))
                        .collect(),
                );
                check_clusters(value, problems);
            }
            Value::Array(names) => {
                for n in names {
                    match n.as_str() {
                        Some(s) if arn::is_valid_cluster_name(s) => {}
                        _ => problems.push(format!(
                            "reconcile.clusters: {n} is not a cluster name (1-255 letters, digits, - and _)"
                        )),
                    }
                }
            }
            Value::Object(clusters) => {
                for (name, tuning) in clusters.iter_mut() {
                    if !arn::is_valid_cluster_name(name) {
                        problems.push(format!("reconcile.clusters.{name}: not a valid cluster name"));
                    }
                    let Value::Object(keys) = tuning else {
                        problems.push(format!("reconcile.clusters.{name} must be a table"));
                        continue;
                    };
                    for (key, v) in keys.iter_mut() {
                        let path = format!("reconcile.clusters.{name}.{key}");
                        match reconcile_key(key) {
                            Some(t) => coerce(&path, t, v, problems),
                            None => problems.push(format!("unknown key `{path}`")),
                        }
                    }
                }
            }
            other => problems.push(format!(
                "reconcile.clusters must be a list of names or a table of per-cluster settings, not {other}"
            )),
        }
    }

    fn coerce(path: &str, t: Ty, v: &mut Value, problems: &mut Vec<String>) {
        let text = match v {
            Value::String(s) => Some(s.clone()),
            _ => None,
        };
        let mut bad = |what: &str| problems.push(format!("{path}: {what}, got {v}"));
        match t {
            Ty::Str | Ty::Path => match v {
                Value::String(_) => {}
                Value::Number(n) => *v = Value::String(n.to_string()),
                _ => bad("expected a string"),
            },
            Ty::Addr => match text.as_deref().map(str::parse::<SocketAddr>) {
                Some(Ok(_)) => {}
                _ => bad("expected an address like 127.0.0.1:3000"),
            },
            Ty::OneOf(allowed) => match text.as_deref() {
                Some(s) if allowed.contains(&s.to_ascii_lowercase().as_str()) => {
                    *v = Value::String(s.to_ascii_lowercase())
                }
                _ => bad(&format!("expected one of {}", allowed.join(", "))),
            },
            Ty::Bool => match (&*v, text.as_deref()) {
                (Value::Bool(_), _) => {}
                (_, Some("true")) => *v = Value::Bool(true),
                (_, Some("false")) => *v = Value::Bool(false),
                _ => bad("expected true or false"),
            },
            Ty::Uint { min, max } => {
                let n = match &*v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse::<u64>().ok(),
                    _ => None,
                };
                match n {
                    Some(n) if (min..=max).contains(&n) => *v = Value::from(n),
                    _ => bad(&format!("expected a whole number from {min} to {max}")),
                }
            }
            Ty::Float { min, max } => {
                let n = match &*v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse::<f64>().ok(),
                    _ => None,
                };
                match n {
                    Some(n) if n.is_finite() && (min..=max).contains(&n) => *v = Value::from(n),
                    _ => bad(&format!("expected a number from {min} to {max}")),
                }
            }
            Ty::Dur => match text.as_deref().map(parse_duration) {
                Some(Ok(_)) => {}
                Some(Err(e)) => problems.push(format!("{path}: {e}")),
                None => bad("expected a duration like \"30s\""),
            },
            Ty::Ratio => {
                let n = match &*v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => match s.trim().strip_suffix('%') {
                        Some(p) => p.trim().parse::<f64>().ok().map(|p| p / 100.0),
                        None => s.trim().parse::<f64>().ok(),
                    },
                    _ => None,
                };
                match n {
                    Some(n) if (0.0..=1.0).contains(&n) => *v = Value::from(n),
                    _ => bad("expected a share like \"10%\" or 0.1, from 0 to 100%"),
                }
            }
            Ty::StrList => match &*v {
                Value::Array(items) if items.iter().all(Value::is_string) => {}
                Value::String(s) => {
                    *v = Value::Array(
                        s.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(|s| Value::String(s.to_owned()))
                            .collect(),
                    )
                }
                _ => bad("expected a list of strings"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_spec() {
        let l = load(&[], &HashMap::new()).unwrap();
        let s = l.settings;
        assert_eq!(s.server.bind, "127.0.0.1:3000");
        assert_eq!(s.server.max_streams, 10_000);
        assert_eq!(s.store.backend, "embedded");
        assert_eq!(s.store.data_dir, PathBuf::from("./data"));
        assert_eq!(s.store.tombstone_retention, Dur::secs(4 * 86400));
        assert_eq!(s.reconcile.interval, Dur::secs(300));
        assert!((s.reconcile.jitter - 0.1).abs() < 1e-9);
        assert_eq!(s.source.pollers, 2);
        assert_eq!(s.simulate.clusters, 3);
        assert_eq!(s.log.level, "info");
        assert_eq!(l.feed, Feed::None);
    }

    #[test]
    fn precedence_is_file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[server]\nbind = \"127.0.0.1:1\"\nmax_streams = 5\n[reconcile]\ninterval = \"10s\"\n\
             [reconcile.clusters.Prod-Web]\ninterval = \"30s\"\n[log]\nlevel = \"warn\"\n",
        )
        .unwrap();
        let l = load(
            &args(&["--config", file.to_str().unwrap(), "--bind=127.0.0.1:3"]),
            &env(&[
                ("CSS_SERVER__BIND", "127.0.0.1:2"),
                ("CSS_SERVER__MAX_STREAMS", "7"),
                ("CSS_LOG_LEVEL", "debug"),
                ("CSS_RECONCILE__JITTER", "25%"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        let s = l.settings;
        assert_eq!(s.server.bind, "127.0.0.1:3");
        assert_eq!(s.server.max_streams, 7);
        assert_eq!(s.reconcile.interval, Dur::secs(10));
        assert!((s.reconcile.jitter - 0.25).abs() < 1e-9);
        assert_eq!(s.log.level, "debug");
        match s.reconcile.clusters {
            Clusters::Tuned(m) => {
                let t = m.get("Prod-Web").expect("cluster names keep their case");
                assert_eq!(t.interval, Some(Dur::secs(30)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "bogus = 1\n[server]\nbind = \"nowhere\"\ncolour = \"red\"\n[store]\nhistory_retention = \"soon\"\n\
             [reconcile.clusters.web]\nintervall = \"1s\"\n[nope]\nx = 1\n",
        )
        .unwrap();
        let err = load(
            &args(&[
                "--config",
                file.to_str().unwrap(),
                "--frobnicate",
                "--replay",
            ]),
            &env(&[("CSS_SIMULATE__DROP_RATE", "2")]),
        )
        .unwrap_err();
        let all = err.0.join("\n");
        for needle in [
            "unknown argument `--frobnicate`",
            "--replay needs a value",
            "unknown key `bogus`",
            "server.bind",
            "unknown key `server.colour`",
            "store.history_retention",
            "unknown key `reconcile.clusters.web.intervall`",
            "unknown section `[nope]`",
            "simulate.drop_rate",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn unreadable_files_and_exclusive_feeds_are_errors() {
        let err = load(&args(&["--config", "/nonexistent/c.toml"]), &HashMap::new()).unwrap_err();
        assert!(err.0[0].contains("cannot read config file"));
        let err = load(
            &args(&["--simulate", "--replay", "/nonexistent"]),
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(err.0.iter().any(|p| p.contains("cannot be used together")));
        assert!(load(&args(&["--replay", "/nonexistent"]), &HashMap::new()).is_err());
    }

    #[test]
    fn every_example_in_config_dir_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        // The compose and production examples read a queue: they need a region.
        let env: HashMap<String, String> =
            [("AWS_REGION".to_owned(), "eu-west-1".to_owned())].into();
        let mut loaded = HashMap::new();
        for f in std::fs::read_dir(&dir).unwrap() {
            let path = f.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let l = load(&args(&["--config", path.to_str().unwrap()]), &env)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                loaded.insert(name, l.settings);
            }
        }
        let names = |mut v: Vec<&str>| {
            v.sort_unstable();
            v.into_iter().map(str::to_owned).collect::<Vec<_>>()
        };
        let mut found: Vec<String> = loaded.keys().cloned().collect();
        found.sort_unstable();
        assert_eq!(
            found,
            names(vec![
                "cluster-state-service",
                "local",
                "compose",
                "production"
            ])
        );
        assert_eq!(
            loaded["cluster-state-service"].server.bind,
            "127.0.0.1:3000"
        );
        assert_eq!(loaded["local"].store.backend, "embedded");
        let compose = &loaded["compose"];
        assert_eq!(compose.store.etcd_endpoints, ["etcd:2379"]);
        assert_eq!(compose.source.queue, "ecs-events");
        let prod = loaded["production"].reconciler();
        assert_eq!(prod.per_cluster.len(), 4, "per-cluster tuning");
        assert_eq!(prod.per_cluster["batch"].interval, Duration::from_secs(900));
        assert!(!prod.per_cluster["sandbox"].enabled);
        assert_eq!(prod.per_cluster["prod-api"].max_requests_per_second, 5.0);
    }

    #[test]
    fn help_and_version_need_nothing_else() {
        assert_eq!(
            load(&args(&["--help"]), &HashMap::new()).unwrap().mode,
            Mode::Help
        );
        assert_eq!(
            load(&args(&["--version"]), &HashMap::new()).unwrap().mode,
            Mode::Version
        );
    }

    #[test]
    fn etcd_endpoints_accept_repeats_and_commas() {
        let l = load(
            &args(&["--etcd-endpoint", "a:1,b:2", "--etcd-endpoint=c:3"]),
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(l.settings.store.backend, "etcd");
        assert_eq!(l.settings.store.etcd_endpoints, ["a:1", "b:2", "c:3"]);
        let err = load(&args(&[]), &env(&[("CSS_STORE__BACKEND", "etcd")])).unwrap_err();
        assert!(err.0[0].contains("etcd_endpoints is empty"), "{err:?}");
        let err = load(
            &args(&[]),
            &env(&[
                ("CSS_STORE__ETCD_USERNAME", "u"),
                ("CSS_STORE__ETCD_CA_FILE", "/nonexistent"),
            ]),
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 2, "{err:?}");
    }

    #[test]
    fn the_queue_is_a_feed_of_its_own() {
        let region = ("AWS_REGION", "us-west-2");
        let l = load(&args(&["--queue", "sqs://events"]), &env(&[region])).unwrap();
        assert_eq!(
            (l.feed, l.settings.source.queue.as_str()),
            (Feed::Queue, "sqs://events")
        );
        let l = load(&args(&["--queue_name", "events"]), &env(&[region])).unwrap();
        assert_eq!(l.settings.source.queue, "events");
        let err = load(&args(&["--queue", "q", "--simulate"]), &env(&[region])).unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|p| p.contains("cannot be used with --simulate")),
            "{err:?}"
        );
        let err = load(&args(&["--queue", "q"]), &HashMap::new()).unwrap_err();
        assert!(err.0.iter().any(|p| p.contains("no AWS region")), "{err:?}");
    }

    #[test]
    fn a_queue_without_region_is_an_error() {
        let mut p = Vec::new();
        let s = Settings {
            source: Source {
                queue: "q".into(),
                ..Source::default()
            },
            ..Settings::default()
        };
        check_settings(&s, false, &mut p);
        assert!(p.iter().any(|p| p.contains("no AWS region")));
    }
}
