//! Lists and describes of every kind (tasks, container instances,
//! services), read from one snapshot of the view; pages of one listing come
//! from the snapshot of its first page. What differs between kinds is in
//! [`About`].

use super::history;
use super::listing::{self, Listing};
use super::query::{self, Cursor, Filter, Params};
use super::{json, Error, State};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actors::arn::{Arn, ClusterRef, Resource};
use actors::model::{Key, Kind};
use actors::view::Snapshot;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Snapshots that issued a `nextToken`, so later pages come from the same one.
/// A snapshot of the view holds everything at its revision; one of the past
/// ([`super::history`]) holds only the part its scope names.
pub(super) struct PageCache {
    entries: Mutex<VecDeque<(Snapshot, Option<String>, Instant)>>,
}

impl PageCache {
    pub(super) fn new() -> PageCache {
        PageCache {
            entries: Mutex::new(VecDeque::new()),
        }
    }

    /// Snapshots kept for paging at most, and for how long after last use.
    const CAPACITY: usize = 32;
    const TTL: Duration = Duration::from_secs(600);
    /// Snapshots of the past kept at most.
    const PAST: usize = 2;

    pub(super) fn put(&self, snap: &Snapshot) {
        self.put_scoped(snap, None);
    }

    /// Keeps a snapshot of the past, which holds only what `scope` names.
    pub(super) fn put_scoped(&self, snap: &Snapshot, scope: Option<&str>) {
        let Ok(mut e) = self.entries.lock() else {
            return;
        };
        e.retain(|(s, sc, at)| {
            (s.revision, sc.as_deref()) != (snap.revision, scope) && at.elapsed() < Self::TTL
        });
        if e.len() >= Self::CAPACITY {
            e.pop_front();
        }
        // A snapshot of the past shares nothing with the view (its entries
        // were read from the store): few are kept; one can be read again.
        let past = e.iter().filter(|(_, sc, _)| sc.is_some()).count();
        if scope.is_some() && past >= Self::PAST {
            if let Some(i) = e.iter().position(|(_, sc, _)| sc.is_some()) {
                e.remove(i);
            }
        }
        e.push_back((snap.clone(), scope.map(str::to_owned), Instant::now()));
    }

    pub(super) fn get(&self, revision: u64) -> Option<Snapshot> {
        self.find(revision, None)
    }

    pub(super) fn get_scoped(&self, revision: u64, scope: &str) -> Option<Snapshot> {
        self.find(revision, Some(scope))
    }

    fn find(&self, revision: u64, scope: Option<&str>) -> Option<Snapshot> {
        let mut e = self.entries.lock().ok()?;
        let i = e.iter().position(|(s, sc, at)| {
            (s.revision, sc.as_deref()) == (revision, scope) && at.elapsed() < Self::TTL
        })?;
        let (snap, scope, _) = e.remove(i)?;
        e.push_back((snap.clone(), scope, Instant::now()));
        Some(snap)
    }
}

/// What the API says about a kind.
pub(super) struct About {
    /// Its path segment: `/v1/{plural}`, `/v1/stream/{plural}`.
    pub plural: &'static str,
    /// The filter parameters of its lists and streams.
    pub filters: &'static [&'static str],
    /// Its describe's 404: code and message.
    pub not_found: (&'static str, &'static str),
    /// What its ARNs name, and what to call it in an error message.
    pub arn: Resource,
    pub what: &'static str,
}

/// What the API says about `kind`.
pub(super) fn about(kind: Kind) -> About {
    match kind {
        Kind::Task => About {
            plural: "tasks",
            filters: query::TASK_FILTERS,
            not_found: ("TaskNotFound", "Task not found"),
            arn: Resource::Task,
            what: "task",
        },
        Kind::Instance => About {
            plural: "instances",
            filters: query::INSTANCE_FILTERS,
            not_found: ("InstanceNotFound", "Instance not found"),
            arn: Resource::ContainerInstance,
            what: "container instance",
        },
        Kind::Service => About {
            plural: "services",
            filters: query::SERVICE_FILTERS,
            not_found: ("ServiceNotFound", "Service not found"),
            arn: Resource::Service,
            what: "service",
        },
    }
}

/// `GET /v1/{plural}`.
pub(super) async fn list(
    kind: Kind,
    req: HttpRequest,
    state: web::Data<State>,
) -> Result<HttpResponse, Error> {
    let req = &req;
    let mut allowed = about(kind).filters.to_vec();
    allowed.extend(["limit", "nextToken", "at"]);
    let params = Params::parse(req.query_string(), &allowed)?;
    let filter = Filter::parse(kind, &params)?;
    let limit = query::limit(&params)?;
    let at = history::at(&params, &state).await?;
    let token = params
        .get("nextToken")
        .map(|t| Cursor::of_list(t, kind))
        .transpose()?;

    let of_past = token.as_ref().is_some_and(|t| t.scope != kind.as_str());
    let mut listing = match (at, of_past) {
        (Some(_), _) | (None, true) => {
            let (revision, scope, cluster) =
                history::past(kind, &filter, at.unwrap_or(0), token.as_ref(), &state)?;
            Listing::new(
                kind,
                Snapshot::default(),
                filter,
                token,
                limit,
                state.clone(),
            )
            .scoped(Some(scope))
            .of_the_past(revision, cluster)
        }
        (None, false) => {
            let snap = snapshot_for(token.as_ref(), &state)?;
            Listing::new(kind, snap, filter, token, limit, state.clone())
        }
    };
    let mut first = String::with_capacity(8 * 1024);
    first.push_str(r#"{"items":["#);
    listing
        .fill_all(&mut first, listing::PIECE)
        .await
        .map_err(history::store_error)?;
    if listing.finished() {
        return Ok(json(StatusCode::OK, first));
    }
    let body = futures_util::stream::unfold(
        (Some(Bytes::from(first)), listing),
        |(first, mut listing)| async move {
            let piece = match first {
                Some(f) => Ok(f),
                None => listing.next_piece().await?,
            };
            Some((piece, (None, listing)))
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .streaming(body))
}

/// The snapshot a listing's page comes from: the current one for a first
/// page, the one of the first page for the others.
pub(super) fn snapshot_for(token: Option<&Cursor>, state: &State) -> Result<Snapshot, Error> {
    let Some(t) = token else {
        return state.snapshot();
    };
    if let Some(s) = state.pages.get(t.revision) {
        return Ok(s);
    }
    let current = state.snapshot()?;
    if current.revision != t.revision {
        return Err(Error::bad_request(
            "InvalidNextToken",
            "Invalid nextToken: the listing it belongs to has expired; list again".into(),
        ));
    }
    Ok(current)
}

/// A `nextToken` that is not one of this listing's.
pub(super) fn invalid_token() -> Error {
    Error::bad_request(
        "InvalidNextToken",
        "Invalid nextToken: pass the nextToken of the previous page unchanged".into(),
    )
}

pub(super) fn decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// Splits the raw path after the prefix into `{cluster}` and `{arn}`.
///
/// `{cluster}` is a name or a URL-encoded cluster ARN; a raw cluster ARN (whose
/// `/` was not encoded) is accepted too. `{arn}` may be raw or encoded.
pub(super) fn split_cluster_and_arn(rest: &str) -> Option<(String, String)> {
    let (first, tail) = rest.split_once('/')?;
    let first = decode(first)?;
    if first.starts_with("arn:") && first.ends_with(":cluster") {
        let (name, tail) = tail.split_once('/')?;
        return Some((format!("{first}/{}", decode(name)?), decode(tail)?));
    }
    Some((first, decode(tail)?))
}

/// `GET /v1/{plural}/{cluster}/{arn}` (for a service, `{arn}` may be its name).
pub(super) async fn describe(
    kind: Kind,
    req: HttpRequest,
    state: web::Data<State>,
) -> Result<HttpResponse, Error> {
    let about = about(kind);
    let not_found = || Error::new(StatusCode::NOT_FOUND, about.not_found.0, about.not_found.1);
    let prefix = format!("/v1/{}/", about.plural);
    let rest = req.uri().path().strip_prefix(&prefix).unwrap_or_default();
    let (rest, of_history, of_timeline) = match (
        rest.strip_suffix("/history"),
        rest.strip_suffix("/timeline"),
    ) {
        (Some(r), _) => (r, true, false),
        (None, Some(r)) if kind == Kind::Service => (r, true, true),
        _ => (rest, false, false),
    };
    if !of_history {
        Params::parse(req.query_string(), &[])?;
    }
    let Some((cluster, arn)) = split_cluster_and_arn(rest) else {
        return Err(Error::new(StatusCode::NOT_FOUND, "NotFound", "Not found"));
    };
    let cluster = query::cluster(&cluster)?;
    let snap = state.snapshot()?;
    // A cluster name in several places says where only with a full ARN.
    if let (ClusterRef::Name(name), false) = (&cluster, arn.starts_with("arn:")) {
        let named = snap
            .clusters()
            .into_iter()
            .filter(|c| actors::arn::cluster_name(c) == Some(name.as_str()))
            .count();
        if named > 1 {
            return Err(Error::bad_request(
                "AmbiguousCluster",
                format!("cluster name {name} is in several accounts or regions; use its ARN"),
            ));
        }
    }
    let by_name = kind == Kind::Service && !arn.starts_with("arn:");
    let key = if by_name {
        if !actors::arn::is_valid_cluster_name(&arn) {
            return Err(Error::bad_request(
                "InvalidArn",
                format!("Invalid service ARN or name: {}", query::clip(&arn, 200)),
            ));
        }
        let stored = snap
            .of(kind)
            .values()
            .find(|e| cluster.matches(&e.cluster_arn) && e.service_name() == arn)
            .map(|e| e.key());
        match (stored, of_history) {
            (Some(k), _) => k,
            // Gone from the view: its history is under the ARN it had.
            (None, true) => service_key(&cluster, &arn, &snap).ok_or_else(not_found)?,
            (None, false) => return Err(not_found()),
        }
    } else {
        let parsed = Arn::parse(&arn, about.arn).map_err(|_| {
            Error::bad_request(
                "InvalidArn",
                format!("Invalid {} ARN: {}", about.what, query::clip(&arn, 200)),
            )
        })?;
        Key {
            cluster_arn: cluster.resolve(&parsed),
            arn: arn.clone(),
        }
    };
    if of_timeline {
        return history::timeline(key, req.query_string(), state).await;
    }
    if of_history {
        return history::versions(kind, key, req.query_string(), state).await;
    }
    let entry = snap.of(kind).get(&key);
    let entry = entry.ok_or_else(not_found)?;
    let mut body = String::with_capacity(entry.entity.get().len() + 64);
    entry.write_item(false, &mut body);
    Ok(json(StatusCode::OK, body))
}

/// The key a service named `name` in `cluster` has when its ARN is in the
/// long format: the cluster's ARN (given, or the one cluster of the view
/// with that name) with `service/{cluster}/{name}`.
fn service_key(cluster: &ClusterRef, name: &str, snap: &Snapshot) -> Option<Key> {
    let cluster_arn = match cluster {
        ClusterRef::Arn(a) => a.clone(),
        ClusterRef::Name(n) => snap
            .clusters()
            .into_iter()
            .find(|c| actors::arn::cluster_name(c) == Some(n.as_str()))?,
    };
    let (prefix, cluster_name) = cluster_arn.rsplit_once(":cluster/")?;
    Some(Key {
        arn: format!("{prefix}:service/{cluster_name}/{name}"),
        cluster_arn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cluster_and_arn_in_every_spelling() {
        let arn = "arn:aws:ecs:r:1:task/c/t";
        let cl = "arn:aws:ecs:r:1:cluster/c";
        let want = Some(("c".to_owned(), arn.to_owned()));
        assert_eq!(split_cluster_and_arn(&format!("c/{arn}")), want);
        assert_eq!(
            split_cluster_and_arn("c/arn:aws:ecs:r:1:task%2Fc%2Ft"),
            want
        );
        let want = Some((cl.to_owned(), arn.to_owned()));
        assert_eq!(
            split_cluster_and_arn(&format!("arn:aws:ecs:r:1:cluster%2Fc/{arn}")),
            want
        );
        assert_eq!(split_cluster_and_arn(&format!("{cl}/{arn}")), want);
        assert_eq!(split_cluster_and_arn("c"), None);
        assert_eq!(split_cluster_and_arn("c/%ff"), None);
    }
}
