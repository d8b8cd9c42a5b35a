//! Serving securely: a bearer token on every `/v1` path (health stays open),
//! and HTTPS with a certificate the test makes.

use crate::servers::make_certs;
use crate::support::*;
use css::config::Feed;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get_with(t: &TestService, path: &str, auth: &str) -> Response {
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{auth}Connection: close\r\n\r\n");
    parse(&raw(t.addr(), req.as_bytes()).await)
}

#[actix_web::test]
async fn a_token_guards_every_v1_path_but_not_health() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = token_file(dir.path(), "s3cret-token-42");
    let t = start_with(Feed::None, |s| s.server.auth_token_file = token_file).await;
    t.inject(&[task_event("c", "a", 1, "RUNNING")]).await;
    let good = "Authorization: Bearer s3cret-token-42\r\n";
    for path in [
        "/v1/tasks",
        "/v1/instances",
        "/v1/ping",
        "/v1/stream/tasks",
        "/v1/nope",
    ] {
        for auth in [
            "",
            "Authorization: Bearer s3cret-token-43\r\n",
            "Authorization: Bearer s3cret-token-4\r\n",
            "Authorization: Bearer s3cret-token-420\r\n",
            "Authorization: Basic czNjcmV0LXRva2VuLTQy\r\n",
            "Authorization: bearer\r\n",
        ] {
            let r = get_with(&t, path, auth).await;
            assert_eq!(r.status, 401, "{path} with {auth:?}");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
            assert_eq!(r.json()["code"], "Unauthorized");
        }
    }
    let r = get_with(&t, "/v1/tasks", good).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    let c = StreamClient::open(t.addr(), "/v1/stream/tasks", good).await;
    assert_eq!(c.status, 200);
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(t.get(open).await.status, 200, "{open} stays open");
    }
}

#[actix_web::test]
async fn https_serves_with_a_test_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path());
    let mut s = settings(dir.path());
    s.server.tls_cert_file = cert;
    s.server.tls_key_file = key;
    let svc = css::service::Service::start(&s, Feed::None, css::logging::discard())
        .await
        .expect("starts with TLS");

    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for c in rustls_pki_types::CertificateDer::pem_file_iter(&ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::IpAddress(svc.addr.ip().into());
    let https_get = |path: String| {
        let (connector, name) = (connector.clone(), name.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(svc.addr).await.unwrap();
            let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            tls.write_all(req.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
            parse(&out)
        }
    };
    let ready = eventually(Duration::from_secs(10), || async {
        https_get("/readyz".into()).await.status == 200
    })
    .await;
    assert!(ready);
    let r = https_get("/v1/ping".into()).await;
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("ok")));
    // The request limits hold behind TLS too.
    let r = https_get(format!("/v1/tasks/{}", "a".repeat(64_500))).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (414, Some("UriTooLong"))
    );
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let plain = raw(svc.addr, b"GET /v1/ping HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        !plain.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&plain)
    );
}

#[test]
fn security_settings_are_checked_at_start() {
    let env = HashMap::new();
    let args = |a: &[&str]| -> Vec<String> { a.iter().map(|s| s.to_string()).collect() };
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        "[server]\ntls_cert_file = \"/nonexistent/cert.pem\"\nauth_token_file = \"/nonexistent/token\"\n",
    );
    let Err(problems) = css::config::load(&args(&["--config", config.to_str().unwrap()]), &env)
    else {
        panic!("a bad security configuration was accepted")
    };
    let problems = problems.to_string();
    for expected in [
        "server.tls_cert_file and server.tls_key_file go together",
        "server.tls_cert_file: cannot read /nonexistent/cert.pem",
        "server.auth_token_file: cannot read /nonexistent/token",
    ] {
        assert!(problems.contains(expected), "{expected} in {problems}");
    }
}
