//! Shared test support: an in-process service on port 0 with its own data
//! directory, event injection through the real pipeline, and a small raw
//! HTTP/1.1 client (so tests see exactly what goes over the wire).

use actors::decoder::{Decode, MessageOutcome, RawMessage};
use css::config::{Feed, Settings};
use css::service::Service;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Which store a test runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    Embedded,
    Etcd,
}

pub struct TestService {
    pub svc: Service,
    /// The store's revision before the test wrote anything.
    pub base: u64,
    /// Its own etcd, when it runs on etcd; killed with it.
    pub _etcd: Option<crate::servers::Etcd>,
    /// Kept so the data directory lives as long as the service.
    pub _dir: tempfile::TempDir,
}

/// Settings for a test: port 0, a data dir, and a STOPPED-task retention long
/// enough that fixtures from the past stay readable.
pub fn settings(dir: &Path) -> Settings {
    let mut s = Settings::default();
    s.server.bind = "127.0.0.1:0".parse().unwrap();
    s.store.data_dir = dir.to_path_buf();
    s.store.stopped_task_retention = Duration::from_secs(100 * 365 * 86400);
    s
}

pub async fn start() -> TestService {
    start_on(Backend::Embedded).await
}

pub async fn start_on(b: Backend) -> TestService {
    start_with_on(b, Feed::None, |_| {}).await
}

/// A service fed by the simulator of `world`.
pub async fn simulated(world: actors::source::simulate::Config) -> TestService {
    start_with(Feed::Simulate, |s| s.simulate = world).await
}

pub async fn start_with(feed: Feed, tweak: impl FnOnce(&mut Settings)) -> TestService {
    start_with_on(Backend::Embedded, feed, tweak).await
}

pub async fn start_with_on(
    b: Backend,
    feed: Feed,
    tweak: impl FnOnce(&mut Settings),
) -> TestService {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(dir.path());
    let etcd = (b == Backend::Etcd).then(crate::servers::Etcd::start);
    if let Some(e) = &etcd {
        s.store.backend = actors::store::Backend::Etcd;
        s.store.etcd_endpoints = vec![e.endpoint()];
    }
    tweak(&mut s);
    let svc = Service::start(&s, feed, css::logging::discard())
        .await
        .expect("service starts");
    let mut t = TestService {
        svc,
        base: 0,
        _etcd: etcd,
        _dir: dir,
    };
    t.wait_ready().await;
    let list = t.get("/v1/instances").await.json();
    t.base = list["metadata"]["entityVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    t
}

impl TestService {
    pub fn addr(&self) -> SocketAddr {
        self.svc.addr
    }

    /// How many items the list at `path` answers.
    pub async fn count(&self, path: &str) -> usize {
        count(self.addr(), path).await
    }

    /// Deletes the stored entity of `kind` whose ARN ends with `suffix`
    /// (at its revision); the entry it was.
    pub async fn delete_stored(
        &self,
        kind: actors::model::Kind,
        suffix: &str,
    ) -> actors::model::SharedEntry {
        let snap = self.svc.pipeline.reader.snapshot().expect("a view");
        let found = snap.of(kind).values().find(|e| e.arn.ends_with(suffix));
        let e = found
            .unwrap_or_else(|| panic!("no {kind:?} ending in {suffix}"))
            .clone();
        let op = actors::store::Op::Delete {
            arn: e.arn.clone(),
            if_revision: e.revision,
        };
        self.apply(vec![op]).await;
        e
    }

    /// Has the writer run its housekeeping (retention) now.
    pub async fn housekeep(&self) {
        let writer = &self.svc.pipeline.writer;
        writer.send(actors::writer::Housekeep).await.unwrap();
    }

    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if get(self.addr(), "/readyz").await.status == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("service never became ready");
    }

    /// Sends bodies through the real decoder → writer pipeline.
    pub async fn inject<S: AsRef<str>>(&self, bodies: &[S]) -> Vec<MessageOutcome> {
        let messages = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| RawMessage::new(format!("test-{i}"), b.as_ref().to_owned()))
            .collect();
        self.svc
            .pipeline
            .decoder
            .send(Decode { messages })
            .await
            .expect("decoder reachable")
            .expect("store available")
    }

    /// Writes `ops` through the writer, as the reconciler does.
    pub async fn apply(&self, ops: Vec<actors::store::Op>) -> Vec<actors::store::Outcome> {
        self.svc
            .pipeline
            .writer
            .send(actors::writer::Apply { ops })
            .await
            .expect("writer reachable")
            .expect("store available")
    }

    pub async fn get(&self, path: &str) -> Response {
        get(self.addr(), path).await
    }

    pub async fn metric(&self, prefix: &str) -> f64 {
        metric(self.addr(), prefix).await
    }

    /// The `entityVersion` of this test's `n`th write.
    pub fn rev(&self, n: u64) -> String {
        (self.base + n).to_string()
    }
}

/// Writes versions 1 and 2 of a task, lets them age past a 1 s
/// `history_retention` (housekeeping before and after), then writes version 3:
/// the history of the first two writes is compacted (in the background).
pub async fn age_out_two_writes(t: &TestService) {
    t.inject(&[
        task_event("c", "a", 1, "RUNNING"),
        task_event("c", "a", 2, "RUNNING"),
    ])
    .await;
    t.housekeep().await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    t.inject(&[task_event("c", "a", 3, "RUNNING")]).await;
    t.housekeep().await;
}

/// The project's copy of the shared fixtures.
/// `../shared/<path>`, the specification's copy of what the project keeps a
/// copy of; `None` (said on stderr) in a clone without `shared/` beside it,
/// where there is nothing to compare with. In CI `shared/` is always there,
/// so its absence fails the test.
pub fn shared_copy(path: &str) -> Option<PathBuf> {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(path);
    if shared.exists() {
        return Some(shared);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing: the project's copy cannot be checked",
        shared.display()
    );
    eprintln!("NOT CHECKED: {} is missing", shared.display());
    None
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixtures_dir().join("events").join(name)).expect("fixture")
}

pub fn rendered(name: &str) -> Value {
    let s = std::fs::read_to_string(fixtures_dir().join("rendered").join(name)).expect("rendered");
    serde_json::from_str(&s).expect("rendered JSON")
}

/// A task event in the real shape.
pub fn task_event(cluster: &str, id: &str, version: u64, status: &str) -> String {
    serde_json::json!({
        "version": "0", "id": format!("ev-{id}-{version}"), "detail-type": "ECS Task State Change",
        "source": "aws.ecs", "account": "111122223333", "region": "us-west-2",
        "time": "2026-11-20T10:01:02Z",
        "detail": {
            "clusterArn": format!("arn:aws:ecs:us-west-2:111122223333:cluster/{cluster}"),
            "taskArn": task_arn(cluster, id),
            "taskDefinitionArn": "arn:aws:ecs:us-west-2:111122223333:task-definition/web:7",
            "lastStatus": status, "desiredStatus": "RUNNING", "version": version,
            "launchType": "EC2", "group": "service:web", "startedBy": "ecs-svc/1",
            "createdAt": "2026-11-20T10:00:47.003Z"
        }
    })
    .to_string()
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// Asserts the status; the message names the request (`what`) and
    /// shows the body.
    pub fn expect_status(&self, status: u16, what: &str) -> &Response {
        let body = String::from_utf8_lossy(&self.body);
        assert_eq!(self.status, status, "{what}: {body}");
        self
    }

    /// The JSON body of a 200 answer (asserted, as [`Response::expect_status`]).
    pub fn ok_json(&self, what: &str) -> Value {
        self.expect_status(200, what).json()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path).await
}

pub async fn request(addr: SocketAddr, method: &str, path: &str) -> Response {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    parse(&raw(addr, req.as_bytes()).await)
}

/// Sends raw bytes and reads until the server closes (or 10 s pass).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}

/// Status, headers and whether the body is chunked, from a response head.
fn parse_head(head: &str) -> (u16, Vec<(String, String)>, bool) {
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    (status, headers, chunked)
}

pub fn parse(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let (status, headers, chunked) = parse_head(&String::from_utf8_lossy(&raw[..split]));
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + size]);
            rest = &rest[nl + 2 + size + 2..];
        }
        body = out;
    }
    Response {
        status,
        headers,
        body,
    }
}

/// The service binary, running on a free loopback port; killed (SIGKILL)
/// when dropped.
pub struct Proc {
    pub addr: SocketAddr,
    child: std::process::Child,
}

pub const BIN: &str = env!("CARGO_BIN_EXE_cluster-state-service");

impl Proc {
    pub fn spawn(args: &[&str], env: &[(&str, String)]) -> Proc {
        let addr = css_bench::ports::free_addr();
        Self::launch(std::process::Command::new(BIN), addr, args, env)
    }

    /// The binary serving on `addr` (to start it again where it was).
    pub fn spawn_at(addr: SocketAddr, args: &[&str], env: &[(&str, String)]) -> Proc {
        Self::launch(std::process::Command::new(BIN), addr, args, env)
    }

    /// The binary run inside network namespace `ns`, serving on `addr` there.
    pub fn spawn_in(ns: &str, addr: SocketAddr, args: &[&str], env: &[(&str, String)]) -> Proc {
        let mut ip = std::process::Command::new("ip");
        ip.args(["netns", "exec", ns, BIN]);
        Self::launch(ip, addr, args, env)
    }

    fn launch(
        mut cmd: std::process::Command,
        addr: SocketAddr,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Proc {
        let child = cmd
            .args(["--bind", &addr.to_string()])
            .args(args)
            .env(
                "CSS_LOG_LEVEL",
                std::env::var("TEST_LOG_LEVEL").unwrap_or("warn".into()),
            )
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("binary starts");
        Proc { addr, child }
    }

    /// Sends it a signal (`STOP`, `CONT`, ...).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Asks it to stop (SIGTERM), as an orchestrator would.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits up to `within` for it to exit; its status, if it did.
    /// Waits (up to `within`) for an exit after a stop asked at `asked`;
    /// asserts it was a clean one (status 0) and returns how long it took.
    pub async fn exited_cleanly(
        &mut self,
        asked: std::time::Instant,
        within: Duration,
    ) -> Duration {
        let status = self.wait_exit(within).await.expect("the process exits");
        assert!(status.success(), "a graceful stop exits 0: {status}");
        asked.elapsed()
    }

    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn get(&self, path: &str) -> Response {
        get(self.addr, path).await
    }

    /// Tries to GET; `None` while the process is not listening.
    pub async fn try_get(&self, path: &str) -> Option<Response> {
        let mut s = TcpStream::connect(self.addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .ok()?
            .ok()?;
        out.windows(4)
            .any(|w| w == b"\r\n\r\n")
            .then(|| parse(&out))
    }

    pub async fn status(&self, path: &str) -> Option<u16> {
        self.try_get(path).await.map(|r| r.status)
    }

    pub async fn wait_ready(&self, within: Duration) {
        let ok = eventually(within, || async {
            self.status("/readyz").await == Some(200)
        })
        .await;
        assert!(ok, "service on {} never became ready", self.addr);
    }

    pub async fn metric(&self, prefix: &str) -> f64 {
        metric(self.addr, prefix).await
    }
}

/// The cluster name of a rendered entity (its `clusterARN`).
pub fn cluster_of(entity: &Value) -> &str {
    let arn = entity["clusterARN"].as_str().expect("a clusterARN");
    actors::arn::cluster_name(arn).expect("a cluster ARN")
}

/// A metric's value at `/metrics`: see [`metric_in`].
pub async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let body = get(addr, "/metrics").await.body;
    metric_in(&String::from_utf8_lossy(&body), series)
}

/// A metric's value in the text format `text`: the first series of the name
/// `series` gives whose labels include those it gives (`name{a="x"}` matches
/// `name{a="x",b="y"}`); 0 when there is none.
pub fn metric_in(text: &str, series: &str) -> f64 {
    fn split(s: &str) -> (&str, Vec<&str>) {
        match s.trim().split_once('{') {
            Some((name, labels)) => {
                let labels = labels.trim_end_matches('}').split(',');
                (name, labels.filter(|l| !l.is_empty()).collect())
            }
            None => (s.trim(), Vec::new()),
        }
    }
    let (name, wanted) = split(series);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (s, value) = l.rsplit_once(' ')?;
            let (n, labels) = split(s);
            let found = n == name && wanted.iter().all(|w| labels.contains(w));
            found.then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 50 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The account of the ARNs the tests make (in us-west-2).
pub const ACCOUNT: &str = "111122223333";

pub fn cluster_arn(c: &str) -> String {
    format!("arn:aws:ecs:us-west-2:{ACCOUNT}:cluster/{c}")
}

pub fn task_arn(c: &str, id: &str) -> String {
    format!("arn:aws:ecs:us-west-2:{ACCOUNT}:task/{c}/{id}")
}

/// `/v1/tasks/{c}/{ARN}` of task `id` of cluster `c`.
pub fn task_path(c: &str, id: &str) -> String {
    format!("/v1/tasks/{c}/{}", task_arn(c, id))
}

pub fn ci_arn(c: &str, id: &str) -> String {
    format!("arn:aws:ecs:us-west-2:{ACCOUNT}:container-instance/{c}/{id}")
}

pub fn service_arn(c: &str, name: &str) -> String {
    format!("arn:aws:ecs:us-west-2:{ACCOUNT}:service/{c}/{name}")
}

pub fn task_definition(family_revision: &str) -> String {
    format!("arn:aws:ecs:us-west-2:{ACCOUNT}:task-definition/{family_revision}")
}

/// A configuration file `c.toml` in `dir` holding `toml`.
pub fn config_file(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("c.toml");
    std::fs::write(&path, toml).expect("config file written");
    path
}

/// Asserts that `text` (`what`, for the message) holds each of `needles`.
pub fn assert_has_all(what: &str, text: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "{what} lacks {n}:\n{text}");
    }
}

/// A file holding `token` (and a newline) in `dir`, for `server.auth_token_file`.
pub fn token_file(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, format!("{token}\n")).expect("token file written");
    path
}

/// Whether the metric `name` (with its labels) on `addr` reaches `min`
/// within `within`.
pub async fn metric_reaches(addr: SocketAddr, name: &str, min: f64, within: Duration) -> bool {
    eventually(within, || async { metric(addr, name).await >= min }).await
}

/// How many items the list at `path` answers.
pub async fn count(addr: SocketAddr, path: &str) -> usize {
    let v = get(addr, path).await.json();
    v["items"]
        .as_array()
        .map_or_else(|| panic!("not a list: {v}"), Vec::len)
}

/// Tasks listed (as `(ARN, ECS version, entityVersion)`), and the list revision.
pub async fn tasks_of(addr: SocketAddr) -> Option<(Vec<(String, u64, u64)>, u64)> {
    let v: Value = serde_json::from_slice(&get(addr, "/v1/tasks").await.body).ok()?;
    let rev = v["metadata"]["entityVersion"].as_str()?.parse().ok()?;
    let items = v["items"]
        .as_array()?
        .iter()
        .filter_map(|i| {
            Some((
                i["entity"]["taskARN"].as_str()?.to_owned(),
                i["entity"]["version"].as_u64()?,
                i["metadata"]["entityVersion"].as_str()?.parse().ok()?,
            ))
        })
        .collect();
    Some((items, rev))
}

/// A client of one change stream, reading the chunked body as it comes.
pub struct StreamClient {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: tokio::io::BufReader<TcpStream>,
    /// Decoded body bytes not yet returned.
    pending: Vec<u8>,
    chunked: bool,
    /// The body has ended (the terminating chunk, or the server closed).
    pub ended: bool,
    /// The body ended with the terminating chunk (a clean end).
    pub terminated: bool,
}

impl StreamClient {
    /// Sends `GET path` with `extra` header lines (each ending in `\r\n`) and
    /// reads the response head.
    pub async fn open(addr: SocketAddr, path: &str, extra: &str) -> StreamClient {
        Self::open_on(
            TcpStream::connect(addr).await.expect("connect"),
            path,
            extra,
        )
        .await
    }

    pub async fn open_on(mut s: TcpStream, path: &str, extra: &str) -> StreamClient {
        use tokio::io::AsyncBufReadExt;
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n");
        s.write_all(req.as_bytes()).await.expect("send");
        let mut reader = tokio::io::BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
                .await
                .expect("response head in time")
                .expect("read head");
            assert!(n > 0, "connection closed before the head ended: {head}");
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let (status, headers, chunked) = parse_head(&head);
        let mut c = StreamClient {
            status,
            headers,
            reader,
            pending: Vec::new(),
            chunked,
            ended: false,
            terminated: false,
        };
        if let Some(len) = c
            .header("content-length")
            .and_then(|l| l.parse::<usize>().ok())
        {
            let mut body = vec![0; len];
            c.reader.read_exact(&mut body).await.expect("body");
            c.pending = body;
            c.ended = true;
        }
        c
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Reads more of the body; false once it has ended.
    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncBufReadExt;
        if self.ended {
            return false;
        }
        if !self.chunked {
            let mut buf = [0u8; 8192];
            let n = self.reader.read(&mut buf).await.unwrap_or(0);
            self.pending.extend_from_slice(&buf[..n]);
            self.ended = n == 0;
            return n > 0;
        }
        let mut size = String::new();
        if self.reader.read_line(&mut size).await.unwrap_or(0) == 0 {
            self.ended = true;
            return false;
        }
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        let mut data = vec![0; size + 2];
        if self.reader.read_exact(&mut data).await.is_err() {
            self.ended = true;
            return false;
        }
        if size == 0 {
            self.ended = true;
            self.terminated = true;
            return false;
        }
        self.pending.extend_from_slice(&data[..size]);
        true
    }

    /// The next `sep`-terminated record, waiting up to `within`; `None` when
    /// the body ended or nothing came in time.
    pub async fn next_record(&mut self, sep: &[u8], within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(i) = self.pending.windows(sep.len()).position(|w| w == sep) {
                let rec: Vec<u8> = self.pending.drain(..i + sep.len()).take(i).collect();
                return Some(String::from_utf8(rec).expect("UTF-8 stream"));
            }
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return None,
            }
        }
    }

    /// A stream at `path` (with extra request `headers`) and its first `n`
    /// lines, each asserted to come within 5 s.
    pub async fn first_lines(
        addr: SocketAddr,
        path: &str,
        headers: &str,
        n: usize,
    ) -> (StreamClient, Vec<String>) {
        let mut c = StreamClient::open(addr, path, headers).await;
        let lines = c.records(n, b"\n", Duration::from_secs(5)).await;
        assert_eq!(lines.len(), n, "{path}: {lines:?}");
        (c, lines)
    }

    /// The next `n` `sep`-terminated records; fewer when the body ends or
    /// one of them does not come within `each`.
    pub async fn records(&mut self, n: usize, sep: &[u8], each: Duration) -> Vec<String> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next_record(sep, each).await {
                Some(r) => out.push(r),
                None => break,
            }
        }
        out
    }

    /// The next NDJSON line as JSON.
    pub async fn next_json(&mut self, within: Duration) -> Option<Value> {
        let line = self.next_record(b"\n", within).await?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
    }

    /// Whatever body the response had, when it was not a stream (errors).
    pub fn body_json(&self) -> Value {
        serde_json::from_slice(&self.pending).expect("JSON body")
    }
}

/// The `metadata.entityVersion` of a stream item.
pub fn version_of(item: &Value) -> u64 {
    item["metadata"]["entityVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no entityVersion in {item}"))
}

/// A simulated world of `clusters` x `instances` x `tasks` per instance,
/// changing `events_per_second` once its initial state is out.
pub fn world(
    clusters: usize,
    instances: usize,
    tasks: usize,
    events_per_second: f64,
) -> actors::source::simulate::Config {
    actors::source::simulate::Config {
        clusters,
        instances_per_cluster: instances,
        tasks_per_instance: tasks,
        events_per_second,
        ..actors::source::simulate::Config::default()
    }
}

/// Held by the tests that load the machine most (several etcd members and
/// service processes at once) and by the one that times requests
/// (schemathesis, with a 0.5 s request timeout), so that they never run
/// together on a machine of two cores.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits until no other heavy test runs; the others wait while it is held.
pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    HEAVY.lock().await
}
