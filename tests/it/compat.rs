//! What clients written elsewhere need: the v0.3 generated client's content
//! types (streams as `application/octet-stream`, errors as `text/plain` with
//! `server.v03_errors`) checked against the original v0.3 swagger document,
//! content negotiation of the streams, HEAD on every GET path, CORS, and
//! the request limits (JSON errors below actix-http's own, its own answers
//! past them) and pipelining.

use crate::servers::venv_python;
use crate::support::*;
use serde_json::{json, Value};
use std::time::Duration;

const CLUSTER: &str = "arn:aws:ecs:us-west-2:111122223333:cluster/web";
const INSTANCE: &str = "arn:aws:ecs:us-west-2:111122223333:container-instance/web/i1";

/// A task on an EC2 instance, with a container and an override: the shape
/// the v0.3 document describes in full.
fn ec2_task(id: &str, version: u64) -> String {
    let mut ev: Value = serde_json::from_str(&task_event("web", id, version, "RUNNING")).unwrap();
    let d = &mut ev["detail"];
    d["containerInstanceArn"] = json!(INSTANCE);
    d["containers"] = json!([{
        "containerArn": format!("arn:aws:ecs:us-west-2:111122223333:container/web/{id}/c"),
        "name": "app", "lastStatus": "RUNNING", "exitCode": 0,
        "networkBindings": [{"bindIP": "0.0.0.0", "containerPort": 80, "hostPort": 32768, "protocol": "tcp"}]
    }]);
    d["overrides"] = json!({"containerOverrides": [{"name": "app", "command": ["run"],
        "environment": [{"name": "A", "value": "1"}]}]});
    ev.to_string()
}

fn instance() -> String {
    json!({
        "version": "0", "id": "ev-i1", "detail-type": "ECS Container Instance State Change",
        "source": "aws.ecs", "account": "111122223333", "region": "us-west-2",
        "time": "2026-11-20T10:01:02Z",
        "detail": {
            "clusterArn": CLUSTER, "containerInstanceArn": INSTANCE, "ec2InstanceId": "i-0abc",
            "status": "ACTIVE", "agentConnected": true, "version": 3,
            "attributes": [{"name": "ecs.os-type", "value": "linux"}],
            "registeredResources": [{"name": "CPU", "type": "INTEGER", "integerValue": 2048}],
            "remainingResources": [{"name": "CPU", "type": "INTEGER", "integerValue": 1024}],
            "versionInfo": {"agentVersion": "1.80.0", "dockerVersion": "25.0"},
            "updatedAt": "2026-11-20T10:01:00Z"
        }
    })
    .to_string()
}

async fn populated(v03_errors: bool) -> TestService {
    let t = start_with(css::config::Feed::None, |s| {
        s.server.v03_errors = v03_errors
    })
    .await;
    t.inject(&[ec2_task("a", 1), ec2_task("b", 1), instance()])
        .await;
    t
}

/// Records one response as a v0.3 sample.
async fn sample(t: &TestService, out: &mut Vec<Value>, operation: &str, path: &str) {
    let r = t.get(path).await;
    out.push(json!({
        "operation": operation, "status": r.status, "content_type": r.header("content-type"),
        "body": String::from_utf8_lossy(&r.body),
    }));
}

/// Records the first `n` lines of a stream read as a v0.3 client reads it.
async fn sample_stream(
    t: &TestService,
    out: &mut Vec<Value>,
    operation: &str,
    path: &str,
    n: usize,
) {
    let octets = "Accept: application/octet-stream\r\n";
    let (c, lines) = StreamClient::first_lines(t.addr(), path, octets, n).await;
    out.push(json!({
        "operation": operation, "status": c.status, "content_type": c.header("content-type"),
        "lines": lines,
    }));
}

/// Every v0.3 operation, success and error, as v0.3 clients call it.
async fn v03_samples(t: &TestService) -> Vec<Value> {
    let task = "arn:aws:ecs:us-west-2:111122223333:task/web/a";
    let mut s = Vec::new();
    sample(t, &mut s, "ListTasks", "/v1/tasks").await;
    sample(
        t,
        &mut s,
        "ListTasks",
        "/v1/tasks?status=running&cluster=web",
    )
    .await;
    sample(t, &mut s, "ListTasks", "/v1/tasks?status=bogus").await;
    sample(t, &mut s, "ListTasks", "/v1/tasks?colour=red").await;
    sample(t, &mut s, "GetTask", &format!("/v1/tasks/web/{task}")).await;
    sample(t, &mut s, "GetTask", &format!("/v1/tasks/web/{task}x")).await;
    sample(t, &mut s, "ListInstances", "/v1/instances").await;
    sample(t, &mut s, "ListInstances", "/v1/instances?status=nope").await;
    sample(
        t,
        &mut s,
        "GetInstance",
        &format!("/v1/instances/web/{INSTANCE}"),
    )
    .await;
    sample(
        t,
        &mut s,
        "GetInstance",
        &format!("/v1/instances/other/{INSTANCE}"),
    )
    .await;
    sample_stream(
        t,
        &mut s,
        "StreamTasks",
        "/v1/stream/tasks?entityVersion=1",
        2,
    )
    .await;
    sample_stream(
        t,
        &mut s,
        "StreamInstances",
        "/v1/stream/instances?entityVersion=1",
        1,
    )
    .await;
    s
}

fn check_v03(samples: &[Value], expect: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("samples.json");
    std::fs::write(&file, serde_json::to_vec_pretty(samples).unwrap()).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(venv_python())
        .arg(format!("{root}/scripts/check-v03.py"))
        .arg(format!("{root}/tests/compat/v03-swagger.json"))
        .arg(&file)
        .args(["--expect", expect])
        .output()
        .expect("the checker runs");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "v0.3 swagger ({expect}):\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report
}

/// A populated service (v0.3 errors or not) whose answers to all 12 v0.3
/// operations the v0.3 swagger accepts (`expect`: which of them it checks).
async fn populated_and_checked(v03_errors: bool, expect: &str) -> TestService {
    let t = populated(v03_errors).await;
    let report = check_v03(&v03_samples(&t).await, expect);
    assert!(report.contains("12 of 12"), "{report}");
    t
}

#[actix_web::test]
async fn with_v03_errors_every_answer_reads_as_the_v03_swagger_declares() {
    let t = populated_and_checked(true, "all").await;
    // The typed errors a v0.3 client matches on, word for word.
    let r = t.get(&task_path("web", "zz")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.body, b"Task not found");
    let r = t.get("/v1/instances?status=nope").await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).starts_with("Invalid status"));
    let r = request(t.addr(), "POST", "/v1/tasks").await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    assert_eq!(r.body, b"Method not allowed");
    // Paths v0.3 did not have keep JSON errors.
    let r = t.get("/v1/ping?x=1").await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["code"], "UnsupportedFilter");
    // And a stream refused before it starts is text too.
    let r = t.get("/v1/stream/tasks?entityVersion=abc").await;
    assert_eq!(
        (r.status, r.header("content-type")),
        (400, Some("text/plain; charset=utf-8"))
    );
}

#[actix_web::test]
async fn by_default_successes_read_as_v03_and_errors_are_json_objects() {
    let t = populated_and_checked(false, "success-only").await;
    let r = t.get(&task_path("web", "zz")).await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!({"code": "TaskNotFound", "message": "Task not found"})
    );
}

/// The stream's body and content type under `accept` (header lines).
async fn stream_as(t: &TestService, accept: &str, lines: usize) -> (String, String) {
    let mut c = StreamClient::open(t.addr(), "/v1/stream/tasks?entityVersion=1", accept).await;
    assert_eq!(c.status, 200, "{accept}");
    let sep: &[u8] = if c.header("content-type") == Some("text/event-stream") {
        b"\n\n"
    } else {
        b"\n"
    };
    let mut body = String::new();
    for _ in 0..lines {
        let rec = c
            .next_record(sep, Duration::from_secs(5))
            .await
            .expect("a record");
        body.push_str(&rec);
        body.push_str(std::str::from_utf8(sep).unwrap());
    }
    (
        c.header("content-type").unwrap_or_default().to_owned(),
        body,
    )
}

#[actix_web::test]
async fn streams_are_sent_in_the_format_the_client_accepts() {
    let t = populated(false).await;
    let (ct, ndjson) = stream_as(&t, "", 2).await;
    assert_eq!(ct, "application/x-ndjson");
    let (ct, octets) = stream_as(&t, "Accept: application/octet-stream\r\n", 2).await;
    assert_eq!(ct, "application/octet-stream");
    assert_eq!(octets, ndjson, "the same bytes under v0.3's content type");
    for (accept, want) in [
        ("Accept: */*\r\n", "application/x-ndjson"),
        ("Accept: application/json\r\n", "application/x-ndjson"),
        ("Accept: Text/Event-Stream\r\n", "text/event-stream"),
        ("Accept: text/event-stream;q=0\r\n", "application/x-ndjson"),
        (
            "Accept: text/event-stream;q=0, */*;q=0.5\r\n",
            "application/x-ndjson",
        ),
        ("Accept: text/html, text/*;q=0.3\r\n", "text/event-stream"),
        (
            "Accept: text/event-stream;q=0.2, application/octet-stream;q=0.9\r\n",
            "application/octet-stream",
        ),
        (
            "Accept: application/x-ndjson;q=0.1\r\nAccept: text/event-stream\r\n",
            "text/event-stream",
        ),
    ] {
        let (ct, body) = stream_as(&t, accept, 1).await;
        assert_eq!(ct, want, "{accept:?}");
        if want == "text/event-stream" {
            assert!(body.starts_with("id: "), "{body}");
        } else {
            assert_eq!(body, ndjson[..ndjson.find('\n').unwrap() + 1], "{accept:?}");
        }
    }
}

#[actix_web::test]
async fn every_get_path_answers_head_with_the_same_headers_and_no_body() {
    let t = populated(false).await;
    let task = "arn:aws:ecs:us-west-2:111122223333:task/web/a";
    for path in [
        "/v1/ping".to_owned(),
        "/v1/tasks".into(),
        "/v1/tasks?limit=1".into(),
        "/v1/tasks?status=bogus".into(),
        format!("/v1/tasks/web/{task}"),
        format!("/v1/tasks/web/{task}x"),
        "/v1/instances".into(),
        format!("/v1/instances/web/{INSTANCE}"),
        "/v1/stream/tasks".into(),
        "/v1/stream/instances?snapshot=true".into(),
        "/v1/stream/tasks?entityVersion=99999".into(),
        "/v1/openapi.json".into(),
        "/healthz".into(),
        "/readyz".into(),
        "/metrics".into(),
        "/nowhere".into(),
    ] {
        let head = request(t.addr(), "HEAD", &path).await;
        assert!(head.body.is_empty(), "HEAD {path} sent a body");
        let streams_before = t.metric("css_streams_open").await;
        let get = if path.starts_with("/v1/stream/") && head.status == 200 {
            let c = StreamClient::open(t.addr(), &path, "").await;
            Response {
                status: c.status,
                headers: c.headers.clone(),
                body: Vec::new(),
            }
        } else {
            t.get(&path).await
        };
        assert_eq!(head.status, get.status, "HEAD {path}");
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "HEAD {path}"
        );
        if let Some(len) = get.header("content-length") {
            assert_eq!(head.header("content-length"), Some(len), "HEAD {path}");
        }
        if path.starts_with("/v1/stream/") {
            // A HEAD of a stream holds no stream open.
            assert!(t.metric("css_streams_open").await <= streams_before + 1.0);
        }
    }
    for path in ["/v1/tasks", "/healthz", "/metrics", "/v1/stream/tasks"] {
        let r = request(t.addr(), "DELETE", path).await;
        assert_eq!(
            (r.status, r.header("allow")),
            (405, Some("GET, HEAD")),
            "{path}"
        );
    }
}

/// The responses in `raw`, in order (status and body of each).
fn responses(mut raw: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let head = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a head")
            + 4;
        let r = parse(&raw[..head]);
        let len: usize = r
            .header("content-length")
            .expect("a length")
            .parse()
            .unwrap();
        out.push(parse(&raw[..head + len]));
        raw = &raw[head + len..];
    }
    out
}

fn long_target(n: usize) -> String {
    format!(
        "GET /v1/tasks/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(n)
    )
}

#[actix_web::test]
async fn requests_over_the_limits_get_json_errors() {
    let t = start().await;
    let get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let big_field = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "b".repeat(100_000)
    );
    let cases = [
        (long_target(64_500), 414, "UriTooLong", "URI too long"),
        (
            big_field,
            431,
            "HeadersTooLarge",
            "Request header fields too large",
        ),
        (long_target(63_000), 404, "NotFound", "Not found"),
    ];
    for (req, status, code, message) in cases {
        // Between two good requests on one connection: all three are answered.
        let close = get.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
        let out = raw(t.addr(), format!("{get}{req}{close}").as_bytes()).await;
        let all = responses(&out);
        let statuses: Vec<u16> = all.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, status, 200], "{code}");
        let r = &all[1];
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.json()["code"], code);
        assert!(
            r.json()["message"].as_str().unwrap().starts_with(message),
            "{code}"
        );
    }
}

#[actix_web::test]
async fn heads_actix_http_cannot_read_get_its_own_answer_and_close() {
    let t = start().await;
    let get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases = [
        // Past the `http` crate's URI limit (65,534 bytes).
        (long_target(100_000), 400),
        // Past actix-http's buffer for a head (128 KiB).
        (long_target(200_000), 431),
        (
            "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n".into(),
            400,
        ),
    ];
    for (req, status) in cases {
        // Behind a good request, with another pipelined after it: the one
        // after is not answered, and the connection ends.
        let out = raw(t.addr(), format!("{get}{req}{get}").as_bytes()).await;
        let all = responses(&out);
        let statuses: Vec<u16> = all.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, status], "{}", String::from_utf8_lossy(&out));
        assert!(
            all[1].body.is_empty(),
            "actix-http's own answer has no body"
        );
    }
}

#[actix_web::test]
async fn pipelined_requests_are_answered_in_order() {
    let t = start().await;
    let ping = |extra: &str, version: &str| {
        format!("GET /v1/ping HTTP/{version}\r\nHost: x\r\n{extra}\r\n")
    };
    let close = ping("Connection: close\r\n", "1.1");
    let bad = "GET /v1/tasks?limit=0 HTTP/1.1\r\nHost: x\r\n\r\n";
    for (sent, answered) in [
        (
            format!("{}{}{close}", ping("", "1.1"), ping("", "1.1")),
            vec![200, 200, 200],
        ),
        (
            format!("{}{bad}{close}", ping("", "1.1")),
            vec![200, 400, 200],
        ),
        (
            format!("{}{close}", ping("Connection: keep-alive\r\n", "1.0")),
            vec![200, 200],
        ),
        (
            format!("POST /v1/ping HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nGET{close}"),
            vec![405, 200],
        ),
    ] {
        // `raw` reads to the end: the server closes after `close`.
        let out = raw(t.addr(), sent.as_bytes()).await;
        let all = responses(&out);
        let statuses: Vec<u16> = all.iter().map(|r| r.status).collect();
        assert_eq!(statuses, answered, "{sent:?}");
        assert_eq!(all.last().unwrap().header("connection"), Some("close"));
    }
}

/// A raw request with `headers` (lines ending in `\r\n`).
async fn with_headers(t: &TestService, method: &str, path: &str, headers: &str) -> Response {
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{headers}\r\n");
    parse(&raw(t.addr(), req.as_bytes()).await)
}

#[actix_web::test]
async fn pages_on_allowed_origins_may_use_the_api_and_the_streams() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = token_file(dir.path(), "s3cret");
    let t = start_with(css::config::Feed::None, |s| {
        s.server.cors_allowed_origins = vec!["http://ui.example:8080".into()];
        s.server.auth_token_file = token_file.clone();
    })
    .await;
    let ui = "Origin: http://ui.example:8080\r\n";
    // The preflight of a request carrying the token is answered without it.
    let pre = with_headers(
        &t,
        "OPTIONS",
        "/v1/stream/tasks",
        &format!("{ui}Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: authorization, last-event-id\r\n"),
    )
    .await;
    assert_eq!(pre.status, 200, "{pre:?}");
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("http://ui.example:8080")
    );
    let allowed = pre
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("last-event-id"),
        "{allowed}"
    );
    assert!(pre
        .header("access-control-allow-methods")
        .unwrap()
        .contains("GET"));
    // The request itself, and a stream, carry the origin back.
    let auth = "Authorization: Bearer s3cret\r\n";
    let r = with_headers(&t, "GET", "/v1/tasks", &format!("{ui}{auth}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://ui.example:8080")
    );
    let s = StreamClient::open(t.addr(), "/v1/stream/tasks", &format!("{ui}{auth}")).await;
    assert_eq!(s.status, 200);
    assert_eq!(
        s.header("access-control-allow-origin"),
        Some("http://ui.example:8080")
    );
    // An error is readable by the page too (it can show why).
    let r = with_headers(&t, "GET", "/v1/tasks", ui).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://ui.example:8080")
    );
    // Another origin gets no CORS headers: its page cannot read the answer.
    let r = with_headers(
        &t,
        "GET",
        "/v1/tasks",
        &format!("Origin: http://evil.example\r\n{auth}"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);

    // Without the setting: same origin only, and OPTIONS is not a method here.
    let plain = start().await;
    let r = with_headers(&plain, "GET", "/v1/tasks", ui).await;
    assert_eq!(
        (r.status, r.header("access-control-allow-origin")),
        (200, None)
    );
    let r = with_headers(
        &plain,
        "OPTIONS",
        "/v1/tasks",
        &format!("{ui}Access-Control-Request-Method: GET\r\n"),
    )
    .await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    assert_eq!(r.json()["code"], "MethodNotAllowed");
}

#[test]
fn project_copy_matches_the_shared_v03_swagger() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(shared) = shared_copy("compat/v03-swagger.json") else {
        return;
    };
    assert_eq!(
        std::fs::read(root.join("tests/compat/v03-swagger.json")).unwrap(),
        std::fs::read(shared).unwrap(),
        "tests/compat/v03-swagger.json differs from ../shared/compat"
    );
}
