//! Cross-origin use of the API and the streams (`server.cors_allowed_origins`):
//! pages on the listed origins may read every `/v1` path, the streams
//! included, with `Authorization` (the dashboard's token) and
//! `Last-Event-ID`; preflights are answered without a token. A request from
//! an origin not listed is served as if it were same-origin, without CORS
//! headers, so the browser withholds the answer from that page.

use actix_cors::Cors;
use actix_web::http::{header, Method};

/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: usize = 3600;

/// Whether `origin` is `*` or `scheme://host[:port]` with no path.
pub fn valid_origin(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let host_port_ok = !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    matches!(scheme, "http" | "https") && host_port_ok
}

/// The CORS layer for `origins` (checked by `valid_origin`); with none, a
/// layer that lets every request through unchanged (same origin only).
pub fn layer(origins: &[String]) -> actix_web::middleware::Condition<Cors> {
    let mut cors = Cors::default()
        .allowed_methods([Method::GET, Method::HEAD, Method::POST])
        .allowed_headers([
            header::AUTHORIZATION,
            header::ACCEPT,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([header::CONTENT_TYPE, header::ALLOW])
        .max_age(PREFLIGHT_MAX_AGE)
        .block_on_origin_mismatch(false);
    for origin in origins {
        cors = match origin.as_str() {
            "*" => cors.allow_any_origin(),
            o => cors.allowed_origin(o),
        };
    }
    actix_web::middleware::Condition::new(!origins.is_empty(), cors)
}

#[cfg(test)]
mod tests {
    #[test]
    fn origins_are_scheme_host_and_port() {
        for ok in [
            "*",
            "http://localhost:8080",
            "https://ui.example.com",
            "http://[::1]:3000",
        ] {
            assert!(super::valid_origin(ok), "{ok}");
        }
        for bad in [
            "",
            "localhost",
            "http://",
            "ftp://x",
            "https://x/path",
            "https://x?q",
            "http://a b",
        ] {
            assert!(!super::valid_origin(bad), "{bad}");
        }
    }
}
