//! Configuration: built-in defaults < `--config` TOML file < `CSS_*`
//! environment (`CSS_SECTION__KEY`) < command-line flags.
//!
//! Each component owns its configuration, beside it, with every key's unit
//! and default: `[server]` [`crate::api::config::Config`], `[store]`
//! [`actors::store::Config`], `[source]` [`actors::queue_reader::Config`],
//! `[reconcile]` [`actors::reconciler::Config`], `[simulate]`
//! [`actors::source::simulate::Config`], `[log]` [`crate::logging::Config`]. This module
//! only composes them: the `config` crate merges the layers into one tree,
//! each section is read key by key (so every unknown key and bad value is
//! reported at once, see [`value`]), then each component checks what its
//! types cannot (ranges, keys that go together, files).

mod cli;
mod value;

pub use cli::help;

use actors::queue_reader as sqs;
use actors::source::simulate as sim;
use actors::{reconciler, store};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use value::Problem;

/// Everything the service is configured with.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: crate::api::config::Config,
    pub store: store::Config,
    pub source: sqs::Config,
    pub reconcile: reconciler::Config,
    pub simulate: sim::Config,
    pub log: crate::logging::Config,
    /// `[history]`: the failure signals of `/metrics/state` (history.md).
    pub history: actors::cluster_state::Config,
    /// `[[accounts]]` (accounts.md); empty: the ambient credentials' account
    /// and region only.
    pub accounts: Vec<actors::accounts::Account>,
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
    let mut tree = merged(flags.config.as_deref(), env, &mut problems);
    for (path, value) in flags.overrides() {
        set_path(&mut tree, path, value);
    }
    let settings = read_settings(tree, &mut problems);
    let feed = feed(flags.simulate, flags.replay, &settings, &mut problems);
    let has_region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .any(|k| env.get(*k).is_some_and(|v| !v.is_empty()));
    check(&settings, has_region, &mut problems);
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

/// The file and the environment merged into one tree.
fn merged(
    file: Option<&std::path::Path>,
    env: &HashMap<String, String>,
    problems: &mut Vec<String>,
) -> Value {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        if let Err(e) = std::fs::metadata(path) {
            problems.push(format!("cannot read config file {}: {e}", path.display()));
        } else {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
    }
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
    match builder.build().and_then(|c| c.try_deserialize::<Value>()) {
        Ok(tree @ Value::Object(_)) => tree,
        Ok(_) => Value::Object(Map::new()),
        Err(e) => {
            problems.push(e.to_string());
            Value::Object(Map::new())
        }
    }
}

/// Reads every section; every unknown key and bad value becomes a problem.
fn read_settings(tree: Value, problems: &mut Vec<String>) -> Settings {
    let Value::Object(sections) = tree else {
        return Settings::default();
    };
    let mut s = Settings::default();
    for (name, body) in sections {
        if name == "accounts" {
            s.accounts = accounts(body, problems);
            continue;
        }
        let Value::Object(keys) = body else {
            problems.push(format!("unknown key `{name}`"));
            continue;
        };
        match name.as_str() {
            "server" => s.server = section(&name, keys, problems),
            "store" => s.store = section(&name, keys, problems),
            "source" => s.source = section(&name, keys, problems),
            "reconcile" => s.reconcile = section(&name, keys, problems),
            "simulate" => s.simulate = section(&name, keys, problems),
            "log" => s.log = section(&name, keys, problems),
            "history" => s.history = section(&name, keys, problems),
            _ => problems.push(format!("unknown section `[{name}]`")),
        }
    }
    s
}

/// Reads one section: each key on its own first, so that every problem is
/// found, then the whole.
fn section<T: DeserializeOwned + Default>(
    name: &str,
    keys: Map<String, Value>,
    problems: &mut Vec<String>,
) -> T {
    let before = problems.len();
    for (key, v) in &keys {
        let one = Value::Object(Map::from_iter([(key.clone(), v.clone())]));
        if let Err((path, problem)) = value::read::<T>(one) {
            problems.push(match problem {
                Problem::UnknownKey(_) => format!("unknown key `{name}.{path}`"),
                Problem::Invalid(why) => format!("{name}.{path}: {why}"),
            });
        }
    }
    if problems.len() > before {
        return T::default();
    }
    value::read(Value::Object(keys)).unwrap_or_else(|(path, problem)| {
        problems.push(format!("{name}.{path}: {problem}"));
        T::default()
    })
}

/// `[[accounts]]`: an array of tables, each read as a section of its own.
fn accounts(body: Value, problems: &mut Vec<String>) -> Vec<actors::accounts::Account> {
    let Value::Array(entries) = body else {
        problems.push("accounts: expected an array of tables ([[accounts]])".into());
        return Vec::new();
    };
    let mut read = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let name = format!("accounts[{i}]");
        match entry {
            Value::Object(keys) => {
                let before = problems.len();
                for required in ["id", "regions"].iter().filter(|k| !keys.contains_key(**k)) {
                    problems.push(format!("{name}.{required}: missing"));
                }
                if problems.len() == before {
                    read.push(section(&name, keys, problems));
                }
            }
            _ => problems.push(format!("{name}: expected a table")),
        }
    }
    read
}

/// What feeds the pipeline.
fn feed(
    simulate: bool,
    replay: Option<PathBuf>,
    settings: &Settings,
    problems: &mut Vec<String>,
) -> Feed {
    let queue = !settings.source.all_queues().is_empty();
    let feed = match (simulate, replay) {
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
        (false, None) if queue => Feed::Queue,
        (false, None) => Feed::None,
    };
    if queue && matches!(feed, Feed::Simulate | Feed::Replay(_)) {
        problems.push("source.queue (--queue) cannot be used with --simulate or --replay".into());
    }
    if !settings.accounts.is_empty() && feed == Feed::Simulate {
        problems.push(
            "[[accounts]] cannot be used with --simulate (the simulator has simulate.accounts \
             and simulate.regions)"
                .into(),
        );
    }
    feed
}

/// What each component's types cannot check, and what needs two sections.
fn check(s: &Settings, has_region: bool, problems: &mut Vec<String>) {
    if !s.source.queue.is_empty() && !has_region {
        problems
            .push("source.queue is set but no AWS region is configured (set AWS_REGION)".into());
    }
    for (i, q) in s.source.queues.iter().enumerate() {
        if q.region.is_none() && !has_region {
            problems.push(format!(
                "source.queues[{i}] has no region and no AWS region is configured \
                 (set its region, or AWS_REGION)"
            ));
        }
    }
    actors::accounts::check(&s.accounts, problems);
    s.server.check(problems);
    s.store.check(problems);
    s.source.check(problems);
    s.reconcile.check(problems);
    s.simulate.check(problems);
    s.history.check(problems);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::Level;
    use actors::reconciler::Clusters;
    use actors::store::Backend;
    use std::path::Path;
    use std::time::Duration;

    fn addr(a: &str) -> std::net::SocketAddr {
        a.parse().unwrap()
    }

    /// A configuration file holding `text`, in a directory removed when dropped.
    fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, text).unwrap();
        (dir, file)
    }

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
        assert_eq!(s.server.bind, addr("127.0.0.1:3000"));
        assert_eq!(s.server.max_streams, 10_000);
        assert_eq!(s.store.backend, Backend::Embedded);
        assert_eq!(s.store.data_dir, PathBuf::from("./data"));
        assert_eq!(s.store.tombstone_retention, Duration::from_secs(4 * 86400));
        assert_eq!(s.reconcile.interval, Duration::from_secs(300));
        assert!((s.reconcile.jitter - 0.1).abs() < 1e-9);
        assert_eq!(s.reconcile.service_refresh, Duration::from_secs(5));
        assert_eq!(s.source.pollers, 2);
        assert_eq!(s.simulate.clusters, 3);
        assert_eq!(s.log.level, Level::Info);
        assert_eq!(l.feed, Feed::None);
    }

    #[test]
    fn service_refresh_is_set_like_any_reconcile_key() {
        let (_dir, file) = config_file(
            "[reconcile]\nservice_refresh = \"2s\"\n[reconcile.clusters.web]\nservice_refresh = \"500ms\"\n",
        );
        let l = load(
            &args(&["--config", file.to_str().unwrap()]),
            &HashMap::new(),
        )
        .unwrap();
        let r = l.settings.reconcile.settings();
        assert_eq!(r.base.service_refresh, Duration::from_secs(2));
        assert_eq!(
            r.per_cluster["web"].service_refresh,
            Duration::from_millis(500)
        );
        let l = load(&[], &env(&[("CSS_RECONCILE__SERVICE_REFRESH", "750ms")])).unwrap();
        assert_eq!(
            l.settings.reconcile.service_refresh,
            Duration::from_millis(750)
        );
        for bad in ["soon", "0s"] {
            let err = load(&[], &env(&[("CSS_RECONCILE__SERVICE_REFRESH", bad)])).unwrap_err();
            assert!(
                err.to_string().contains("reconcile.service_refresh"),
                "{err}"
            );
        }
    }

    #[test]
    fn precedence_is_file_then_env_then_flags() {
        let (_dir, file) = config_file(
            "[server]\nbind = \"127.0.0.1:1\"\nmax_streams = 5\n[reconcile]\ninterval = \"10s\"\n\
             [reconcile.clusters.Prod-Web]\ninterval = \"30s\"\n[log]\nlevel = \"warn\"\n",
        );
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
        assert_eq!(s.server.bind, addr("127.0.0.1:3"));
        assert_eq!(s.server.max_streams, 7);
        assert_eq!(s.reconcile.interval, Duration::from_secs(10));
        assert!((s.reconcile.jitter - 0.25).abs() < 1e-9);
        assert_eq!(s.log.level, Level::Debug);
        match s.reconcile.clusters {
            Clusters::Tuned(m) => {
                let t = m.get("Prod-Web").expect("cluster names keep their case");
                assert_eq!(t.interval, Some(Duration::from_secs(30)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let (_dir, file) = config_file(
            "bogus = 1\n[server]\nbind = \"nowhere\"\ncolour = \"red\"\n[store]\nhistory_retention = \"soon\"\n\
             [reconcile.clusters.web]\nintervall = \"1s\"\n[nope]\nx = 1\n",
        );
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
            addr("127.0.0.1:3000")
        );
        assert_eq!(loaded["local"].store.backend, Backend::Embedded);
        let compose = &loaded["compose"];
        assert_eq!(compose.store.etcd_endpoints, ["etcd:2379"]);
        assert_eq!(compose.source.queue, "ecs-events");
        let prod = loaded["production"].reconcile.settings();
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
        assert_eq!(l.settings.store.backend, Backend::Etcd);
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
            source: sqs::Config {
                queue: "q".into(),
                ..sqs::Config::default()
            },
            ..Settings::default()
        };
        check(&s, false, &mut p);
        assert!(p.iter().any(|p| p.contains("no AWS region")));
    }

    #[test]
    fn accounts_and_regional_queues_are_read_and_checked() {
        let (_dir, file) = config_file(
            "[source]\nqueues = [\n  { queue = \"ecs-events\", region = \"us-east-1\" },\n  \
             { queue = \"https://sqs.eu-west-1.amazonaws.com/111111111111/ecs-events\", region = \"eu-west-1\" },\n]\n\
             [[accounts]]\nid = \"111111111111\"\nregions = [\"us-east-1\", \"eu-west-1\"]\n\
             [[accounts]]\nid = \"222222222222\"\nrole_arn = \"arn:aws:iam::222222222222:role/cluster-state-reader\"\n\
             external_id = \"css\"\nregions = [\"us-east-1\"]\n",
        );
        let l = load(
            &args(&["--config", file.to_str().unwrap()]),
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(l.feed, Feed::Queue);
        let s = l.settings;
        assert_eq!(s.source.all_queues().len(), 2);
        assert_eq!(s.source.queues[1].region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.accounts.len(), 2);
        assert_eq!(s.accounts[1].external_id.as_deref(), Some("css"));
        assert_eq!(s.accounts[0].role_arn, None);

        let (_dir, file) = config_file(
            "[source]\nqueue = \"q\"\nqueues = [{ queue = \"r\" }]\n\
             [[accounts]]\nid = \"12\"\nregions = [\"mars\"]\ncolour = 1\n[[accounts]]\nregions = []\n",
        );
        let err = load(
            &args(&["--config", file.to_str().unwrap()]),
            &HashMap::new(),
        )
        .unwrap_err();
        let all = err.0.join("\n");
        for needle in [
            "source.queue and source.queues cannot both be set",
            "source.queues[0] has no region and no AWS region is configured",
            "unknown key `accounts[0].colour`",
            "accounts[1].id: missing",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        let (_dir, file) = config_file("[[accounts]]\nid = \"12\"\nregions = [\"mars\"]\n");
        let err = load(
            &args(&["--config", file.to_str().unwrap()]),
            &HashMap::new(),
        )
        .unwrap_err();
        let all = err.0.join("\n");
        assert!(
            all.contains("accounts[0].id: expected an AWS account id of 12 digits"),
            "{all}"
        );
        assert!(
            all.contains("accounts[0].regions: \"mars\" is not a region name"),
            "{all}"
        );
        let err = load(
            &args(&["--config", file.to_str().unwrap(), "--simulate"]),
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(err
            .0
            .iter()
            .any(|p| p.contains("[[accounts]] cannot be used with --simulate")));
    }

    #[test]
    fn a_cluster_arn_tunes_that_cluster_and_wins_over_its_name() {
        let arn = "arn:aws:ecs:eu-west-1:222222222222:cluster/web";
        let (_dir, file) = config_file(&format!(
            "[reconcile.clusters.web]\ninterval = \"1m\"\n[reconcile.clusters.\"{arn}\"]\ninterval = \"2m\"\n"
        ));
        let l = load(
            &args(&["--config", file.to_str().unwrap()]),
            &HashMap::new(),
        )
        .unwrap();
        let r = l.settings.reconcile.settings();
        assert_eq!(r.per_cluster[arn].interval, Duration::from_secs(120));
        assert_eq!(r.per_cluster["web"].interval, Duration::from_secs(60));
        let (_dir, file) =
            config_file("[reconcile.clusters.\"arn:aws:ecs:x\"]\ninterval = \"1m\"\n");
        let err = load(
            &args(&["--config", file.to_str().unwrap()]),
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(
            err.0.iter().any(|p| p.contains("is not a cluster name")),
            "{err:?}"
        );
    }
}
