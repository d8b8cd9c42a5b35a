//! cluster-state-service: a live, queryable copy of the state of Amazon ECS
//! clusters, fed by ECS change events and served over a REST API.
//!
//! # Layout
//! - [`config`]: command line, TOML file and `CSS_*` environment → [`config::Settings`].
//! - [`logging`]: slog setup (`CSS_LOG_LEVEL`, `CSS_LOG_FILE`), with the
//!   libraries' `log` and `tracing` lines bridged into it.
//! - [`api`]: the actix-web application: the v1 REST API and its streams, the
//!   ECS read API (`/ecs`), the dashboard (`/ui/`), Prometheus service
//!   discovery (`/v1/sd/prometheus`), `/healthz`, `/readyz`, `/metrics` and
//!   `/metrics/state`, served by actix-web's `HttpServer`.
//! - [`service`]: starts the actor pipeline and the HTTP server; `main` and
//!   the tests both use it.
//!
//! The domain model, the store and the actors live in the `actors` crate
//! (`actors/`); start there at `actors::writer`.

pub mod api;
pub mod config;
pub mod logging;
pub mod service;
