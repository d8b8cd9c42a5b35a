//! History (history.md): `at=` on every list (the state as it was at a
//! revision or a moment, read from the store's history into a snapshot that
//! the lists page and filter as they do the live one), each entity's
//! retained versions (`/v1/{plural}/{cluster}/{arn}/history`), and a
//! service's timeline (`/v1/services/{cluster}/{service}/timeline`, derived
//! by [`actors::timeline`]).

use super::entities::{about, invalid_token};
use super::query::{self, Cursor, Filter, Params};
use super::{json, Error, State};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use actors::arn::ClusterRef;
use actors::model::{Key, Kind};
use actors::store;
use actors::time::{format_ms, now_ms, parse_ms};
use actors::view::Snapshot;
use std::fmt::Write as _;

/// The answer for a read of the history that failed.
pub(super) fn store_error(e: store::Error) -> Error {
    match e {
        store::Error::Compacted => Error::new(
            StatusCode::GONE,
            "HistoryExpired",
            "History before the requested point is no longer kept",
        ),
        _ => Error::unavailable(),
    }
}

fn invalid_at(why: String) -> Error {
    Error::bad_request("InvalidAt", format!("Invalid at: {why}"))
}

/// The revision `at=` asks for (an RFC 3339 time or a revision number);
/// `None` without `at`.
pub(super) async fn at(params: &Params, state: &State) -> Result<Option<u64>, Error> {
    let Some(v) = params.get("at") else {
        return Ok(None);
    };
    let current = state.snapshot()?.revision;
    let reader = &state.reader;
    let kept = reader.retained().await.map_err(store_error)?;
    let expired = || {
        Error::new(
            StatusCode::GONE,
            "HistoryExpired",
            format!(
                "History before {} (revision {}) is no longer kept",
                format_ms(kept.from_ms),
                kept.revision
            ),
        )
    };
    if let Some(n) = query::whole_number(v) {
        if n > current {
            return Err(invalid_at(format!(
                "revision {n} is in the future; the store's revision is {current}"
            )));
        }
        if n < kept.revision {
            return Err(expired());
        }
        return Ok(Some(n));
    }
    let Some(ms) = parse_ms(v) else {
        return Err(invalid_at(format!(
            "expected an RFC 3339 time or a revision number, got {}",
            query::clip(v, 100)
        )));
    };
    if ms > now_ms() {
        return Err(invalid_at(format!("{} is in the future", format_ms(ms))));
    }
    match reader.revision_at(ms).await.map_err(store_error)? {
        Some(r) => Ok(Some(r.min(current))),
        None => Err(expired()),
    }
}

/// The `nextToken` scope of a listing of `kind` at a past revision, over
/// the cluster `part` (a cluster ARN) or every cluster (empty).
fn scope(kind: &str, part: &str) -> String {
    format!("{kind}@{part}")
}

/// The one cluster ARN a filter names, if the view tells which: reading
/// the history of one cluster is a range of the store, not a scan.
fn part_of(filter: &Filter, state: &State) -> Result<String, Error> {
    Ok(match &filter.cluster {
        Some(ClusterRef::Arn(a)) => a.clone(),
        Some(ClusterRef::Name(n)) => {
            let named: Vec<String> = state
                .snapshot()?
                .clusters()
                .into_iter()
                .filter(|c| actors::arn::cluster_name(c) == Some(n.as_str()))
                .collect();
            match <[String; 1]>::try_from(named) {
                Ok([one]) => one,
                Err(_) => String::new(),
            }
        }
        None => String::new(),
    })
}

/// The revision, token scope and cluster of a list of `kind` at a past
/// revision: the first page's (`at`) or a later one's (`token`, whose scope
/// says which). Its entities are read from the store window by window
/// ([`super::listing::Listing::of_the_past`]): the state at a retained
/// revision never changes, so every page reads it again.
pub(super) fn past(
    kind: Kind,
    filter: &Filter,
    at: u64,
    token: Option<&Cursor>,
    state: &State,
) -> Result<(u64, String, Option<String>), Error> {
    let (revision, scope) = match token {
        Some(t) => (t.revision, t.scope.clone()),
        None => (at, scope(kind.as_str(), &part_of(filter, state)?)),
    };
    let part = scope.split_once('@').map_or("", |(_, p)| p);
    let cluster = (!part.is_empty()).then(|| part.to_owned());
    Ok((revision, scope, cluster))
}

/// Every kind at a past revision (`/v1/clusters?at=`).
pub(super) async fn snapshot_of_all(revision: u64, state: &State) -> Result<Snapshot, Error> {
    let scope = scope("clusters", "");
    if let Some(s) = state.pages.get_scoped(revision, &scope) {
        return Ok(s);
    }
    let mut all = Snapshot::at(revision);
    for kind in Kind::ALL {
        let snap = state
            .reader
            .snapshot_at(revision, kind, None)
            .await
            .map_err(store_error)?;
        for e in snap.all() {
            all.insert(e.clone());
        }
    }
    Ok(all)
}

/// `GET /v1/{plural}/{cluster}/{arn}/history`: every retained version of
/// one entity, oldest first, with when this service committed it.
pub(super) async fn versions(
    kind: Kind,
    key: Key,
    query: &str,
    state: web::Data<State>,
) -> Result<HttpResponse, Error> {
    let about = about(kind);
    let params = Params::parse(query, &["since", "limit", "nextToken"])?;
    let since = since(&params)?;
    let limit = query::limit(&params)?.unwrap_or(query::MAX_LIMIT);
    let scope = format!("{}-history", kind.as_str());
    let after = params
        .get("nextToken")
        .map(|t| Cursor::decode(t, &scope).ok_or_else(invalid_token))
        .transpose()?;
    if after.as_ref().is_some_and(|t| t.after != key) {
        return Err(invalid_token());
    }
    let current = state.snapshot()?.revision;
    let kept = state.reader.retained().await.map_err(store_error)?;
    let all = state
        .reader
        .versions(kind, key.cluster_arn.clone(), key.arn.clone())
        .await
        .map_err(store_error)?;
    if all.is_empty() {
        return Err(Error::new(
            StatusCode::NOT_FOUND,
            about.not_found.0,
            about.not_found.1,
        ));
    }
    let chosen: Vec<&store::Version> = all
        .iter()
        .filter(|v| {
            since.is_none_or(|s| v.observed_at_ms >= s)
                && after.as_ref().is_none_or(|t| v.entry.revision > t.revision)
        })
        .collect();
    let page = &chosen[..chosen.len().min(limit)];
    let mut out = String::from(r#"{"items":["#);
    for (i, v) in page.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let observed = format_ms(v.observed_at_ms);
        let rev = v.entry.revision;
        if v.deleted {
            out.push_str(r#"{"deleted":true"#);
        } else {
            out.push_str(r#"{"entity":"#);
            out.push_str(v.entry.entity.get());
        }
        let _ = write!(
            out,
            r#","metadata":{{"entityVersion":"{rev}","observedAt":"{observed}"}}}}"#
        );
    }
    let next = (chosen.len() > limit).then(|| Cursor {
        scope: scope.clone(),
        revision: page.last().map_or(0, |v| v.entry.revision),
        after: key.clone(),
    });
    let _ = write!(
        out,
        r#"],"metadata":{{"entityVersion":"{current}","historyFrom":"{}"}}"#,
        format_ms(kept.from_ms)
    );
    if let Some(t) = next {
        let _ = write!(out, r#","nextToken":"{}""#, t.encode());
    }
    out.push('}');
    Ok(json(StatusCode::OK, out))
}

/// `GET /v1/services/{cluster}/{service}/timeline`: what happened to one
/// service, newest first (`since`, `limit`, `nextToken`).
pub(super) async fn timeline(
    key: Key,
    query: &str,
    state: web::Data<State>,
) -> Result<HttpResponse, Error> {
    let params = Params::parse(query, &["since", "limit", "nextToken"])?;
    let since = since(&params)?;
    let limit = query::limit(&params)?.unwrap_or(query::MAX_LIMIT);
    let after = params
        .get("nextToken")
        .map(|t| TimelineCursor::decode(t, &key).ok_or_else(invalid_token))
        .transpose()?;
    let current = state.snapshot()?.revision;
    let reader = &state.reader;
    let service = reader
        .versions(Kind::Service, key.cluster_arn.clone(), key.arn.clone())
        .await
        .map_err(store_error)?;
    let Some(name) = service.last().map(|v| v.entry.service_name().to_owned()) else {
        return Err(Error::new(
            StatusCode::NOT_FOUND,
            "ServiceNotFound",
            "Service not found",
        ));
    };
    let group = format!("service:{name}");
    let mut tasks = reader
        .versions_in(Kind::Task, key.cluster_arn.clone())
        .await
        .map_err(store_error)?;
    tasks.retain(|v| v.entry.group.as_deref() == Some(group.as_str()));
    let items = actors::timeline::of(&service, &tasks);
    let chosen: Vec<&actors::timeline::Item> = items
        .iter()
        .filter(|i| since.is_none_or(|s| i.order.at_ms >= s))
        .filter(|i| after.as_ref().is_none_or(|a| i.order < a.0))
        .collect();
    let page = &chosen[..chosen.len().min(limit)];
    let mut body = serde_json::json!({
        "items": page,
        "metadata": {"entityVersion": current.to_string()},
    });
    if let (true, Some(last)) = (chosen.len() > limit, page.last()) {
        body["nextToken"] = TimelineCursor(last.order.clone()).encode(&key).into();
    }
    Ok(json(StatusCode::OK, body.to_string()))
}

/// `since=`: an RFC 3339 time or a duration before now.
fn since(params: &Params) -> Result<Option<i64>, Error> {
    params
        .get("since")
        .map(|v| {
            query::since(v, now_ms()).ok_or_else(|| {
                Error::bad_request(
                    "InvalidSince",
                    "Invalid since: expected an RFC 3339 time or a duration such as 6h".into(),
                )
            })
        })
        .transpose()
}

/// Where the next page of a timeline starts: the last item's place.
struct TimelineCursor(actors::timeline::Order);

impl TimelineCursor {
    const SCOPE: &'static str = "timeline";

    fn encode(&self, key: &Key) -> String {
        let o = &self.0;
        Cursor {
            scope: Self::SCOPE.into(),
            revision: o.revision,
            after: Key {
                cluster_arn: key.arn.clone(),
                arn: format!("{} {}", o.at_ms, o.about),
            },
        }
        .encode()
    }

    fn decode(s: &str, key: &Key) -> Option<TimelineCursor> {
        let c = Cursor::decode(s, Self::SCOPE)?;
        (c.after.cluster_arn == key.arn).then_some(())?;
        let (at, about) = c.after.arn.split_once(' ')?;
        Some(TimelineCursor(actors::timeline::Order {
            at_ms: at.parse().ok()?,
            revision: c.revision,
            about: about.to_owned(),
        }))
    }
}
