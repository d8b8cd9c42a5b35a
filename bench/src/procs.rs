//! The processes the benchmark measures: the service binary and etcd, each on
//! free loopback ports, stopped when dropped.

use crate::http::Conn;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use css_bench::ports::free_addr;

/// A running service process.
pub struct Service {
    pub addr: SocketAddr,
    child: Child,
}

impl Service {
    /// Starts `bin` with `args`; its log (warnings and up) goes to `log`.
    pub fn spawn(bin: &Path, args: &[String], log: &Path) -> Service {
        let addr = free_addr();
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new(bin)
            .args(["--bind", &addr.to_string(), "--log-level", "warn"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Service { addr, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for `/readyz` to answer 200; the time it took from `since`.
    pub async fn wait_ready(&mut self, since: Instant, within: Duration) -> Duration {
        let deadline = since + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the service exited before it was ready ({status})");
            }
            if let Ok(mut c) = Conn::connect(self.addr).await {
                if let Ok(r) = c.get("/readyz", false).await {
                    if r.status == 200 {
                        return since.elapsed();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the service was not ready within {within:?}");
    }

    /// The events with an outcome so far, and how many of them were applied
    /// (`css_events_total`).
    pub async fn events_done(&self) -> (u64, u64) {
        let Ok(mut c) = Conn::connect(self.addr).await else {
            return (0, 0);
        };
        let Ok(r) = c.get("/metrics", true).await else {
            return (0, 0);
        };
        let (mut done, mut applied) = (0, 0);
        for l in String::from_utf8_lossy(&r.body).lines() {
            let Some(rest) = l.strip_prefix("css_events_total{outcome=\"") else {
                continue;
            };
            let Some((outcome, value)) = rest.split_once("\"} ") else {
                continue;
            };
            let n = value.parse::<f64>().unwrap_or(0.0) as u64;
            match outcome {
                "received" => {}
                "applied" => {
                    applied = n;
                    done += n;
                }
                _ => done += n,
            }
        }
        (done, applied)
    }

    /// (resident, peak resident) memory in bytes, from `/proc`.
    pub fn memory(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// How it exited, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, and waits for it to exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An etcd server of the benchmark's own.
pub struct Etcd {
    pub endpoint: String,
    child: Child,
}

impl Etcd {
    pub fn start(bin: &Path, dir: &Path) -> Etcd {
        let client = format!("http://{}", free_addr());
        let peer = format!("http://{}", free_addr());
        let child = Command::new(bin)
            .args(["--name", "bench", "--data-dir"])
            .arg(dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("bench={peer}")])
            .args([
                "--quota-backend-bytes",
                "8589934592",
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start etcd ({}): {e}; install it (scripts/setup) or pass --etcd-bin",
                    bin.display()
                )
            });
        let endpoint = client.trim_start_matches("http://").to_owned();
        let addr: SocketAddr = endpoint.parse().expect("address");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Etcd { endpoint, child }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name` beside this executable (the service binary of the same build).
pub fn sibling(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("own path");
    me.with_file_name(name)
}
