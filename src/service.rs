//! Starting and stopping the whole service in-process: the actor pipeline and
//! the HTTP server. `main` and the tests both go through [`Service::start`].

use crate::api;
use crate::config::{Feed, Settings};
use actix_web::dev::ServerHandle;
use actix_web::web;
use actors::accounts::{Account, Place};
use actors::ecs_client::{AwsEcs, Ecs};
use actors::metrics::Metrics;
use actors::pipeline::{Pipeline, Reconcile, Source, SourceAddr};
use actors::queue_reader::Drain;
use actors::source::simulate::SimEcs;
use actors::store::{self, Embedded, Etcd, Store};
use slog::{info, o, Logger};
use std::net::SocketAddr;
use std::sync::Arc;

/// How long stopping waits for SQS batches in flight.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

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
    /// The TLS certificate or key, or the auth token, could not be used.
    #[error("{0}")]
    Security(String),
}

/// The HTTPS configuration from a PEM certificate chain and private key.
fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<rustls::ServerConfig, Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, p: &std::path::Path, e: &dyn std::fmt::Display| {
        Error::Security(format!("server.{what}: {}: {e}", p.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad("tls_cert_file", cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("tls_key_file", key, &e))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| Error::Security(format!("server.tls_cert_file/tls_key_file: {e}")))
}

/// Opens the configured store: etcd, or the embedded one in `data_dir`.
pub async fn open_store(settings: &Settings, log: &Logger) -> Result<Arc<dyn Store>, Error> {
    let st = &settings.store;
    if st.backend != store::Backend::Etcd {
        return Ok(Arc::new(Embedded::open(&st.data_dir)?));
    }
    let config = st
        .etcd()
        .map_err(|e| store::Error::Unavailable(e.to_string()))?;
    info!(log, "using the etcd store"; "endpoints" => st.etcd_endpoints.join(","),
        "key_prefix" => &st.key_prefix, "tls" => config.ca_file.is_some(),
        "auth" => config.username.is_some());
    Ok(Arc::new(
        Etcd::connect(&config, log.new(o!("store" => "etcd"))).await?,
    ))
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
        let store = open_store(settings, &log).await?;
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
        metrics.cluster_state.configure(settings.history.clone());
        let ecs_places = ecs_api_places(settings, &feed);
        let (source, places) = source(settings, feed, &log).await;
        let reconcile = match places {
            Some(places) if settings.reconcile.enabled => Some(Reconcile {
                settings: settings.reconcile.settings(),
                places,
            }),
            _ => None,
        };
        let pipeline = Pipeline::start(
            store.clone(),
            settings.store.writer(),
            source,
            reconcile,
            metrics.clone(),
            &log,
        );
        let (addr, server) = serve(settings, &pipeline, ecs_places, &log)?;
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

    /// Stops taking events (an SQS batch in flight is finished and
    /// acknowledged first, within `DRAIN_GRACE`), then the HTTP server
    /// (in-flight requests finish) and the actors.
    pub async fn stop(self) {
        info!(self.log, "stopping");
        if let SourceAddr::Queues(readers) = &self.pipeline.source {
            let drains = readers.iter().map(|r| r.send(Drain { grace: DRAIN_GRACE }));
            futures_util::future::join_all(drains).await;
        }
        // Streams end cleanly (their clients see the chunked end), then
        // the server waits for requests in flight.
        let _ = self.pipeline.hub.send(actors::hub::Close).await;
        self.server.stop(true).await;
        drop(self.pipeline);
    }
}

/// The ECS clients of the reconcilers, one per account and region.
type Places = Vec<(Place, Arc<dyn Ecs>)>;

/// What feeds the pipeline, and what answers the reconcilers' ECS calls in
/// each account and region: AWS with a queue, the simulator with
/// `--simulate`, nothing otherwise.
async fn source(settings: &Settings, feed: Feed, log: &Logger) -> (Source, Option<Places>) {
    match feed {
        Feed::None => {
            info!(
                log,
                "no event source configured: serving the store as it is \
                (use --simulate for a demo, --replay FILE, or --queue)"
            );
            (Source::None, None)
        }
        Feed::Simulate => {
            let sim = Arc::new(std::sync::Mutex::new(
                actors::source::simulate::Simulator::new(settings.simulate.clone()),
            ));
            let places = settings.simulate.places().into_iter().map(|place| {
                let ecs = SimEcs {
                    sim: sim.clone(),
                    place: place.clone(),
                };
                (place, Arc::new(ecs) as Arc<dyn Ecs>)
            });
            let places = places.collect();
            (
                Source::Simulate(settings.simulate.clone(), sim),
                Some(places),
            )
        }
        Feed::Replay(p) => (Source::Replay(p), None),
        Feed::Queue => {
            let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            let queues = settings.source.all_queues();
            let queues = queues.iter().map(|q| {
                let mut sqs = aws_sdk_sqs::config::Builder::from(&aws);
                if let Some(r) = &q.region {
                    sqs = sqs.region(aws_config::Region::new(r.clone()));
                }
                let client = aws_sdk_sqs::Client::from_conf(sqs.build());
                (client, settings.source.for_queue(q))
            });
            let queues = Source::Queues(queues.collect());
            (
                queues,
                Some(ecs_places(&aws, &settings.accounts, log).await),
            )
        }
    }
}

/// An ECS client for each configured account and region (`[[accounts]]`),
/// or for the ambient account and region when none is configured. An
/// account with a `role_arn` is read with the credentials of that role,
/// assumed through STS by the SDK's provider (and refreshed before they
/// expire by the client's identity cache); the others with the ambient ones.
async fn ecs_places(aws: &aws_config::SdkConfig, accounts: &[Account], log: &Logger) -> Places {
    if accounts.is_empty() {
        let ecs = AwsEcs::new(aws_sdk_ecs::Client::new(aws));
        return vec![(Place::default(), Arc::new(ecs))];
    }
    let mut places: Places = Vec::new();
    for account in accounts {
        for place in account.places() {
            let region = aws_config::Region::new(place.region_label().to_owned());
            let mut ecs = aws_sdk_ecs::config::Builder::from(aws).region(region.clone());
            if let Some(role) = &account.role_arn {
                let mut provider = aws_config::sts::AssumeRoleProvider::builder(role)
                    .session_name("cluster-state-service")
                    .region(region)
                    .configure(aws);
                if let Some(id) = &account.external_id {
                    provider = provider.external_id(id);
                }
                ecs = ecs.credentials_provider(provider.build().await);
            }
            info!(log, "reconciling an account and region"; "account" => &account.id,
                "region" => place.region_label(), "role" => account.role_arn.as_deref().unwrap_or("(own credentials)"));
            let client = AwsEcs::new(aws_sdk_ecs::Client::from_conf(ecs.build()));
            places.push((place, Arc::new(client)));
        }
    }
    places
}

/// How `/ecs` answers for one account and region: when the deployment
/// spans several (`[[accounts]]`, `source.queues`, or a simulator of several),
/// with the home account (the one read with the service's own credentials;
/// the simulator's first) for keys that name no account.
fn ecs_api_places(settings: &Settings, feed: &Feed) -> api::ecs::Places {
    if *feed == Feed::Simulate {
        let places = settings.simulate.places();
        return api::ecs::Places {
            several: places.len() > 1,
            home: places.first().and_then(|p| p.account.clone()),
        };
    }
    let home = settings.accounts.iter().find(|a| a.role_arn.is_none());
    api::ecs::Places {
        several: !settings.accounts.is_empty() || !settings.source.queues.is_empty(),
        home: home.map(|a| a.id.clone()),
    }
}

/// The API over `pipeline`, bound and ready to run, with the configured
/// bearer token and TLS.
fn serve(
    settings: &Settings,
    pipeline: &Pipeline,
    ecs_places: api::ecs::Places,
    log: &Logger,
) -> Result<(SocketAddr, actix_server::Server), Error> {
    let sv = &settings.server;
    let streams = api::StreamSettings {
        max_streams: sv.max_streams,
        buffer: sv.stream_buffer as usize,
    };
    let token = match sv.auth_token_file.as_os_str().is_empty() {
        true => None,
        false => Some(
            std::fs::read_to_string(&sv.auth_token_file)
                .map_err(|e| Error::Security(format!("server.auth_token_file: {e}")))?
                .trim()
                .to_owned(),
        ),
    };
    let tls = match sv.tls_cert_file.as_os_str().is_empty() {
        true => None,
        false => Some(tls_config(&sv.tls_cert_file, &sv.tls_key_file)?),
    };
    let ecs_credentials = match sv.ecs_credentials_file.as_os_str().is_empty() {
        true => None,
        false => Some(
            api::ecs::sigv4::Credentials::load(&sv.ecs_credentials_file)
                .map_err(|e| Error::Security(format!("server.ecs_credentials_file: {e}")))?,
        ),
    };
    info!(log, "API security"; "tls" => tls.is_some(), "bearer_auth" => token.is_some(),
        "ecs_signatures" => ecs_credentials.is_some());
    let state = web::Data::new(
        api::State::new(pipeline, streams)
            .with_token(token)
            .with_ecs_credentials(ecs_credentials)
            .with_ecs_places(ecs_places)
            .with_v03_errors(sv.v03_errors)
            .with_cors(sv.cors_allowed_origins.clone()),
    );
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    api::server::listen(state, sv.bind, tls, workers).map_err(|source| Error::Bind {
        addr: sv.bind,
        source,
    })
}
