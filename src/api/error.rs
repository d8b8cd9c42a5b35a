//! The API's error answer: a status and a `{"code", "message"}` JSON body.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use std::fmt;

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

    pub(super) fn unavailable() -> Error {
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
