//! What runs around every handler, as `actix_web::middleware::from_fn`
//! functions: the request limits actix-http leaves to the application,
//! bearer-token auth on `/v1`, and v0.3's text errors.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use subtle::ConstantTimeEq as _;

use super::{Error, State};

/// The longest request target answered (`414` beyond), below the `http`
/// crate's own limit (65,534 bytes), past which actix-http answers `400`.
pub const MAX_URI: usize = 64_000;
/// The most bytes of header fields answered (`431` beyond), below
/// actix-http's own limit on a head (128 KiB), past which it answers `431`
/// itself.
pub const MAX_HEADERS: usize = 96 * 1024;

/// Answers a request whose target or header fields are over the limits
/// with a JSON error (actix-http has read it whole: the connection goes on).
pub(super) async fn limits(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    match over_limit(&req) {
        Some(error) => Ok(req.error_response(error)),
        None => Ok(next.call(req).await?.map_into_boxed_body()),
    }
}

fn over_limit(req: &ServiceRequest) -> Option<Error> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI {
        return Some(Error::new(
            StatusCode::URI_TOO_LONG,
            "UriTooLong",
            format!("URI too long: the request target exceeds {MAX_URI} bytes"),
        ));
    }
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    (fields > MAX_HEADERS).then(|| {
        Error::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "HeadersTooLarge",
            format!("Request header fields too large: at most {MAX_HEADERS} bytes"),
        )
    })
}

/// Requires `Authorization: Bearer <token>` on every `/v1` path when a token
/// is configured (`server.auth_token_file`).
pub(super) async fn auth(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let protected = req.path() == "/v1" || req.path().starts_with("/v1/");
    let token = req
        .app_data::<web::Data<State>>()
        .and_then(|s| s.token.clone());
    let denied = protected && token.is_some_and(|t| !authorized(req.headers(), &t));
    if !denied {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let mut res = req.error_response(Error::new(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "Unauthorized: a valid bearer token is required",
    ));
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    Ok(res)
}

/// Sends errors on the v0.3 paths as v0.3 did when `server.v03_errors` is on.
pub(super) async fn v03_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let plain = is_v03_path(req.path())
        && req
            .app_data::<web::Data<State>>()
            .is_some_and(|s| s.v03_errors);
    let res = next.call(req).await?.map_into_boxed_body();
    Ok(if plain { as_text_error(res) } else { res })
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
fn as_text_error(res: ServiceResponse) -> ServiceResponse {
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
    ServiceResponse::new(req, new)
}

/// Whether `headers` carry `Authorization: Bearer <token>`, compared in
/// constant time (the time taken does not depend on where a guess differs).
fn authorized(headers: &header::HeaderMap, token: &[u8]) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|given| bool::from(given.ct_eq(token)))
}
