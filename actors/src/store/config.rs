//! `[store]`: where the state lives, and how long what is kept.

use super::etcd;
use crate::check::{readable, together};
use crate::writer;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which store holds the state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// redb files in `data_dir`: one process.
    #[default]
    Embedded,
    /// An etcd cluster: several replicas share one state.
    Etcd,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `embedded` or `etcd`. Default embedded (etcd when endpoints are given
    /// on the command line).
    pub backend: Backend,
    /// Directory of the embedded store. Default `./data`.
    pub data_dir: PathBuf,
    /// etcd client endpoints (`host:port`). Default none.
    pub etcd_endpoints: Vec<String>,
    /// Prefix of every etcd key, so several services can share a cluster.
    /// Default `css`.
    pub key_prefix: String,
    /// Writes to etcd in flight together (each its own transaction; writes
    /// of one ARN stay in order), 1–1024. Default 64.
    pub etcd_max_in_flight: usize,
    /// How long history is kept: how far back a stream may resume, an
    /// entity's history goes and `at=` can look (older history is
    /// compacted). Default 7d on the embedded store, 1h on etcd (where it
    /// counts against etcd's quota): see [`Config::history_retention`].
    #[serde(with = "humantime_serde")]
    pub history_retention: Option<Duration>,
    /// How long a STOPPED task is kept after `stoppedAt` (ECS forgets it
    /// after about 1 h; set days here to search stopped tasks for that
    /// long). Default 24h.
    #[serde(with = "humantime_serde")]
    pub stopped_task_retention: Duration,
    /// How long a deletion is remembered; covers SQS's longest retention.
    /// Default 4d.
    #[serde(with = "humantime_serde")]
    pub tombstone_retention: Duration,
    /// etcd user name, with `etcd_password_file`. Default none.
    pub etcd_username: String,
    /// File holding the etcd password (never the password itself, so it
    /// stays out of command lines, environments and logs). Default none.
    pub etcd_password_file: PathBuf,
    /// CA certificate (PEM) that signed etcd's; enables TLS. Default none.
    pub etcd_ca_file: PathBuf,
    /// Client certificate and key (PEM) for etcd mutual TLS. Default none.
    pub etcd_cert_file: PathBuf,
    pub etcd_key_file: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backend: Backend::Embedded,
            data_dir: PathBuf::from("./data"),
            etcd_endpoints: Vec::new(),
            key_prefix: "css".into(),
            etcd_max_in_flight: 64,
            history_retention: None,
            stopped_task_retention: Duration::from_secs(24 * 3600),
            tombstone_retention: Duration::from_secs(4 * 86400),
            etcd_username: String::new(),
            etcd_password_file: PathBuf::new(),
            etcd_ca_file: PathBuf::new(),
            etcd_cert_file: PathBuf::new(),
            etcd_key_file: PathBuf::new(),
        }
    }
}

fn set(p: &Path) -> bool {
    !p.as_os_str().is_empty()
}

impl Config {
    /// `history_retention`, or its default for the backend.
    pub fn history_retention(&self) -> Duration {
        self.history_retention.unwrap_or(match self.backend {
            Backend::Embedded => Duration::from_secs(7 * 86400),
            Backend::Etcd => Duration::from_secs(3600),
        })
    }

    /// The writer's tuning.
    pub fn writer(&self) -> writer::Config {
        let retention = self.stopped_task_retention;
        writer::Config {
            stopped_task_retention: retention,
            tombstone_retention: self.tombstone_retention,
            history_retention: self.history_retention(),
            // Often enough that a task is never kept much past its retention.
            housekeeping_interval: (retention / 10)
                .clamp(Duration::from_millis(200), Duration::from_secs(30)),
            ..writer::Config::default()
        }
    }

    /// The etcd client's settings; reads the password file.
    pub fn etcd(&self) -> std::io::Result<etcd::Config> {
        let path = |p: &PathBuf| set(p).then(|| p.clone());
        let password = match path(&self.etcd_password_file) {
            Some(p) => Some(
                std::fs::read_to_string(&p)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            None => None,
        };
        Ok(etcd::Config {
            endpoints: self.etcd_endpoints.clone(),
            key_prefix: self.key_prefix.clone(),
            max_in_flight: self.etcd_max_in_flight,
            username: Some(self.etcd_username.clone()).filter(|u| !u.is_empty()),
            password,
            ca_file: path(&self.etcd_ca_file),
            cert_file: path(&self.etcd_cert_file),
            key_file: path(&self.etcd_key_file),
        })
    }

    /// Keys that go together, and files that must be readable.
    pub fn check(&self, problems: &mut Vec<String>) {
        let in_flight = self.etcd_max_in_flight;
        crate::check::within("store.etcd_max_in_flight", in_flight, 1, 1024, problems);
        if self.backend == Backend::Etcd && self.etcd_endpoints.is_empty() {
            problems.push("store.backend is \"etcd\" but store.etcd_endpoints is empty".into());
        }
        together(
            ("store.etcd_username", !self.etcd_username.is_empty()),
            ("store.etcd_password_file", set(&self.etcd_password_file)),
            problems,
        );
        together(
            ("store.etcd_cert_file", set(&self.etcd_cert_file)),
            ("store.etcd_key_file", set(&self.etcd_key_file)),
            problems,
        );
        for (key, path) in [
            ("store.etcd_password_file", &self.etcd_password_file),
            ("store.etcd_ca_file", &self.etcd_ca_file),
            ("store.etcd_cert_file", &self.etcd_cert_file),
            ("store.etcd_key_file", &self.etcd_key_file),
        ] {
            readable(key, path, problems);
        }
    }
}
