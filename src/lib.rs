//! cluster-state-service: a live, queryable copy of the state of Amazon ECS
//! clusters, fed by ECS change events and served over a REST API.
//!
//! # Layout
//! - [`config`]: command line, TOML file and `CSS_*` environment → [`config::Settings`].
//! - [`logging`]: slog setup (`CSS_LOG_LEVEL`, `CSS_LOG_FILE`).
//! - [`api`]: the actix-web handlers of the v1 API, `/healthz`, `/readyz`, `/metrics`.
//! - [`service`]: starts the actor pipeline and the HTTP server; `main` and
//!   the tests both use it.
//!
//! The domain model, the store and the actors live in the `actors` crate
//! (`actors/`); start there at `actors::writer`.

pub mod api;
pub mod config;
pub mod logging;
pub mod service;
