//! The real binary: command line, exit codes, and a restart on the same data
//! directory after a crash.

use crate::servers::succeeded;
use crate::support::*;
use css_bench::ports::free_addr;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_cluster-state-service");

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .env("CSS_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts")
}

#[test]
fn version_and_help() {
    let out = succeeded(Command::new(BIN).arg("--version"));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("cluster-state-service 0."));
    let out = succeeded(Command::new(BIN).arg("--help"));
    let help = String::from_utf8_lossy(&out.stdout);
    let flags = [
        "--bind",
        "--etcd-endpoint",
        "--queue",
        "--config",
        "--data-dir",
        "--simulate",
        "--replay",
        "--log-level",
        "--log-file",
    ];
    assert_has_all("help", &help, &flags);
}

#[test]
fn bad_configuration_exits_64_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = "[server]\nbind = 3\n[store]\ntombstone_retention = \"forever\"\nfoo = 1\n";
    let cfg = config_file(dir.path(), bad);
    let out = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "--no-such-flag"])
        .env("CSS_RECONCILE__INTERVAL", "often")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    let named = [
        "--no-such-flag",
        "server.bind",
        "store.tombstone_retention",
        "store.foo",
        "reconcile.interval",
    ];
    assert_has_all("stderr", &err, &named);
    let out = Command::new(BIN)
        .env("CSS_LOG_LEVEL", "loud")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

async fn wait_up(addr: SocketAddr) {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && get(addr, "/readyz").await.status == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("binary never became ready on {addr}");
}

/// Polls the task list until `done` holds of (count, revision); returns the last.
async fn list_until(addr: SocketAddr, done: impl Fn((usize, u64)) -> bool) -> (usize, u64) {
    let mut seen = (0, 0);
    for _ in 0..500 {
        seen = list(addr).await;
        if done(seen) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

async fn list(addr: SocketAddr) -> (usize, u64) {
    let v = get(addr, "/v1/tasks").await.json();
    let n = v["items"].as_array().unwrap().len();
    (
        n,
        v["metadata"]["entityVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
    )
}

fn write_events(path: &Path, n: usize, version: u64) {
    let lines: Vec<String> = (0..n)
        .map(|i| task_event("restart", &format!("t{i}"), version, "RUNNING"))
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

#[actix_web::test]
async fn a_restart_on_the_same_data_dir_keeps_everything_and_revisions_grow() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let first = dir.path().join("first.ndjson");
    let second = dir.path().join("second.ndjson");
    write_events(&first, 300, 1);
    write_events(&second, 40, 2);

    // The binary on `data`, replaying `events` if given, once ready.
    let run = |events: Option<&Path>| {
        let addr = free_addr();
        let mut args = vec![
            "--bind".to_owned(),
            addr.to_string(),
            "--data-dir".into(),
            data.into(),
        ];
        if let Some(e) = events {
            args.extend(["--replay".into(), e.display().to_string()]);
        }
        let child = spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
        async move {
            wait_up(addr).await;
            (child, addr)
        }
    };
    let stop = |mut child: Child| {
        child.kill().unwrap();
        child.wait().unwrap();
    };

    // Run 1: replay 300 events, then crash (SIGKILL).
    let (child, addr) = run(Some(&first)).await;
    assert_eq!(list_until(addr, |s| s.0 == 300).await, (300, 300));
    stop(child);

    // Run 2: nothing feeding it; everything is still there at the same revision.
    let (child, addr) = run(None).await;
    assert_eq!(list(addr).await, (300, 300));
    stop(child);

    // Run 3: 40 newer events; the revision keeps growing from where it was.
    let (child, addr) = run(Some(&second)).await;
    assert_eq!(list_until(addr, |s| s.1 == 340).await, (300, 340));
    let v = get(addr, &task_path("restart", "t0")).await.json();
    assert_eq!(v["entity"]["version"], 2);
    let rev: u64 = v["metadata"]["entityVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rev > 300, "a write after restart got revision {rev}");
    stop(child);
}

#[actix_web::test]
async fn a_second_process_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let a = free_addr();
    let mut first = spawn(&["--bind", &a.to_string(), "--data-dir", data]);
    // Serving: it holds the data directory's lock.
    wait_up(a).await;
    let out = Command::new(BIN)
        .args(["--bind", &free_addr().to_string(), "--data-dir", data])
        .output()
        .unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked"), "{err}");
}

#[test]
fn logs_go_to_the_log_file_at_the_chosen_level() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("css.log");
    let a = free_addr();
    let mut child = Command::new(BIN)
        .args([
            "--bind",
            &a.to_string(),
            "--data-dir",
            dir.path().join("d").to_str().unwrap(),
        ])
        .env("CSS_LOG_FILE", &log)
        .env("CSS_LOG_LEVEL", "debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("serving") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        text.contains("serving") && text.contains("no event source"),
        "{text}"
    );
    assert!(
        out.stderr.is_empty(),
        "nothing on stderr when logging to a file"
    );
}

/// The log lines of the binary run with `level` against an SQS endpoint
/// that refuses connections, once `enough` holds for them (or 30 s passed).
fn log_against_a_refused_sqs(level: &str, enough: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("css.log");
    let refused = free_addr();
    let mut child = Command::new(BIN)
        .args(["--bind", &free_addr().to_string(), "--queue", "events"])
        .args(["--data-dir", dir.path().join("d").to_str().unwrap()])
        .env("CSS_LOG_FILE", &log)
        .env("CSS_LOG_LEVEL", level)
        .env("CSS_LOG__FORMAT", "json")
        .env("AWS_ENDPOINT_URL", format!("http://{refused}"))
        .env("AWS_REGION", "us-west-2")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for _ in 0..600 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        lines = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if enough(&lines) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    lines
}

#[test]
fn library_logs_reach_the_service_log() {
    let from_sdk = |l: &Value| {
        l["library"]
            .as_str()
            .is_some_and(|t| t.starts_with("aws_smithy") || t.starts_with("aws_sdk"))
    };
    // With log.level = "debug", the SDK's own line about the failed call
    // is in the service's log, tagged with its target.
    let sdk_error = |ls: &[Value]| {
        ls.iter().any(|l| {
            from_sdk(l)
                && l["msg"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("encountered orchestrator error"))
        })
    };
    let lines = log_against_a_refused_sqs("debug", sdk_error);
    assert!(sdk_error(&lines), "no SDK error line in {lines:#?}");
    // At the default level, the service logs the failure itself, and the
    // libraries' debug lines stay out.
    let failed = |l: &Value| l["library"].is_null() && l["level"] == "WARN";
    let lines = log_against_a_refused_sqs("info", |ls| ls.iter().any(failed));
    assert!(lines.iter().any(failed), "{lines:#?}");
    assert!(
        !lines
            .iter()
            .any(|l| !l["library"].is_null() && l["level"] == "DEBG"),
        "{lines:#?}"
    );
}

#[actix_web::test]
async fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("big.ndjson");
    // 2,000 tasks of 8 KB each: a 16 MB list, far more than socket buffers hold.
    let lines: Vec<String> = (0..2000)
        .map(|i| {
            let e = task_event("big", &format!("t{i:04}"), 1, "RUNNING");
            let mut v: serde_json::Value = serde_json::from_str(&e).unwrap();
            v["detail"]["stoppedReason"] = "x".repeat(8000).into();
            v.to_string()
        })
        .collect();
    std::fs::write(&events, lines.join("\n")).unwrap();
    let data = dir.path().join("data");
    let mut p = Proc::spawn(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--replay",
            events.to_str().unwrap(),
        ],
        &[],
    );
    p.wait_ready(Duration::from_secs(20)).await;
    let stored = eventually(Duration::from_secs(60), || async {
        tasks_of(p.addr).await.is_some_and(|(t, _)| t.len() == 2000)
    })
    .await;
    assert!(stored, "the replay was not stored");

    // A client that asks for the whole list and does not read it: the
    // response stays in flight, and a graceful stop waits for it.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stuck = sock.connect(p.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    stuck
        .write_all(b"GET /v1/tasks HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    p.terminate();
    let first = p.wait_exit(Duration::from_secs(1)).await;
    assert!(
        first.is_none(),
        "the first signal stops gracefully: {first:?}"
    );
    p.terminate();
    let second = p
        .wait_exit(Duration::from_secs(2))
        .await
        .expect("a second signal exits at once");
    assert_eq!(second.code(), Some(130), "{second}");
    drop(stuck);
}
