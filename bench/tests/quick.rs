//! The benchmark's quick mode, run as a test so that it keeps working: every
//! part runs against the real service binary and real etcd, and what it
//! delivers is checked by the benchmark itself (every event applied, every
//! list complete, every change on every stream). Timings are never asserted.

use std::path::PathBuf;

const BENCH: &str = env!("CARGO_BIN_EXE_css-bench");

/// The service binary beside this benchmark's: `cargo test --workspace`
/// builds it for the service's own tests, in the same target directory.
fn service_bin() -> PathBuf {
    let bin = PathBuf::from(BENCH).with_file_name("cluster-state-service");
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (scripts/test)",
        bin.display()
    );
    bin
}

/// etcd: `ETCD_BIN` (scripts/test sets it), else `etcd` on the PATH.
fn etcd_bin() -> PathBuf {
    std::env::var_os("ETCD_BIN").map_or_else(|| PathBuf::from("etcd"), PathBuf::from)
}

#[test]
fn the_quick_benchmark_runs_every_part_and_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BENCH)
        .arg("--quick")
        .arg("--service-bin")
        .arg(service_bin())
        .arg("--etcd-bin")
        .arg(etcd_bin())
        .arg("--work-dir")
        .arg(work.path())
        .output()
        .expect("css-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "css-bench failed:\n{stdout}\n{stderr}"
    );
    // The final table has a row for every figure the issue asks for.
    let table: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ")).collect();
    for figure in [
        "ingest, embedded (2000 events)",
        "etcd alone, 1 client (2000 small txns)",
        "ingest, etcd (2000 events)",
        "etcd alone, 64 in flight (2000 small txns)",
        "ingest, etcd, as a share of etcd with 64 in flight",
        "first sweep into etcd (1000 tasks): ready after",
        "ready after restart (1000 tasks)",
        "RSS when ready (1000 tasks)",
        "describe one task: p99",
        "describe one task, 1 client alone: p99",
        "filtered list (100 tasks): p99",
        "filtered list, 1 client alone: p99",
        "full list (1000 tasks): p99",
        "paged list (limit 100), one page: p99",
        "stream delivery, 20 streams x 200/s: p99 (8000 samples)",
        "streams cut as too slow (steady part and burst), then resumed",
        "dashboard: tasks view opens (1000 tasks stored)",
        "dashboard: a filter applied",
        "RSS when ready (1000 STOPPED tasks kept)",
        "soak: RSS growth, 15 s to 40 s",
        "soak: open fds growth, 15 s to 40 s",
        "soak: stream delivery p99",
        "soak: list/describe p99",
        "soak: sweeps",
        "soak: errors",
        "accounts: ready, 16 reconcilers",
        "accounts: RSS, reconcile on / off",
        "accounts: memory per idle reconciler",
        "accounts: threads, reconcile on / off",
        "accounts: idle CPU, on / off; per reconciler",
        "disk per revision, embedded (history and state)",
        "RSS with a day of history (2000 tasks)",
        "one task's history (5 versions), p99",
        "a cluster of 1000 tasks at= 12 h back, p50",
        "all 2000 tasks at= 12 h back, slowest",
        "ingest, 7 d of history kept (4000 events)",
        "  … against 1 min kept",
        "disk per revision, etcd (4000 revisions)",
    ] {
        let row = table.iter().find(|l| l.starts_with(&format!("| {figure}")));
        let row = row.unwrap_or_else(|| panic!("no row for {figure:?} in:\n{stdout}"));
        // Each row has a measured figure with a unit.
        let measured = row.split('|').nth(2).unwrap_or("").trim();
        assert!(
            [
                "events/s", "txn/s", "%", "ms", "MiB", "times", "fds", "errors", " s", "KiB",
                "µs/s", "threads", " B", "%)"
            ]
            .iter()
            .any(|u| measured.ends_with(u)),
            "{row}"
        );
    }
}
