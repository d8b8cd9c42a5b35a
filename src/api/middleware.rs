//! What runs around every handler: the framing guard's answers, bearer-token
//! auth on `/v1`, and v0.3's text errors.

use super::{framing, Error};
use actix_web::http::header;
use actix_web::HttpResponse;

/// Why the connection's framing guard replaced this request, when it did
/// (see [`framing`]).
pub(super) fn rejected(req: &actix_web::dev::ServiceRequest) -> Option<framing::Rejection> {
    if req.path() != framing::REJECTED_PATH {
        return None;
    }
    req.conn_data::<framing::Verdict>()?.rejection()
}

/// The paths v0.3 served (its generated clients read their errors as text).
pub(super) fn is_v03_path(path: &str) -> bool {
    matches!(
        path,
        "/v1/tasks" | "/v1/instances" | "/v1/stream/tasks" | "/v1/stream/instances"
    ) || path.starts_with("/v1/tasks/")
        || path.starts_with("/v1/instances/")
}

/// An error response as v0.3 sent it: `text/plain`, the message as the body,
/// the status and the other headers (`Allow`, `WWW-Authenticate`) kept.
pub(super) fn as_text_error(
    res: actix_web::dev::ServiceResponse,
) -> actix_web::dev::ServiceResponse {
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
pub(super) fn authorized(headers: &header::HeaderMap, token: &[u8]) -> bool {
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
