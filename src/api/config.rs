//! `[server]`: the HTTP listener.

use actors::check::{readable, together};
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address. Loopback by default (exposing it is a decision):
    /// 127.0.0.1:3000.
    #[serde(deserialize_with = "address")]
    pub bind: SocketAddr,
    /// Streams open at once; more get 503. 1–1,000,000, default 10,000.
    pub max_streams: u64,
    /// Commits (of any size) buffered per stream, and items that may wait
    /// unread for 5 s, before it is cut as too slow. 1–1,000,000, default 1024.
    pub stream_buffer: u64,
    /// (ext) PEM certificate chain and private key: serve HTTPS (both or
    /// neither). Default none.
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
    /// (ext) A file holding the bearer token every `/v1` request must carry.
    /// Default none.
    pub auth_token_file: PathBuf,
    /// (ext) A file of `ACCESS_KEY_ID SECRET [ACCOUNT]` lines: every
    /// request to the ECS read API (`/ecs`) must then carry an AWS Signature
    /// V4 made with one of the keys, and reads the account its line names
    /// (else the home account). Default none (`/ecs` open like `/v1`).
    pub ecs_credentials_file: PathBuf,
    /// (ext) Origins (`https://host:port`) whose pages may use the API and
    /// the streams (CORS); `"*"` allows any origin. Default none (same
    /// origin only).
    pub cors_allowed_origins: Vec<String>,
    /// Errors on the v0.3 paths as `text/plain` with the message as the
    /// body, as v0.3 sent them (for clients generated from its swagger).
    /// Default false.
    pub v03_errors: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 3000)),
            max_streams: 10_000,
            stream_buffer: 1024,
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            auth_token_file: PathBuf::new(),
            ecs_credentials_file: PathBuf::new(),
            cors_allowed_origins: Vec::new(),
            v03_errors: false,
        }
    }
}

fn address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "expected an address like 127.0.0.1:3000, got {text:?}"
        ))
    })
}

fn set(p: &Path) -> bool {
    !p.as_os_str().is_empty()
}

impl Config {
    /// Ranges, keys that go together, origins and files.
    pub fn check(&self, problems: &mut Vec<String>) {
        use actors::check::within;
        within(
            "server.max_streams",
            self.max_streams,
            1,
            1_000_000,
            problems,
        );
        within(
            "server.stream_buffer",
            self.stream_buffer,
            1,
            1_000_000,
            problems,
        );
        together(
            ("server.tls_cert_file", set(&self.tls_cert_file)),
            ("server.tls_key_file", set(&self.tls_key_file)),
            problems,
        );
        for origin in &self.cors_allowed_origins {
            if !super::cors::valid_origin(origin) {
                problems.push(format!(
                    "server.cors_allowed_origins: {origin:?} is not an origin \
                     (scheme://host[:port], no path, or \"*\")"
                ));
            }
        }
        if set(&self.auth_token_file) {
            match std::fs::read_to_string(&self.auth_token_file) {
                Ok(t) if t.trim().is_empty() => {
                    problems.push("server.auth_token_file: the file holds no token".into())
                }
                Ok(_) => {}
                Err(e) => problems.push(format!(
                    "server.auth_token_file: cannot read {}: {e}",
                    self.auth_token_file.display()
                )),
            }
        }
        if set(&self.ecs_credentials_file) {
            if let Err(e) = super::ecs::sigv4::Credentials::load(&self.ecs_credentials_file) {
                problems.push(format!("server.ecs_credentials_file: {e}"));
            }
        }
        readable("server.tls_cert_file", &self.tls_cert_file, problems);
        readable("server.tls_key_file", &self.tls_key_file, problems);
    }
}
