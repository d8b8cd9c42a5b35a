//! A list answer written from a snapshot in pieces, so that a large one is
//! streamed (chunked) while it is written instead of being assembled whole:
//! memory per request stays at one piece, and the client reads from the
//! first piece on. A listing that fits in the first piece is sent with a
//! `Content-Length` as before.
//!
//! A `cluster` filter does not scan other clusters' entities: the view is
//! ordered by cluster ARN, so the walk jumps past each cluster whose name
//! does not match, and stops after the cluster a full ARN names.

use super::query::{Cursor, Filter};
use super::State;
use actix_web::web;
use actors::arn::ClusterRef;
use actors::model::{Key, Kind};
use actors::view::Snapshot;
use bytes::Bytes;
use std::fmt::Write as _;
use std::ops::Bound;

/// Bytes written before a piece is handed to the connection.
pub const PIECE: usize = 256 * 1024;

/// Where an entity of a cluster lies relative to the `cluster` filter.
enum Place {
    In,
    /// In a cluster whose name does not match: jump past it.
    OtherCluster,
    /// Past the one cluster a full ARN names: nothing more can match.
    Past,
}

/// Entities read from the store per window of a listing of the past.
const WINDOW: usize = 500;

/// Where a listing of the past reads its entities: the store's state at
/// `revision`, a window at a time ([`actors::store::Store::state_page`]),
/// so that its memory is one window's, however long the list.
struct Past {
    revision: u64,
    cluster: Option<String>,
    /// The store may hold more after the window.
    more: bool,
    /// The window is read to its end: the next one is due.
    due: bool,
}

pub struct Listing {
    kind: Kind,
    snap: Snapshot,
    filter: Filter,
    from: Bound<Key>,
    /// Items still allowed by `limit`.
    left: usize,
    written: usize,
    /// The last item written by an earlier piece.
    last: Option<Key>,
    finished: bool,
    /// The `nextToken` scope of a listing of the past ([`super::history`]).
    scope: Option<String>,
    past: Option<Past>,
    state: web::Data<State>,
}

impl Listing {
    pub fn new(
        kind: Kind,
        snap: Snapshot,
        filter: Filter,
        token: Option<Cursor>,
        limit: Option<usize>,
        state: web::Data<State>,
    ) -> Listing {
        let from = match (token, &filter.cluster) {
            (Some(t), _) => Bound::Excluded(t.after),
            (None, Some(ClusterRef::Arn(a))) => Bound::Included(Key {
                cluster_arn: a.clone(),
                arn: String::new(),
            }),
            _ => Bound::Unbounded,
        };
        Listing {
            kind,
            snap,
            filter,
            from,
            left: limit.unwrap_or(usize::MAX),
            written: 0,
            last: None,
            finished: false,
            scope: None,
            past: None,
            state,
        }
    }

    /// A listing of the state at `revision` (of `cluster` or of all), read
    /// from the store window by window; its snapshot holds the window.
    pub fn of_the_past(mut self, revision: u64, cluster: Option<String>) -> Listing {
        self.snap = Snapshot::at(revision);
        self.past = Some(Past {
            revision,
            cluster,
            more: true,
            due: true,
        });
        self
    }

    fn window_due(&self) -> bool {
        self.past.as_ref().is_some_and(|p| p.due)
    }

    /// Reads the next window of a listing of the past, from `from` on.
    async fn next_window(&mut self) -> Result<(), actors::store::Error> {
        let Some(p) = self.past.as_mut() else {
            return Ok(());
        };
        let page = self
            .state
            .reader
            .state_page(
                p.revision,
                self.kind,
                p.cluster.clone(),
                self.from.clone(),
                WINDOW,
            )
            .await?;
        let mut snap = Snapshot::at(p.revision);
        for e in page.entries {
            snap.insert(e);
        }
        p.more = page.more;
        p.due = false;
        self.snap = snap;
        Ok(())
    }

    /// As [`Listing::fill`], reading the windows of a listing of the past
    /// as it goes.
    pub async fn fill_all(
        &mut self,
        out: &mut String,
        budget: usize,
    ) -> Result<(), actors::store::Error> {
        loop {
            if self.window_due() {
                self.next_window().await?;
            }
            self.fill(out, budget);
            if !self.window_due() {
                return Ok(());
            }
        }
    }

    /// A listing of a snapshot of the past, whose pages `scope` names.
    pub fn scoped(mut self, scope: Option<String>) -> Listing {
        self.scope = scope;
        self
    }

    pub fn finished(&self) -> bool {
        self.finished
    }

    fn place(&self, cluster_arn: &str) -> Place {
        match &self.filter.cluster {
            _ if !self.filter.in_place(cluster_arn) => match &self.filter.cluster {
                Some(ClusterRef::Arn(_)) => Place::Past,
                _ => Place::OtherCluster,
            },
            None => Place::In,
            Some(c) if c.matches(cluster_arn) => Place::In,
            Some(ClusterRef::Name(_)) => Place::OtherCluster,
            Some(ClusterRef::Arn(_)) => Place::Past,
        }
    }

    /// Appends items to `out` until it holds `budget` bytes or the listing
    /// ends; at the end, also the list's closing part. A listing of the past
    /// stops at the end of its window when the store holds more
    /// ([`Listing::fill_all`] reads the next one).
    pub fn fill(&mut self, out: &mut String, budget: usize) {
        let map = self.snap.of(self.kind).clone();
        while !self.finished && out.len() < budget && !self.window_due() {
            // Where the next pass starts; `None` when the walk is over.
            let mut next = None;
            let mut more = false;
            let mut last = None;
            // Whether the walk stopped before the end of the map.
            let mut stopped = false;
            // The cluster last judged, and whether it matched.
            let mut judged: Option<(&str, bool)> = None;
            for (k, e) in map.range((self.from.clone(), Bound::Unbounded)) {
                let inside = match judged {
                    Some((c, ok)) if c == e.cluster_arn => ok,
                    _ => match self.place(&e.cluster_arn) {
                        Place::In => {
                            judged = Some((&e.cluster_arn, true));
                            true
                        }
                        Place::OtherCluster => {
                            next = Some(Bound::Included(Key::past(&e.cluster_arn)));
                            stopped = true;
                            break;
                        }
                        Place::Past => {
                            stopped = true;
                            break;
                        }
                    },
                };
                if !inside || !self.filter.matches_besides_cluster(e) {
                    continue;
                }
                if self.left == 0 {
                    more = true;
                    stopped = true;
                    break;
                }
                if self.written > 0 {
                    out.push(',');
                }
                e.write_item(false, out);
                self.written += 1;
                self.left -= 1;
                last = Some(k);
                if out.len() >= budget {
                    next = Some(Bound::Excluded(k.clone()));
                    stopped = true;
                    break;
                }
            }
            if let Some(k) = last {
                self.last = Some(k.clone());
            }
            if !stopped && self.past.as_ref().is_some_and(|p| p.more) {
                // The window is read: the next starts after its last entity
                // (or where a jump past a cluster already points).
                if let Some((end, _)) = map.get_max() {
                    if actors::store::from_on(end, &self.from) {
                        self.from = Bound::Excluded(end.clone());
                    }
                }
                if let Some(p) = self.past.as_mut() {
                    p.due = true;
                }
                return;
            }
            match next {
                Some(from) if !more => self.from = from,
                _ => self.finish(out, more),
            }
        }
    }

    fn finish(&mut self, out: &mut String, more: bool) {
        self.finished = true;
        let _ = write!(
            out,
            r#"],"metadata":{{"entityVersion":"{}"}}"#,
            self.snap.revision
        );
        if let (true, Some(after)) = (more, self.last.take()) {
            let scope = self.scope.as_deref();
            let token = Cursor {
                scope: scope.unwrap_or(self.kind.as_str()).into(),
                revision: self.snap.revision,
                after,
            };
            // A listing of the past reads its pages from the store again.
            if self.past.is_none() {
                self.state.pages.put(&self.snap);
            }
            let _ = write!(out, r#","nextToken":"{}""#, token.encode());
        }
        out.push('}');
    }

    /// The next piece of a streamed listing; `None` once it is all sent.
    /// A store that fails a listing of the past midway ends the body short
    /// (its status was sent with the first piece).
    pub async fn next_piece(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.finished {
            return None;
        }
        let mut out = String::with_capacity(PIECE + 8 * 1024);
        if let Err(e) = self.fill_all(&mut out, PIECE).await {
            self.finished = true;
            return Some(Err(std::io::Error::other(e.to_string())));
        }
        Some(Ok(Bytes::from(out)))
    }
}
