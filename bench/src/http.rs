//! A small HTTP/1.1 client for the benchmark: keep-alive GETs whose body is
//! kept or only counted, and chunked streams read piece by piece. Enough for
//! the service's own answers; not a general client.

use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One answer: its status, its body length, and the body when it was kept.
pub struct Reply {
    pub status: u16,
    pub len: usize,
    pub body: Vec<u8>,
}

/// One keep-alive connection.
pub struct Conn {
    r: BufReader<TcpStream>,
    scratch: Vec<u8>,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// The status and body framing of a response head.
struct Head {
    status: u16,
    length: Option<usize>,
    chunked: bool,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            r: BufReader::with_capacity(64 * 1024, s),
            scratch: vec![0; 64 * 1024],
        })
    }

    async fn send(&mut self, path: &str) -> io::Result<Head> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
        self.r.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        let mut head = Head {
            status: 0,
            length: None,
            chunked: false,
        };
        loop {
            line.clear();
            if self.r.read_line(&mut line).await? == 0 {
                return Err(bad("connection closed before a response"));
            }
            let l = line.trim_end();
            if head.status == 0 {
                head.status = l
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("bad status line"))?;
                continue;
            }
            if l.is_empty() {
                return Ok(head);
            }
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                head.length = value.parse().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                head.chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
    }

    /// GETs `path`; the body is kept only when `keep`.
    pub async fn get(&mut self, path: &str, keep: bool) -> io::Result<Reply> {
        let head = self.send(path).await?;
        let mut reply = Reply {
            status: head.status,
            len: 0,
            body: Vec::new(),
        };
        if head.chunked {
            while let Some(size) = self.chunk_size().await? {
                self.body_bytes(size, keep, &mut reply).await?;
                self.crlf().await?;
            }
        } else {
            let n = head.length.ok_or_else(|| bad("no content-length"))?;
            self.body_bytes(n, keep, &mut reply).await?;
        }
        Ok(reply)
    }

    async fn body_bytes(&mut self, mut n: usize, keep: bool, reply: &mut Reply) -> io::Result<()> {
        reply.len += n;
        while n > 0 {
            let want = n.min(self.scratch.len());
            let got = self.r.read(&mut self.scratch[..want]).await?;
            if got == 0 {
                return Err(bad("body cut short"));
            }
            if keep {
                reply.body.extend_from_slice(&self.scratch[..got]);
            }
            n -= got;
        }
        Ok(())
    }

    /// The size of the next chunk; `None` after the last one.
    async fn chunk_size(&mut self) -> io::Result<Option<usize>> {
        let mut line = String::new();
        if self.r.read_line(&mut line).await? == 0 {
            return Err(bad("stream closed"));
        }
        let hex = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(hex, 16).map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            self.crlf().await?;
            return Ok(None);
        }
        Ok(Some(size))
    }

    async fn crlf(&mut self) -> io::Result<()> {
        let mut two = [0u8; 2];
        self.r.read_exact(&mut two).await?;
        Ok(())
    }

    /// Opens a chunked stream at `path`; read it with [`Conn::next_piece`].
    pub async fn open_stream(&mut self, path: &str) -> io::Result<u16> {
        let head = self.send(path).await?;
        if head.status == 200 && !head.chunked {
            return Err(bad("stream not chunked"));
        }
        Ok(head.status)
    }

    /// Appends the next chunk of an open stream to `out`; false at its end.
    pub async fn next_piece(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        let Some(size) = self.chunk_size().await? else {
            return Ok(false);
        };
        let start = out.len();
        out.resize(start + size, 0);
        self.r.read_exact(&mut out[start..]).await?;
        self.crlf().await?;
        Ok(true)
    }
}
