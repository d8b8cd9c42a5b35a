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
            state,
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
    /// ends; at the end, also the list's closing part.
    pub fn fill(&mut self, out: &mut String, budget: usize) {
        let map = self.snap.of(self.kind).clone();
        while !self.finished && out.len() < budget {
            // Where the next pass starts; `None` when the walk is over.
            let mut next = None;
            let mut more = false;
            let mut last = None;
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
                            break;
                        }
                        Place::Past => break,
                    },
                };
                if !inside || !self.filter.matches_besides_cluster(e) {
                    continue;
                }
                if self.left == 0 {
                    more = true;
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
                    break;
                }
            }
            if let Some(k) = last {
                self.last = Some(k.clone());
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
            self.state.pages.put_scoped(&self.snap, scope);
            let _ = write!(out, r#","nextToken":"{}""#, token.encode());
        }
        out.push('}');
    }

    /// The next piece of a streamed listing; `None` once it is all sent.
    pub fn next_piece(&mut self) -> Option<Bytes> {
        if self.finished {
            return None;
        }
        let mut out = String::with_capacity(PIECE + 8 * 1024);
        self.fill(&mut out, PIECE);
        Some(Bytes::from(out))
    }
}
