//! The HTTP API (actix-web), served by `HttpServer` ([`server`]):
//! - the v1 REST endpoints: lists and describes of tasks, container instances
//!   and services ([`entities`], paged by [`listing`], filtered by [`query`]),
//!   and their change streams ([`stream`], from the StreamHub); the clusters
//!   with their accounts, regions and counts ([`clusters`]); the past
//!   ([`history`]: `at=` on every list, each entity's `/history`, a
//!   service's `/timeline`);
//! - the ECS read API, `POST /ecs` ([`ecs`], with its SigV4 check);
//! - the dashboard (`/ui/`, [`ui`]) and Prometheus service discovery
//!   (`/v1/sd/prometheus`, [`sd`]);
//! - `/healthz`, `/readyz`, `/metrics`, `/metrics/state` ([`health`]).
//!
//! Around every handler ([`middleware`]): the request limits, bearer auth,
//! v0.3 text errors, CORS. Handlers read a snapshot of the view through the
//! writer's `Reader`; list bodies are assembled from each entity's
//! pre-rendered JSON. Every error is `{"code", "message"}` JSON; nothing a
//! client sends can panic a handler.

mod clusters;
pub mod config;
pub mod cors;
pub mod ecs;
mod entities;
mod error;
mod health;
mod history;
mod listing;
mod middleware;
mod negotiate;
mod query;
mod sd;
pub mod server;
mod stream;
mod ui;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse};
use actors::hub::StreamHub;
use actors::metrics::Metrics;
use actors::model::Kind;
use actors::pipeline::Pipeline;
use actors::reader::Reader;
use actors::view::Snapshot;
use actors::writer::StoreWriter;
use entities::*;
use health::*;
use std::sync::Arc;

pub use error::Error;
pub use query::{INSTANCE_STATUSES, LAUNCH_TYPES, MAX_LIMIT, TASK_STATUSES};
pub use stream::Settings as StreamSettings;

/// What the handlers share.
pub struct State {
    /// For `/healthz` only: whether the writer runs.
    writer: actix::Addr<StoreWriter>,
    reader: Reader,
    hub: actix::Addr<StreamHub>,
    metrics: Arc<Metrics>,
    streams: StreamSettings,
    /// One permit per stream that may be open (`server.max_streams`).
    stream_slots: Arc<tokio::sync::Semaphore>,
    pages: PageCache,
    /// The bearer token `/v1` requests must carry, when one is configured.
    token: Option<Arc<[u8]>>,
    /// Errors on the v0.3 paths as `text/plain` (`server.v03_errors`).
    v03_errors: bool,
    /// Origins whose pages may use the API (`server.cors_allowed_origins`).
    cors_origins: Vec<String>,
    /// The access keys `/ecs` requests must be signed with, when configured.
    ecs_credentials: Option<Arc<ecs::sigv4::Credentials>>,
    /// How `/ecs` picks the account and region of a request.
    ecs_places: ecs::Places,
}

impl State {
    /// The API over `pipeline`.
    pub fn new(pipeline: &Pipeline, streams: StreamSettings) -> State {
        State {
            writer: pipeline.writer.clone(),
            reader: pipeline.reader.clone(),
            hub: pipeline.hub.clone(),
            metrics: pipeline.metrics.clone(),
            stream_slots: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(streams.max_streams)
                    .unwrap_or(usize::MAX)
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            streams,
            pages: PageCache::new(),
            token: None,
            v03_errors: false,
            cors_origins: Vec::new(),
            ecs_credentials: None,
            ecs_places: ecs::Places::default(),
        }
    }

    /// Answers each `/ecs` request for one account and region (accounts.md).
    pub fn with_ecs_places(mut self, places: ecs::Places) -> State {
        self.ecs_places = places;
        self
    }

    /// Requires an AWS Signature V4 made with one of `credentials` on `/ecs`.
    pub fn with_ecs_credentials(mut self, credentials: Option<ecs::sigv4::Credentials>) -> State {
        self.ecs_credentials = credentials.map(Arc::new);
        self
    }

    /// Sends errors on the v0.3 paths as `text/plain` with the message as
    /// the body, as v0.3 did (`server.v03_errors`).
    pub fn with_v03_errors(mut self, on: bool) -> State {
        self.v03_errors = on;
        self
    }

    /// Lets pages on `origins` use the API and the streams (CORS).
    pub fn with_cors(mut self, origins: Vec<String>) -> State {
        self.cors_origins = origins;
        self
    }

    /// Requires `Authorization: Bearer <token>` on every `/v1` path.
    pub fn with_token(mut self, token: Option<String>) -> State {
        self.token = token.map(|t| Arc::from(t.into_bytes()));
        self
    }

    /// The writer's latest view, read without a message to it; 503 while
    /// the view loads.
    fn snapshot(&self) -> Result<Snapshot, Error> {
        self.reader.snapshot().map_err(|_| Error::unavailable())
    }
}

/// Registers every route on an actix-web `App`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    fn get<F, Args>(path: &str, handler: F) -> actix_web::Resource
    where
        F: actix_web::Handler<Args>,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        web::resource(path)
            .route(web::get().to(handler.clone()))
            .route(web::head().to(handler))
            .default_service(web::to(method_not_allowed))
    }
    cfg.service(get("/v1/ping", ping))
        .service(get("/v1/clusters", clusters::list));
    for kind in Kind::ALL {
        let plural = about(kind).plural;
        cfg.service(get(
            &format!("/v1/{plural}"),
            move |req: HttpRequest, state: web::Data<State>| list(kind, req, state),
        ))
        .service(get(
            &format!("/v1/{plural}/{{rest:.*}}"),
            move |req: HttpRequest, state: web::Data<State>| describe(kind, req, state),
        ))
        .service(get(
            &format!("/v1/stream/{plural}"),
            move |req: HttpRequest, state: web::Data<State>| stream::stream(kind, req, state),
        ));
    }
    cfg.service(
        web::resource(["/ecs", "/ecs/"])
            .route(web::post().to(ecs::serve))
            .default_service(web::to(method_not_allowed)),
    );
    cfg.service(get("/", ui::to_dashboard))
        .service(get("/ui", ui::to_dashboard))
        .service(get("/ui/{file:.*}", ui::serve));
    cfg.service(get("/v1/sd/prometheus", sd::prometheus));
    cfg.service(get("/v1/openapi.json", openapi))
        .service(get("/healthz", healthz))
        .service(get("/readyz", readyz))
        .service(get("/metrics", metrics))
        .service(get("/metrics/state", state_metrics));
}

/// Builds the whole application (routes, state, JSON 404).
pub fn app(
    state: web::Data<State>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    use actix_web::middleware::from_fn;
    let cors = cors::layer(&state.cors_origins);
    App::new()
        .app_data(state)
        .configure(configure)
        .default_service(web::to(not_found))
        .wrap(from_fn(middleware::auth))
        .wrap(from_fn(middleware::v03_errors))
        .wrap(cors)
        .wrap(from_fn(middleware::limits))
}

async fn not_found() -> Result<HttpResponse, Error> {
    Err(Error::new(StatusCode::NOT_FOUND, "NotFound", "Not found"))
}

async fn method_not_allowed() -> Result<HttpResponse, Error> {
    Err(Error::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "Method not allowed",
    ))
}

fn json(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body)
}
