//! Real servers for the tests: etcd and moto (SQS/ECS), each started on free
//! loopback ports with its own data, and killed when its guard is dropped.
//!
//! `scripts/test` installs both. A test that needs one fails (it does not
//! skip) when it is missing.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use css_bench::ports::free_port;

fn wait_for_port(port: u16, what: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start on port {port}");
}

/// The etcd binary the tests use (`ETCD_BIN`, else `etcd` on the PATH).
pub fn etcd_bin() -> PathBuf {
    binary("ETCD_BIN", PathBuf::from("etcd"), "etcd")
}

fn binary(env: &str, fallback: PathBuf, what: &str) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or(fallback);
    let found = path.is_file()
        || Command::new(&path)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
    assert!(
        found,
        "{what} not found at {} (set {env}, or run ./scripts/test, which installs it)",
        path.display()
    );
    path
}

/// How one etcd member is started: its name, data, URLs and cluster.
struct EtcdMember<'a> {
    name: &'a str,
    data_dir: PathBuf,
    /// Where it listens for clients, and what it tells them.
    listen: &'a str,
    client: &'a str,
    peer: &'a str,
    initial_cluster: &'a str,
}

impl EtcdMember<'_> {
    /// `cmd` (the etcd binary) with this member's flags, quiet.
    fn command(&self, mut cmd: Command) -> Command {
        cmd.args(["--name", self.name, "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen-client-urls", self.listen])
            .args(["--advertise-client-urls", self.client])
            .args(["--listen-peer-urls", self.peer])
            .args(["--initial-advertise-peer-urls", self.peer])
            .args(["--initial-cluster", self.initial_cluster])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }
}

/// An etcd server of its own.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// Server certificate and key: clients must use TLS.
    tls: Option<(PathBuf, PathBuf)>,
}

impl Etcd {
    pub fn start() -> Etcd {
        Self::start_with_tls(None)
    }

    /// An etcd that serves clients over TLS with this certificate and key.
    pub fn start_with_tls(tls: Option<(PathBuf, PathBuf)>) -> Etcd {
        let mut e = Etcd {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            client_port: free_port(),
            peer_port: free_port(),
            tls,
        };
        e.resume();
        e
    }

    /// `127.0.0.1:PORT`, as `--etcd-endpoint` takes it.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Sends the server a signal (`STOP` freezes it, `CONT` thaws it).
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let pid = c.id().to_string();
            succeeded(Command::new("kill").args([&format!("-{sig}"), pid.as_str()]));
        }
    }

    /// Kills the server (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data and ports.
    pub fn resume(&mut self) {
        let bin = etcd_bin();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(bin);
        if let Some((cert, key)) = &self.tls {
            cmd.arg("--cert-file").arg(cert).arg("--key-file").arg(key);
        }
        let member = EtcdMember {
            name: "test",
            data_dir: self.dir.path().join("etcd"),
            listen: &client,
            client: &client,
            peer: &peer,
            initial_cluster: &format!("test={peer}"),
        };
        let child = member.command(cmd).spawn().expect("etcd starts");
        self.child = Some(child);
        wait_for_port(self.client_port, "etcd");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three etcd members on loopback, one cluster.
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
    /// Clients may come from any interface (a network namespace's veth).
    everywhere: bool,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdCluster {
    pub fn start() -> EtcdCluster {
        Self::start_listening(false)
    }

    /// A cluster whose client ports listen on every interface.
    pub fn start_everywhere() -> EtcdCluster {
        Self::start_listening(true)
    }

    fn start_listening(everywhere: bool) -> EtcdCluster {
        let members: Vec<Member> = ["m0", "m1", "m2"]
            .into_iter()
            .map(|name| Member {
                name: name.into(),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let mut cluster = EtcdCluster {
            members,
            dir: tempfile::tempdir().unwrap(),
            everywhere,
        };
        for i in 0..3 {
            cluster.spawn(i);
        }
        for m in &cluster.members {
            wait_for_port(m.client_port, "etcd member");
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let host = if self.everywhere {
            "0.0.0.0"
        } else {
            "127.0.0.1"
        };
        let listen = format!("http://{host}:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let member = EtcdMember {
            name: &m.name,
            data_dir: self.dir.path().join(&m.name),
            listen: &listen,
            client: &client,
            peer: &peer,
            initial_cluster: &initial.join(","),
        };
        let mut cmd = member.command(Command::new(etcd_bin()));
        let child = cmd
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "css-test"])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .spawn()
            .expect("etcd member starts");
        self.members[i].child = Some(child);
    }

    /// Every member's `127.0.0.1:PORT`, as `--etcd-endpoint` takes them.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints_at("127.0.0.1")
    }

    /// Every member's endpoint at another address of this host.
    pub fn endpoints_at(&self, ip: &str) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{ip}:{}", m.client_port))
            .collect()
    }

    /// The member that leads the cluster now (asked of the live members).
    pub async fn leader(&self) -> usize {
        for _ in 0..100 {
            for m in self.members.iter().filter(|m| m.child.is_some()) {
                let ep = format!("127.0.0.1:{}", m.client_port);
                let Ok(mut c) = etcd_client::Client::connect([ep], None).await else {
                    continue;
                };
                let Ok(status) = c.status().await else {
                    continue;
                };
                let leader = status.leader();
                if leader == 0 {
                    continue;
                }
                let Ok(list) = c.member_list().await else {
                    continue;
                };
                if let Some(l) = list.members().iter().find(|x| x.id() == leader) {
                    if let Some(i) = self.members.iter().position(|m| m.name == l.name()) {
                        return i;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the etcd cluster has no leader");
    }

    /// SIGKILLs member `i` (its data stays).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data and ports.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        wait_for_port(self.members[i].client_port, "etcd member");
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A moto server of its own, speaking SQS and ECS.
/// Makes a CA and a server certificate for 127.0.0.1 in `dir` with openssl;
/// returns (CA certificate, server certificate, server key).
pub fn make_certs(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        succeeded(Command::new("openssl").args(args).current_dir(dir));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=css-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// Runs the Python script `tests/it/SCRIPT` with `args` in the venv; its
/// standard output, parsed as JSON (the script must succeed).
pub fn python_json(script: &str, args: &[&str]) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it")
        .join(script);
    let out = succeeded(Command::new(venv_python()).arg(path).args(args));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// The Python of moto's venv (it has jsonschema and openapi-spec-validator).
pub fn venv_python() -> PathBuf {
    let fallback = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/moto_server");
    let moto = binary("MOTO_SERVER", fallback, "moto_server");
    let python = moto.with_file_name("python");
    assert!(
        python.exists(),
        "no python beside {} (run ./scripts/test, which makes the venv)",
        moto.display()
    );
    python
}

pub struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        let fallback = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/moto_server");
        let bin = binary("MOTO_SERVER", fallback, "moto_server");
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto starts");
        wait_for_port(port, "moto");
        Moto { child, port }
    }

    /// The endpoint URL (`AWS_ENDPOINT_URL`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Environment for a process that should talk to this moto.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url()),
            ("AWS_REGION", "us-west-2".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// An SQS client for this moto.
    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        self.sqs_in("us-west-2")
    }

    /// An SQS client for this moto in `region`, with moto's own account.
    pub fn sqs_in(&self, region: &str) -> aws_sdk_sqs::Client {
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new(region.to_owned()))
            .endpoint_url(self.url())
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .build();
        aws_sdk_sqs::Client::from_conf(config)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `promtool ARGS` with `input` on its standard input (Debian's
/// `prometheus` package; `PROMTOOL` overrides); whether it passed and what
/// it said.
pub fn promtool(args: &[&str], input: &str) -> (bool, String) {
    use std::io::Write as _;
    let bin = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut child = Command::new(&bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin} (Debian prometheus; scripts/setup installs it): {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("promtool reads");
    let out = child.wait_with_output().expect("promtool runs");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

/// A Prometheus server (Debian's `prometheus`; `PROMETHEUS_BIN` overrides)
/// on a free loopback port, with its own data directory and `config`.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(config: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let port = free_port();
        let bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{bin} (Debian prometheus; scripts/setup installs it): {e}")
            });
        wait_for_port(port, "prometheus");
        Prometheus {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A network namespace with two veth links to this host: `etcd` (which a
/// test cuts) and `control` (which stays, for the test to reach what runs
/// inside). Deleted, links and all, when dropped.
pub struct Netns {
    pub name: String,
    /// This host's address on the `etcd` link.
    pub host_ip: String,
    /// The namespace's address on the `control` link.
    pub inside_ip: String,
    etcd_link: String,
}

impl Netns {
    pub fn new() -> Netns {
        let n = std::process::id() % 250;
        let ns = Netns {
            name: format!("css{}", std::process::id()),
            host_ip: format!("10.231.{n}.1"),
            inside_ip: format!("10.231.{n}.6"),
            etcd_link: format!("vn{n}e"),
        };
        let _ = Command::new("ip").args(["netns", "del", &ns.name]).status();
        ns.ip(&["netns", "add", &ns.name]);
        for (link, host, inside) in [("e", 1, 2), ("c", 5, 6)] {
            let (h, v) = (format!("vh{n}{link}"), format!("vn{n}{link}"));
            let _ = Command::new("ip").args(["link", "del", &h]).status();
            ns.ip(&["link", "add", &h, "type", "veth", "peer", "name", &v]);
            ns.ip(&["link", "set", &v, "netns", &ns.name]);
            ns.ip(&["addr", "add", &format!("10.231.{n}.{host}/30"), "dev", &h]);
            ns.ip(&["link", "set", &h, "up"]);
            ns.inside(&["addr", "add", &format!("10.231.{n}.{inside}/30"), "dev", &v]);
            ns.inside(&["link", "set", &v, "up"]);
        }
        ns.inside(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let ok = Command::new("ip").args(args).status().expect("ip runs");
        assert!(ok.success(), "ip {}", args.join(" "));
    }

    fn inside(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        self.ip(&all);
    }

    /// Takes the `etcd` link down (`false`) or up again (`true`).
    pub fn etcd_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        self.inside(&["link", "set", &self.etcd_link, state]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `cmd` to its end and asserts it succeeded (its stderr in the message).
pub fn succeeded(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} does not run: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?}: {stderr}");
    out
}

/// What a [`FaultProxy`] does to the traffic it forwards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Forwards everything as it comes.
    None,
    /// Refuses connections (its listener is closed) and cuts the open ones.
    Refuse,
    /// Holds each request this long before forwarding it.
    Delay(Duration),
    /// Forwards half of the first piece of each response, then resets the
    /// connection.
    ResetMidResponse,
    /// Answers each request itself with this HTTP status and AWS error
    /// code (the JSON protocol's `__type`), then closes the connection.
    Answer(u16, &'static str),
}

/// A TCP proxy on loopback in front of a real server (moto), for the
/// faults a server cannot produce on demand.
pub struct FaultProxy {
    pub addr: SocketAddr,
    fault: tokio::sync::watch::Sender<Fault>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (fault, watch) = tokio::sync::watch::channel(Fault::None);
        let task = tokio::spawn(Self::serve(listener, addr, upstream, watch));
        FaultProxy { addr, fault, task }
    }

    /// The endpoint URL of the proxied server.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    async fn serve(
        mut listener: tokio::net::TcpListener,
        addr: SocketAddr,
        upstream: SocketAddr,
        mut fault: tokio::sync::watch::Receiver<Fault>,
    ) {
        loop {
            if *fault.borrow() == Fault::Refuse {
                drop(listener);
                let _ = fault.wait_for(|f| *f != Fault::Refuse).await;
                listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
                continue;
            }
            tokio::select! {
                conn = listener.accept() => {
                    match (conn, *fault.borrow()) {
                        (Ok((client, _)), Fault::Answer(status, code)) => {
                            tokio::spawn(Self::answer(client, status, code));
                        }
                        (Ok((client, _)), _) => {
                            tokio::spawn(Self::pipe(client, upstream, fault.clone()));
                        }
                        _ => {}
                    }
                }
                _ = fault.changed() => {}
            }
        }
    }

    async fn pipe(
        client: tokio::net::TcpStream,
        upstream: SocketAddr,
        fault: tokio::sync::watch::Receiver<Fault>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
            return;
        };
        // Dropped with a zero linger, a socket resets its connection.
        let reset = |s: &tokio::net::TcpStream| {
            let _ = s.set_zero_linger();
        };
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let now = |f: &tokio::sync::watch::Receiver<Fault>| *f.borrow();
        let f = fault.clone();
        let requests = async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = cr.read(&mut buf).await {
                if let Fault::Delay(d) = now(&f) {
                    tokio::time::sleep(d).await;
                }
                if sw.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        };
        let f = fault.clone();
        let responses = async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = sr.read(&mut buf).await {
                if now(&f) == Fault::ResetMidResponse {
                    let _ = cw.write_all(&buf[..n / 2]).await;
                    reset(cw.as_ref());
                    return;
                }
                if cw.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        };
        let mut refused = fault;
        let cut = |f: &Fault| matches!(f, Fault::Refuse | Fault::Answer(..));
        tokio::select! {
            _ = requests => {}
            _ = responses => {}
            // Open connections are cut too (they reset: the halves drop).
            _ = refused.wait_for(cut) => {}
        }
    }

    /// Reads a request and answers it with an AWS error, then closes.
    async fn answer(mut client: tokio::net::TcpStream, status: u16, code: &str) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 64 * 1024];
        if !matches!(client.read(&mut buf).await, Ok(1..)) {
            return;
        }
        let body =
            format!(r#"{{"__type":"com.amazonaws.sqs#{code}","message":"{code} (fault proxy)"}}"#);
        let head = format!(
            "HTTP/1.1 {status} Fault\r\ncontent-type: application/x-amz-json-1.0\r\n\
             x-amzn-query-error: {code};Sender\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let _ = client.write_all((head + &body).as_bytes()).await;
        let _ = client.shutdown().await;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A small filesystem made for a test: a size-limited tmpfs mounted at a
/// directory (root is needed, as for the network namespaces), which the
/// test fills up and frees again. Unmounted when dropped.
pub struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    pub fn mount(dir: &std::path::Path, bytes: u64) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "css-test"])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(
            ok.success(),
            "a tmpfs mounted at {} (needs root)",
            dir.display()
        );
        SmallDisk {
            dir: dir.to_owned(),
        }
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }

    /// Takes all the space left: a file grows until the disk refuses more.
    /// Returns its size.
    pub fn fill(&self) -> u64 {
        use std::io::Write;
        let mut f = std::fs::File::create(self.filler()).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        // Bounded: the disk is small.
        while size < 1 << 30 {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => size += n as u64,
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(28), "ENOSPC: {e}");
                    break;
                }
            }
        }
        size
    }

    /// Gives the space back.
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
