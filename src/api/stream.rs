//! Change streams: `/v1/stream/tasks` and `/v1/stream/instances`, as NDJSON
//! (default), as Server-Sent Events (`Accept: text/event-stream`) or as the
//! NDJSON bytes under v0.3's `application/octet-stream` (see `negotiate`).
//!
//! A stream is a state machine that actix-web polls as the client reads
//! ([`Stream::next_chunk`]), so a slow reader slows only its own stream:
//! 1. `snapshot=true`: every stored matching entity, then a bookmark;
//! 2. catch-up: changes from the store's history, from the requested
//!    revision on, until the StreamHub holds the rest ([`Phase::CatchUp`]);
//! 3. live: the StreamHub's bounded subscription ([`Phase::Live`]).
//!
//! `next` is the invariant that makes the hand-over exact: every change
//! before it has been sent or filtered out, and each phase starts at it.

use super::negotiate::Format;
use super::query::{whole_number, Filter, Params};
use super::{Error, State};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use actors::hub::{self, End, Item, Subscribe, Subscribed, Subscription};
use actors::metrics::Metrics;
use actors::model::{Entry, Key, Kind};
use actors::store::{self, Change, Feed, Resume};
use actors::view::Snapshot;
use bytes::Bytes;
use std::fmt::Write as _;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::error::TryRecvError;

/// Tuning of the streams (`[server]` in the config file).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Open streams at once; more get 503.
    pub max_streams: u64,
    /// Commits (of any size) buffered per live stream, and items that may
    /// wait unread for `hub::STALL`, before it is cut as too slow.
    pub buffer: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_streams: 10_000,
            buffer: 1024,
        }
    }
}

/// Bytes gathered before a chunk is handed to the connection.
const CHUNK: usize = 32 * 1024;
/// Shortest time between two writes of a live stream (see `next_chunk`).
const WRITE_GAP: Duration = Duration::from_millis(10);
/// SSE comment heartbeat while idle.
const SSE_KEEPALIVE: Duration = Duration::from_secs(15);
/// How long a catch-up waits on a quiet history before trying to go live again.
const CATCH_UP_POLL: Duration = Duration::from_millis(100);
/// History batches between attempts to go live while the history keeps coming.
const ATTACH_EVERY: u32 = 16;
/// Longest `heartbeat`, in seconds.
const MAX_HEARTBEAT: u64 = 300;

fn invalid_version() -> Error {
    Error::bad_request(
        "InvalidEntityVersion",
        "Invalid entity version: expected a non-negative whole number".into(),
    )
}

fn parse_version(v: &str) -> Result<u64, Error> {
    whole_number(v).ok_or_else(invalid_version)
}

/// A stream's place among the `max_streams` open at once, held for as long
/// as it lives (and counted in `css_streams_open`).
struct Open {
    metrics: Arc<Metrics>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.streams_open.dec();
    }
}

/// Where a stream is.
enum Phase {
    Snapshot {
        snap: Snapshot,
        after: Option<Key>,
    },
    /// Reading the store's history from `next`; `None` until it is opened
    /// (going live is tried first).
    CatchUp(Option<Feed>),
    Live(Subscription),
    Done,
}

/// Whether a step produced output (or changed phase), or would have to wait.
enum Step {
    Progress,
    Idle,
}

struct Stream {
    kind: Kind,
    filter: Arc<Filter>,
    sse: bool,
    heartbeat: Option<Duration>,
    next: u64,
    phase: Phase,
    out: Vec<u8>,
    last_write: Instant,
    batches: u32,
    state: web::Data<State>,
    _open: Open,
}

/// What a stream request asks for.
struct Request {
    filter: Filter,
    format: Format,
    /// The first revision wanted, from `Last-Event-ID` (SSE) or `entityVersion`.
    from: Option<u64>,
    snapshot: bool,
    heartbeat: Option<Duration>,
}

impl Request {
    fn parse(kind: Kind, req: &HttpRequest) -> Result<Request, Error> {
        let mut allowed = super::entities::about(kind).filters.to_vec();
        allowed.extend(["entityVersion", "snapshot", "heartbeat"]);
        let params = Params::parse(req.query_string(), &allowed)?;
        let filter = Filter::parse(kind, &params)?;
        let format = Format::negotiate(
            req.headers()
                .get_all(header::ACCEPT)
                .filter_map(|v| v.to_str().ok()),
        );
        let from = match last_event_id(req, format == Format::Sse)? {
            Some(id) => Some(id.saturating_add(1)),
            None => params
                .value("entityVersion")
                .map(parse_version)
                .transpose()?,
        };
        let snapshot = match params.value("snapshot") {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(_) => return Err(invalid_snapshot("expected true or false")),
        };
        if snapshot && from.is_some() {
            return Err(invalid_snapshot(
                "snapshot=true cannot be combined with entityVersion",
            ));
        }
        let heartbeat = params
            .value("heartbeat")
            .map(|v| match whole_number(v) {
                Some(s) if (1..=MAX_HEARTBEAT).contains(&s) => Ok(Duration::from_secs(s)),
                _ => Err(Error::bad_request(
                    "InvalidParameter",
                    format!("Invalid heartbeat: expected whole seconds from 1 to {MAX_HEARTBEAT}"),
                )),
            })
            .transpose()?;
        Ok(Request {
            filter,
            format,
            from,
            snapshot,
            heartbeat,
        })
    }
}

fn invalid_snapshot(why: &str) -> Error {
    Error::bad_request("InvalidParameter", format!("Invalid snapshot: {why}"))
}

/// An EventSource reconnecting says where it was; that beats the URL's
/// start. The header is checked whatever the format, used only with SSE.
fn last_event_id(req: &HttpRequest, sse: bool) -> Result<Option<u64>, Error> {
    Ok(req
        .headers()
        .get("last-event-id")
        .map(|v| v.to_str().map_err(|_| invalid_version()))
        .transpose()?
        .filter(|v| !v.is_empty())
        .map(parse_version)
        .transpose()?
        .filter(|_| sse))
}

/// A place among the streams open at once; 503 when there is none.
fn open(state: &State) -> Result<Open, Error> {
    let Ok(slot) = state.stream_slots.clone().try_acquire_owned() else {
        return Err(Error::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "TooManyStreams",
            "Too many streams: try again later",
        ));
    };
    state.metrics.streams_open.inc();
    Ok(Open {
        metrics: state.metrics.clone(),
        _slot: slot,
    })
}

/// `GET /v1/stream/{plural}` of every kind.
pub async fn stream(
    kind: Kind,
    req: HttpRequest,
    state: web::Data<State>,
) -> Result<HttpResponse, Error> {
    let req = &req;
    let r = Request::parse(kind, req)?;
    let snap = state.snapshot()?;
    let (next, phase) = match r.from {
        Some(n) => {
            let n = n.max(1);
            check_resume(n, &state).await?;
            (n, Phase::CatchUp(None))
        }
        None if r.snapshot => (snap.revision + 1, Phase::Snapshot { snap, after: None }),
        None => (snap.revision + 1, Phase::CatchUp(None)),
    };
    let mut response = HttpResponse::Ok();
    response
        .content_type(r.format.content_type())
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"));
    // HEAD: what GET would answer, without holding a stream open.
    if req.method() == Method::HEAD {
        return Ok(response.finish());
    }
    let s = Stream {
        kind,
        filter: Arc::new(r.filter),
        sse: r.format == Format::Sse,
        heartbeat: r.heartbeat,
        next,
        phase,
        out: Vec::new(),
        last_write: Instant::now(),
        batches: 0,
        _open: open(&state)?,
        state,
    };
    let body = futures_util::stream::unfold(Box::new(s), |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), s))
    });
    Ok(response.streaming(body))
}

/// Whether a stream may start at revision `n`: 410 when the history no longer
/// reaches back to it, 400 when it lies beyond the store's next revision.
async fn check_resume(n: u64, state: &State) -> Result<(), Error> {
    match state.reader.check_resume(n).await {
        Ok(Resume::Available) => Ok(()),
        Ok(Resume::Compacted) => Err(Error::new(
            StatusCode::GONE,
            "EntityVersionOutOfRange",
            format!(
                "Entity version is out of range: {n} is older than the retained \
                history; list again and stream from the list's entityVersion + 1"
            ),
        )),
        Ok(Resume::Future { revision }) => Err(Error::bad_request(
            "EntityVersionOutOfRange",
            format!("Entity version is out of range: the store's revision is {revision}"),
        )),
        Err(_) => Err(Error::unavailable()),
    }
}

impl Stream {
    /// The next piece of the body; `None` ends it.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        let mut gathered = false;
        loop {
            if self.out.len() >= CHUNK {
                return self.take();
            }
            let may_wait = self.out.is_empty();
            if let Step::Idle = self.step(may_wait).await {
                // A live stream that wrote moments ago gathers what follows
                // for the rest of `WRITE_GAP` before writing again: at most
                // one write per gap per stream however busy the store is,
                // and a change that comes alone is still written at once.
                let due = self.last_write + WRITE_GAP;
                if !gathered && !self.out.is_empty() && self.is_live() && Instant::now() < due {
                    gathered = true;
                    self.gather_until(due).await;
                    continue;
                }
                return self.take();
            }
        }
    }

    /// Takes live changes as they come, until `due` or a full chunk: the
    /// subscription keeps draining while a write waits for its gap.
    async fn gather_until(&mut self, due: Instant) {
        let Phase::Live(mut sub) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        while self.out.len() < CHUNK {
            match tokio::time::timeout_at(due.into(), sub.next()).await {
                Ok(Some(item)) => self.live_item(&item),
                // Ended: the next step says how.
                Ok(None) | Err(_) => break,
            }
        }
        self.phase = Phase::Live(sub);
    }

    fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Live(_))
    }

    fn take(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            return None;
        }
        self.last_write = Instant::now();
        Some(Bytes::from(std::mem::take(&mut self.out)))
    }

    /// One move of the state machine; waits only when `may_wait`.
    async fn step(&mut self, may_wait: bool) -> Step {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Done => Step::Idle,
            Phase::Snapshot { snap, after } => {
                self.snapshot_step(snap, after);
                Step::Progress
            }
            Phase::CatchUp(feed) => self.catch_up_step(feed, may_wait).await,
            Phase::Live(sub) => self.live_step(sub, may_wait).await,
        }
    }

    fn snapshot_step(&mut self, snap: Snapshot, after: Option<Key>) {
        // Keys are cloned only where a chunk ends.
        let lower: Bound<Key> = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut last = None;
        for (key, e) in snap.of(self.kind).range((lower, Bound::Unbounded)) {
            if self.filter.matches(e) {
                self.push_item(e, false);
            }
            if self.out.len() >= CHUNK {
                last = Some(key.clone());
                break;
            }
        }
        match last {
            Some(after) => {
                self.phase = Phase::Snapshot {
                    snap,
                    after: Some(after),
                }
            }
            None => {
                self.push_bookmark(snap.revision);
                self.next = snap.revision + 1;
                self.phase = Phase::CatchUp(None);
            }
        }
    }

    async fn catch_up_step(&mut self, feed: Option<Feed>, may_wait: bool) -> Step {
        let Some(mut feed) = feed else {
            if !may_wait {
                self.phase = Phase::CatchUp(None);
                return Step::Idle;
            }
            // Go live if the hub holds everything from `next`; else read history.
            if !self.attach().await {
                self.phase = Phase::CatchUp(Some(self.state.reader.history(self.next)));
            }
            return Step::Progress;
        };
        match feed.try_recv() {
            Ok(batch) => {
                self.phase = Phase::CatchUp(Some(feed));
                self.take_history(batch);
                self.batches += 1;
                if self.batches.is_multiple_of(ATTACH_EVERY) && may_wait {
                    self.attach().await;
                }
                Step::Progress
            }
            Err(TryRecvError::Empty) if !may_wait => {
                self.phase = Phase::CatchUp(Some(feed));
                Step::Idle
            }
            Err(TryRecvError::Empty) => {
                if self.attach().await {
                    return Step::Progress;
                }
                let wait = self.idle_wait().min(CATCH_UP_POLL);
                match tokio::time::timeout(wait, feed.recv()).await {
                    Ok(Some(batch)) => {
                        self.phase = Phase::CatchUp(Some(feed));
                        self.take_history(batch);
                    }
                    // The history ended (the embedded store's does): the hub
                    // has the rest, unless it lags; then read on.
                    Ok(None) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        self.phase = Phase::CatchUp(None);
                    }
                    Err(_) => {
                        self.phase = Phase::CatchUp(Some(feed));
                        if self.heartbeat_due() {
                            self.push_bookmark(self.next - 1);
                        }
                    }
                }
                Step::Progress
            }
            Err(TryRecvError::Disconnected) => {
                self.phase = Phase::CatchUp(None);
                if may_wait {
                    Step::Progress
                } else {
                    Step::Idle
                }
            }
        }
    }

    fn take_history(&mut self, batch: store::Result<Vec<Change>>) {
        match batch {
            Ok(changes) => {
                for c in changes {
                    let e = &c.entry;
                    if e.revision < self.next {
                        continue;
                    }
                    self.next = e.revision + 1;
                    if e.kind == self.kind && self.filter.matches(e) {
                        self.push_item(e, c.deleted);
                    }
                }
            }
            Err(store::Error::Compacted) => {
                self.state.metrics.streams_expired.inc();
                self.push_end(
                    "Expired",
                    "History retention overtook this catch-up; resume from resumeFrom \
                    (or list again if that is out of range)",
                    self.next,
                );
            }
            Err(_) => self.push_end(
                "StoreUnavailable",
                "Store unavailable; resume from resumeFrom",
                self.next,
            ),
        }
    }

    /// Subscribes to the hub from `next`; true when the stream is live now,
    /// has taken a piece of the hub's backlog (and asks again next), or is
    /// done (the service is stopping); false when only the store has `next`.
    async fn attach(&mut self) -> bool {
        let filter = self.filter.clone();
        let msg = Subscribe {
            kind: self.kind,
            from: self.next,
            filter: Arc::new(move |e: &Entry| filter.matches(e)) as hub::Filter,
            buffer: self.state.streams.buffer,
        };
        match self.state.hub.send(msg).await {
            Ok(Subscribed::Live(sub)) => {
                self.phase = Phase::Live(sub);
                true
            }
            Ok(Subscribed::Backlog { items, next }) => {
                // From the hub's ring: no history needed up to `next`.
                for item in &items {
                    self.push_line(item.revision, item.kind, item.deleted, &item.line);
                }
                self.next = next;
                self.phase = Phase::CatchUp(None);
                true
            }
            Ok(Subscribed::Behind) => false,
            Ok(Subscribed::Closing) | Err(_) => {
                self.phase = Phase::Done;
                true
            }
        }
    }

    async fn live_step(&mut self, mut sub: Subscription, may_wait: bool) -> Step {
        match sub.try_next() {
            Ok(item) => {
                self.live_item(&item);
                self.phase = Phase::Live(sub);
                return Step::Progress;
            }
            Err(TryRecvError::Disconnected) => {
                self.ended(&sub);
                return Step::Progress;
            }
            Err(TryRecvError::Empty) if !may_wait => {
                self.phase = Phase::Live(sub);
                return Step::Idle;
            }
            Err(TryRecvError::Empty) => {}
        }
        let wait = self.idle_wait();
        match tokio::time::timeout(wait, sub.next()).await {
            Ok(Some(item)) => self.live_item(&item),
            Ok(None) => {
                self.ended(&sub);
                return Step::Progress;
            }
            Err(_) => {
                // Read `seen` before looking: every change up to it is in the
                // channel, so an empty channel means the client has them all.
                let seen = sub.shared.seen.load(Ordering::Acquire);
                match sub.try_next() {
                    Ok(item) => self.live_item(&item),
                    Err(TryRecvError::Empty) => {
                        self.next = self.next.max(seen + 1);
                        if self.heartbeat_due() {
                            self.push_bookmark(self.next - 1);
                        }
                    }
                    Err(TryRecvError::Disconnected) => {
                        self.ended(&sub);
                        return Step::Progress;
                    }
                }
            }
        }
        self.phase = Phase::Live(sub);
        Step::Progress
    }

    fn live_item(&mut self, item: &Item) {
        if item.revision >= self.next {
            self.next = item.revision + 1;
            self.push_line(item.revision, item.kind, item.deleted, &item.line);
        }
    }

    /// The hub closed the subscription, after the items it holds.
    fn ended(&mut self, sub: &Subscription) {
        match sub.shared.end() {
            Some(End::TooSlow { resume_from }) => self.push_end(
                "TooSlow",
                "This client did not keep up with the changes; resume from resumeFrom",
                resume_from,
            ),
            Some(End::Rewind) => {
                let seen = sub.shared.seen.load(Ordering::Acquire);
                self.next = self.next.max(seen + 1);
                self.phase = Phase::CatchUp(None);
            }
            Some(End::Closed) | None => self.phase = Phase::Done,
        }
    }

    /// How long to wait for a change before a heartbeat is due.
    fn idle_wait(&self) -> Duration {
        let every = match (self.heartbeat, self.sse) {
            (Some(h), true) => h.min(SSE_KEEPALIVE),
            (Some(h), false) => h,
            (None, true) => SSE_KEEPALIVE,
            (None, false) => Duration::from_secs(3600),
        };
        every.saturating_sub(self.last_write.elapsed())
    }

    /// Whether a bookmark is due now; writes an SSE comment if only that is.
    fn heartbeat_due(&mut self) -> bool {
        let idle = self.last_write.elapsed();
        if self.heartbeat.is_some_and(|h| idle >= h) {
            return true;
        }
        if self.sse && idle >= SSE_KEEPALIVE {
            self.out.extend_from_slice(b": keepalive\n\n");
        }
        false
    }

    fn push_item(&mut self, e: &Entry, deleted: bool) {
        let mut line = String::with_capacity(e.entity.get().len() + 64);
        e.write_item(deleted, &mut line);
        self.push_line(e.revision, e.kind, deleted, line.as_bytes());
    }

    fn push_line(&mut self, revision: u64, kind: Kind, deleted: bool, line: &[u8]) {
        self.state.metrics.stream_items_sent.inc();
        let event = if deleted { "deleted" } else { kind.as_str() };
        self.frame(Some(revision), event, line);
    }

    fn push_bookmark(&mut self, revision: u64) {
        let line = format!(r#"{{"bookmark":{{"entityVersion":"{revision}"}}}}"#);
        self.frame(Some(revision), "bookmark", line.as_bytes());
    }

    /// Writes the final error line and ends the stream.
    fn push_end(&mut self, code: &str, message: &str, resume_from: u64) {
        let line = serde_json::json!({"error": {
            "code": code, "message": message, "resumeFrom": resume_from.to_string(),
        }})
        .to_string();
        self.frame(None, "error", line.as_bytes());
        self.phase = Phase::Done;
    }

    fn frame(&mut self, id: Option<u64>, event: &str, data: &[u8]) {
        if self.sse {
            let mut head = String::new();
            if let Some(id) = id {
                let _ = writeln!(head, "id: {id}");
            }
            let _ = write!(head, "event: {event}\ndata: ");
            self.out.extend_from_slice(head.as_bytes());
            self.out.extend_from_slice(data);
            self.out.extend_from_slice(b"\n\n");
        } else {
            self.out.extend_from_slice(data);
            self.out.push(b'\n');
        }
    }
}
