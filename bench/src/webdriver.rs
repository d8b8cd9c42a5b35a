//! A WebDriver client for the dashboard's browser tests and its benchmark:
//! Debian's `chromedriver` driving Debian's `chromium`, headless, with a
//! fresh profile, over the W3C WebDriver protocol (JSON over HTTP on
//! loopback). Nothing but loopback is reached: Chromium's background
//! networking is off.

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Browser {
    driver: std::process::Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start() -> Browser {
        let port = crate::ports::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver (Debian chromium-driver; scripts/setup installs it)");
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut b = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", b._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let v = b.call("POST", "/session", Some(caps)).await;
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        b
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let answer = exchange(self.addr, req.as_bytes()).await;
        let body = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(&answer[..0], |end| &answer[end + 4..]);
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        v["value"].clone()
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn go(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.at("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Waits up to `within` for `script` to return something truthy.
    pub async fn until(&self, within: Duration, script: &str) -> Option<Value> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let v = self.js(script, json!([])).await;
            if !v.is_null() && v != json!(false) && v != json!(0) && v != json!("") {
                return Some(v);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The WebDriver id of the first element matching `css`.
    pub async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                "POST",
                &self.at("/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(
            "POST",
            &self.at(&format!("/element/{id}/click")),
            Some(json!({})),
        )
        .await;
    }

    /// Types `text` into the element (`\u{E007}` is Enter).
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            "POST",
            &self.at(&format!("/element/{id}/value")),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Sets the window's size in CSS pixels.
    pub async fn resize(&self, width: u32, height: u32) {
        let rect = json!({"width": width, "height": height});
        self.call("POST", &self.at("/window/rect"), Some(rect))
            .await;
    }

    /// A PNG of the window, base64-encoded.
    pub async fn screenshot(&self) -> String {
        let v = self.call("GET", &self.at("/screenshot"), None).await;
        v.as_str().unwrap_or_default().to_owned()
    }
}

/// Sends a request and reads its answer: the head, then `Content-Length`
/// bytes (chromedriver keeps connections open whatever the request says).
async fn exchange(addr: SocketAddr, req: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("chromedriver");
    s.write_all(req).await.expect("request sent");
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if out.len() >= end + 4 + length {
                return out;
            }
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => return out,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End the session (Chromium with it), then the driver.
        use std::io::{Read, Write};
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1))
        {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let req = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.session, self.addr
            );
            let _ = s.write_all(req.as_bytes());
            let _ = s.read_to_end(&mut Vec::new());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
