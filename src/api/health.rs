//! `/v1/ping`, the OpenAPI document, `/healthz`, `/readyz` and `/metrics`.

use super::query::Params;
use super::{json, Error, State};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

pub(super) async fn ping(req: HttpRequest) -> Result<HttpResponse, Error> {
    Params::parse(req.query_string(), &[])?;
    Ok(json(StatusCode::OK, r#"{"status":"ok"}"#.into()))
}

/// The OpenAPI document of this API (`swagger/openapi.json`).
pub const OPENAPI: &str = include_str!("../../swagger/openapi.json");

pub(super) async fn openapi(req: HttpRequest) -> Result<HttpResponse, Error> {
    Params::parse(req.query_string(), &[])?;
    Ok(json(StatusCode::OK, OPENAPI.into()))
}

/// 200 while the process serves and its central actors run (a supervised
/// actor that restarts keeps its address; one whose arbiter died does not).
pub(super) async fn healthz(state: web::Data<State>) -> HttpResponse {
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

/// 200 once the service serves its state; `source` shows the event source
/// (`none`, `up`, `down`) without holding readiness back.
pub(super) async fn readyz(state: web::Data<State>) -> HttpResponse {
    let health = state.reader.health();
    let waiting = health.waiting_for();
    let source = health.source.as_str();
    if waiting.is_empty() {
        let body = serde_json::json!({"status": "ready", "source": source});
        json(StatusCode::OK, body.to_string())
    } else {
        let body =
            serde_json::json!({"status": "not ready", "waitingFor": waiting, "source": source});
        json(StatusCode::SERVICE_UNAVAILABLE, body.to_string())
    }
}

/// `/metrics/state`: the clusters' state for Prometheus (issue 20).
pub(super) async fn state_metrics(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.cluster_state.render())
}

pub(super) async fn metrics(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(
            state
                .metrics
                .render(&state.reader.health(), |c| state.reader.leads(c)),
        )
}
