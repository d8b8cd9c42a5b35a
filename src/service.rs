//! Starting and stopping the whole service in-process: the actor pipeline and
//! the HTTP server. `main` and the tests both go through [`Service::start`].

use crate::api;
use crate::config::{Feed, Settings};
use actix_web::dev::ServerHandle;
use actix_web::{web, HttpServer};
use actors::metrics::Metrics;
use actors::pipeline::{Pipeline, Source};
use actors::store::{self, Embedded, Store};
use slog::{info, Logger};
use std::net::SocketAddr;
use std::sync::Arc;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened (locked, unreadable). Not retryable.
    #[error("cannot open the store: {0}")]
    Store(#[from] store::Error),
    /// The listen address could not be bound. Not retryable.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running service.
pub struct Service {
    /// The address the API listens on (the real port when bound to port 0).
    pub addr: SocketAddr,
    pub pipeline: Pipeline,
    server: ServerHandle,
    log: Logger,
}

impl Service {
    /// Opens the store, starts the actors and the HTTP server; must be called
    /// inside a running actix `System`.
    pub async fn start(settings: &Settings, feed: Feed, log: Logger) -> Result<Service, Error> {
        let store: Arc<dyn Store> = Arc::new(Embedded::open(&settings.store.data_dir)?);
        Self::start_with_store(settings, feed, store, log).await
    }

    /// As [`Service::start`], on a given store (tests use this to inject faults).
    pub async fn start_with_store(
        settings: &Settings,
        feed: Feed,
        store: Arc<dyn Store>,
        log: Logger,
    ) -> Result<Service, Error> {
        let metrics = Arc::new(Metrics::default());
        let source = match feed {
            Feed::None => {
                info!(
                    log,
                    "no event source configured: serving the store as it is \
                    (use --simulate for a demo, --replay FILE, or --queue)"
                );
                Source::None
            }
            Feed::Simulate => Source::Simulate(settings.simulate.clone()),
            Feed::Replay(p) => Source::Replay(p),
        };
        let pipeline = Pipeline::start(store, settings.writer(), source, metrics.clone(), &log);
        let state = web::Data::new(api::State::new(pipeline.writer.clone(), metrics));
        let bind = settings.bind_addr();
        let server = HttpServer::new(move || api::app(state.clone()))
            .workers(std::thread::available_parallelism().map_or(2, |n| n.get().min(4)))
            .disable_signals()
            .shutdown_timeout(5)
            .bind(bind)
            .map_err(|source| Error::Bind { addr: bind, source })?;
        let addr = server.addrs().first().copied().unwrap_or(bind);
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        info!(log, "serving"; "addr" => %addr);
        Ok(Service {
            addr,
            pipeline,
            server: handle,
            log,
        })
    }

    /// Stops the HTTP server (in-flight requests finish) and the actors.
    pub async fn stop(self) {
        info!(self.log, "stopping");
        self.server.stop(true).await;
        drop(self.pipeline);
    }
}
