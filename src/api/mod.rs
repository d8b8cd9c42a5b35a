//! The HTTP API (actix-web): the v1 REST endpoints of `api.md`, plus
//! `/healthz`, `/readyz` and `/metrics`.
//!
//! Handlers ask the StoreWriter for a snapshot of the view and answer from it;
//! list bodies are assembled from each entity's pre-rendered JSON. The change
//! streams (`stream`) subscribe to the StreamHub. Every error
//! is `{"code", "message"}` JSON; nothing a client sends can panic a handler.

pub mod config;
pub mod cors;
pub mod framing;
mod listing;
mod negotiate;
mod query;
pub mod server;
mod stream;

use actix_web::http::{header, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, ResponseError};
use actors::arn::{Arn, Resource};
use actors::hub::StreamHub;
use actors::metrics::Metrics;
use actors::model::{Key, Kind};
use actors::pipeline::Pipeline;
use actors::reader::Reader;
use actors::view::Snapshot;
use actors::writer::StoreWriter;
use bytes::Bytes;
use listing::Listing;
use query::{Filter, Params, Token, INSTANCE_FILTERS, TASK_FILTERS};
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use query::{INSTANCE_STATUSES, MAX_LIMIT, TASK_STATUSES};
pub use stream::Settings as StreamSettings;

/// An API error: status, CamelCase code, and a message that contains the
/// words v0.3 clients look for.
#[derive(Debug, Clone)]
pub struct Error {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Error {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Error {
        Error {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: String) -> Error {
        Error::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn unavailable() -> Error {
        Error::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "StoreUnavailable",
            "Store unavailable",
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let body = serde_json::json!({"code": self.code, "message": self.message});
        let mut r = HttpResponse::build(self.status);
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            r.insert_header((header::ALLOW, "GET, HEAD"));
        }
        r.content_type("application/json").body(body.to_string())
    }
}

/// Snapshots that issued a `nextToken`, so later pages come from the same one.
struct PageCache {
    entries: Mutex<VecDeque<(Snapshot, Instant)>>,
}

impl PageCache {
    /// Snapshots kept for paging at most, and for how long after last use.
    const CAPACITY: usize = 32;
    const TTL: Duration = Duration::from_secs(600);

    fn put(&self, snap: &Snapshot) {
        let Ok(mut e) = self.entries.lock() else {
            return;
        };
        e.retain(|(s, at)| s.revision != snap.revision && at.elapsed() < Self::TTL);
        if e.len() >= Self::CAPACITY {
            e.pop_front();
        }
        e.push_back((snap.clone(), Instant::now()));
    }

    fn get(&self, revision: u64) -> Option<Snapshot> {
        let mut e = self.entries.lock().ok()?;
        let i = e
            .iter()
            .position(|(s, at)| s.revision == revision && at.elapsed() < Self::TTL)?;
        let (snap, _) = e.remove(i)?;
        e.push_back((snap.clone(), Instant::now()));
        Some(snap)
    }
}

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
            pages: PageCache {
                entries: Mutex::new(VecDeque::new()),
            },
            token: None,
            v03_errors: false,
            cors_origins: Vec::new(),
        }
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
        .service(get("/v1/tasks", list_tasks))
        .service(get("/v1/tasks/{rest:.*}", describe_task))
        .service(get("/v1/instances", list_instances))
        .service(get("/v1/instances/{rest:.*}", describe_instance))
        .service(get("/v1/stream/tasks", stream_tasks))
        .service(get("/v1/stream/instances", stream_instances))
        .service(get("/v1/openapi.json", openapi))
        .service(get("/healthz", healthz))
        .service(get("/readyz", readyz))
        .service(get("/metrics", metrics));
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
    let token = state.token.clone();
    let v03_errors = state.v03_errors;
    let cors = cors::layer(&state.cors_origins);
    App::new()
        .app_data(state)
        .configure(configure)
        .default_service(web::to(not_found))
        .wrap_fn(move |req, srv| {
            use actix_web::dev::Service as _;
            use futures_util::future::{ready, Either};
            let protected = req.path() == "/v1" || req.path().starts_with("/v1/");
            let denied = protected
                && token
                    .as_deref()
                    .is_some_and(|t| !authorized(req.headers(), t));
            if denied {
                let mut res = req.error_response(Error::new(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "Unauthorized: a valid bearer token is required",
                ));
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                Either::Left(ready(Ok(res)))
            } else {
                Either::Right(srv.call(req))
            }
        })
        .wrap_fn(move |req, srv| {
            use actix_web::dev::Service as _;
            use futures_util::FutureExt as _;
            let plain = v03_errors && is_v03_path(req.path());
            srv.call(req)
                .map(move |res| res.map(|res| if plain { as_text_error(res) } else { res }))
        })
        .wrap(cors)
        .wrap_fn(|req, srv| {
            use actix_web::dev::Service as _;
            use futures_util::future::{ready, Either};
            use futures_util::FutureExt as _;
            match rejected(&req) {
                Some(why) => Either::Left(ready(Ok(req.error_response(why.error())))),
                None => Either::Right(
                    srv.call(req)
                        .map(|res| res.map(|res| res.map_into_boxed_body())),
                ),
            }
        })
}

/// Why the connection's framing guard replaced this request, when it did
/// (see [`framing`]).
fn rejected(req: &actix_web::dev::ServiceRequest) -> Option<framing::Rejection> {
    if req.path() != framing::REJECTED_PATH {
        return None;
    }
    req.conn_data::<framing::Verdict>()?.rejection()
}

/// The paths v0.3 served (its generated clients read their errors as text).
fn is_v03_path(path: &str) -> bool {
    matches!(
        path,
        "/v1/tasks" | "/v1/instances" | "/v1/stream/tasks" | "/v1/stream/instances"
    ) || path.starts_with("/v1/tasks/")
        || path.starts_with("/v1/instances/")
}

/// An error response as v0.3 sent it: `text/plain`, the message as the body,
/// the status and the other headers (`Allow`, `WWW-Authenticate`) kept.
fn as_text_error(res: actix_web::dev::ServiceResponse) -> actix_web::dev::ServiceResponse {
    let Some(message) = res
        .response()
        .error()
        .and_then(|e| e.as_error::<Error>())
        .map(|e| e.message.clone())
    else {
        return res;
    };
    let (req, old) = res.into_parts();
    let mut new = HttpResponse::build(old.status());
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            new.append_header((name.clone(), value.clone()));
        }
    }
    let new = new.content_type("text/plain; charset=utf-8").body(message);
    actix_web::dev::ServiceResponse::new(req, new)
}

/// Whether `headers` carry `Authorization: Bearer <token>`, compared in
/// constant time (the time taken does not depend on where a guess differs).
fn authorized(headers: &header::HeaderMap, token: &[u8]) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    let mut diff = u8::from(given.len() != token.len());
    for (i, t) in token.iter().enumerate() {
        diff |= t ^ given.get(i).copied().unwrap_or(!t);
    }
    diff == 0
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

async fn stream_tasks(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, Error> {
    stream::stream(Kind::Task, TASK_FILTERS, &req, state).await
}

async fn stream_instances(
    req: HttpRequest,
    state: web::Data<State>,
) -> Result<HttpResponse, Error> {
    stream::stream(Kind::Instance, INSTANCE_FILTERS, &req, state).await
}

fn json(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body)
}

async fn ping(req: HttpRequest) -> Result<HttpResponse, Error> {
    Params::parse(req.query_string(), &[])?;
    Ok(json(StatusCode::OK, r#"{"status":"ok"}"#.into()))
}

/// The OpenAPI document of this API (`swagger/openapi.json`).
pub const OPENAPI: &str = include_str!("../../swagger/openapi.json");

async fn openapi(req: HttpRequest) -> Result<HttpResponse, Error> {
    Params::parse(req.query_string(), &[])?;
    Ok(json(StatusCode::OK, OPENAPI.into()))
}

/// 200 while the process serves and its central actors run (a supervised
/// actor that restarts keeps its address; one whose arbiter died does not).
async fn healthz(state: web::Data<State>) -> HttpResponse {
    let stopped: Vec<&str> = [
        (state.writer.connected(), "StoreWriter"),
        (state.hub.connected(), "StreamHub"),
    ]
    .into_iter()
    .filter_map(|(up, name)| (!up).then_some(name))
    .collect();
    if stopped.is_empty() {
        json(StatusCode::OK, r#"{"status":"ok"}"#.into())
    } else {
        Error::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unhealthy",
            format!("Unhealthy: stopped actors: {}", stopped.join(", ")),
        )
        .error_response()
    }
}

async fn readyz(state: web::Data<State>) -> HttpResponse {
    let waiting = state.reader.health().waiting_for();
    if waiting.is_empty() {
        json(StatusCode::OK, r#"{"status":"ready"}"#.into())
    } else {
        let body = serde_json::json!({"status": "not ready", "waitingFor": waiting});
        json(StatusCode::SERVICE_UNAVAILABLE, body.to_string())
    }
}

async fn list_tasks(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, Error> {
    list(Kind::Task, TASK_FILTERS, &req, state).await
}

async fn list_instances(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, Error> {
    list(Kind::Instance, INSTANCE_FILTERS, &req, state).await
}

async fn list(
    kind: Kind,
    filters: &[&str],
    req: &HttpRequest,
    state: web::Data<State>,
) -> Result<HttpResponse, Error> {
    let mut allowed = filters.to_vec();
    allowed.extend(["limit", "nextToken"]);
    let params = Params::parse(req.query_string(), &allowed)?;
    let filter = Filter::parse(kind, &params)?;
    let limit = query::limit(&params)?;
    let token = params
        .get("nextToken")
        .map(|t| Token::decode(t, kind))
        .transpose()?;

    let snap = match &token {
        None => state.snapshot()?,
        Some(t) => match state.pages.get(t.revision) {
            Some(s) => s,
            None => {
                let current = state.snapshot()?;
                if current.revision != t.revision {
                    return Err(Error::bad_request(
                        "InvalidNextToken",
                        "Invalid nextToken: the listing it belongs to has expired; list again"
                            .into(),
                    ));
                }
                current
            }
        },
    };

    let mut listing = Listing::new(kind, snap, filter, token, limit, state.clone());
    let mut first = String::with_capacity(8 * 1024);
    first.push_str(r#"{"items":["#);
    listing.fill(&mut first, listing::PIECE);
    if listing.finished() {
        return Ok(json(StatusCode::OK, first));
    }
    let body = futures_util::stream::unfold(
        (Some(Bytes::from(first)), listing),
        |(first, mut listing)| async move {
            let piece = first.or_else(|| listing.next_piece())?;
            Some((Ok::<_, std::convert::Infallible>(piece), (None, listing)))
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .streaming(body))
}

async fn describe_task(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, Error> {
    describe(Kind::Task, "/v1/tasks/", &req, &state).await
}

async fn describe_instance(
    req: HttpRequest,
    state: web::Data<State>,
) -> Result<HttpResponse, Error> {
    describe(Kind::Instance, "/v1/instances/", &req, &state).await
}

fn decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// Splits the raw path after the prefix into `{cluster}` and `{arn}`.
///
/// `{cluster}` is a name or a URL-encoded cluster ARN; a raw cluster ARN (whose
/// `/` was not encoded) is accepted too. `{arn}` may be raw or encoded.
fn split_cluster_and_arn(rest: &str) -> Option<(String, String)> {
    let (first, tail) = rest.split_once('/')?;
    let first = decode(first)?;
    if first.starts_with("arn:") && first.ends_with(":cluster") {
        let (name, tail) = tail.split_once('/')?;
        return Some((format!("{first}/{}", decode(name)?), decode(tail)?));
    }
    Some((first, decode(tail)?))
}

async fn describe(
    kind: Kind,
    prefix: &str,
    req: &HttpRequest,
    state: &State,
) -> Result<HttpResponse, Error> {
    let (not_found, resource, what) = match kind {
        Kind::Task => ("Task not found", Resource::Task, "task"),
        Kind::Instance => (
            "Instance not found",
            Resource::ContainerInstance,
            "container instance",
        ),
    };
    let not_found = || {
        Error::new(
            StatusCode::NOT_FOUND,
            match kind {
                Kind::Task => "TaskNotFound",
                Kind::Instance => "InstanceNotFound",
            },
            not_found,
        )
    };
    Params::parse(req.query_string(), &[])?;
    let rest = req.uri().path().strip_prefix(prefix).unwrap_or_default();
    let Some((cluster, arn)) = split_cluster_and_arn(rest) else {
        return Err(Error::new(StatusCode::NOT_FOUND, "NotFound", "Not found"));
    };
    let cluster = query::cluster(&cluster)?;
    let parsed = Arn::parse(&arn, resource).map_err(|_| {
        Error::bad_request(
            "InvalidArn",
            format!("Invalid {what} ARN: {}", query::clip(&arn, 200)),
        )
    })?;
    let key = Key {
        cluster_arn: cluster.resolve(&parsed),
        arn: arn.clone(),
    };
    let snap = state.snapshot()?;
    let entry = snap.of(kind).get(&key).ok_or_else(not_found)?;
    let mut body = String::with_capacity(entry.entity.get().len() + 64);
    entry.write_item(false, &mut body);
    Ok(json(StatusCode::OK, body))
}

async fn metrics(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(&state.reader.health()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cluster_and_arn_in_every_spelling() {
        let arn = "arn:aws:ecs:r:1:task/c/t";
        let cl = "arn:aws:ecs:r:1:cluster/c";
        let want = Some(("c".to_owned(), arn.to_owned()));
        assert_eq!(split_cluster_and_arn(&format!("c/{arn}")), want);
        assert_eq!(
            split_cluster_and_arn("c/arn:aws:ecs:r:1:task%2Fc%2Ft"),
            want
        );
        let want = Some((cl.to_owned(), arn.to_owned()));
        assert_eq!(
            split_cluster_and_arn(&format!("arn:aws:ecs:r:1:cluster%2Fc/{arn}")),
            want
        );
        assert_eq!(split_cluster_and_arn(&format!("{cl}/{arn}")), want);
        assert_eq!(split_cluster_and_arn("c"), None);
        assert_eq!(split_cluster_and_arn("c/%ff"), None);
    }
}
