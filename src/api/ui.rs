//! The live dashboard (dashboard.md): `/ui/`, three files built into the
//! binary, served with a Content-Security-Policy that lets the page talk to
//! this origin only. The page holds no data and needs no token; everything
//! it shows it reads from the public API, like any other client.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// Nothing from elsewhere: scripts, styles, images and connections are this
/// origin's own.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; form-action 'none'; base-uri 'none'; \
     frame-ancestors 'none'";

fn file(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// `/` and `/ui`: to the dashboard.
pub(super) async fn to_dashboard() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/ui/"))
        .finish()
}

/// `/ui/…`: the page and its two files; anything else there is 404.
pub(super) async fn serve(req: HttpRequest) -> Result<HttpResponse, super::Error> {
    match req.match_info().query("file") {
        "" | "index.html" => Ok(file("text/html; charset=utf-8", INDEX)),
        "app.js" => Ok(file("text/javascript; charset=utf-8", SCRIPT)),
        "app.css" => Ok(file("text/css; charset=utf-8", STYLE)),
        _ => Err(super::Error::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "NotFound",
            "Not found",
        )),
    }
}
