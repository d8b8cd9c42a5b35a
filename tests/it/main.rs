//! Integration tests, one crate (one binary) with a module per area.

/// Runs each named `async fn name(b: Backend)` as two tests, `name::embedded`
/// and `name::etcd` (against a real etcd of its own).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[actix_web::test]
            async fn embedded() {
                super::$name(crate::support::Backend::Embedded).await
            }
            #[actix_web::test]
            async fn etcd() {
                super::$name(crate::support::Backend::Etcd).await
            }
        }
    )*};
}

mod accounts;
mod api;
mod binary;
mod cluster;
mod compat;
mod dashboard;
mod deploy;
mod ecs_api;
mod etcd;
mod fixtures;
mod history;
mod ingest;
mod openapi;
mod pipeline;
mod prom;
mod reconcile;
mod security;
mod servers;
mod services;
mod streams;
mod support;
