//! `GET /v1/clusters`: every cluster the service knows (it holds something
//! of it, or a reconciler runs for it), with its account, region and counts,
//! from one snapshot of the view; filters `account` and `region`; paged as
//! the other lists are. A cluster whose reconcile fails now says why
//! (`reconcileError`).

use super::query::{self, Cursor, Filter, Params};
use super::{json, Error, State};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actors::accounts::Place;
use actors::model::{Key, Kind};
use actors::reader::Health;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};

/// The `nextToken` scope of this listing, and of one at a past revision.
const SCOPE: &str = "clusters";
const PAST: &str = "clusters@";

/// What the view holds of one cluster.
#[derive(Default)]
struct Counts {
    /// Tasks by `lastStatus`.
    tasks: BTreeMap<String, u64>,
    instances: u64,
    services: u64,
}

/// `GET /v1/clusters`.
pub(super) async fn list(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, Error> {
    let params = Params::parse(
        req.query_string(),
        &["account", "region", "limit", "nextToken", "at"],
    )?;
    let (account, region) = query::place(&params)?;
    let filter = Filter {
        account,
        region,
        ..Filter::default()
    };
    let limit = query::limit(&params)?.unwrap_or(usize::MAX);
    let at = super::history::at(&params, &state).await?;
    let token = params
        .get("nextToken")
        .map(|t| {
            Cursor::decode(t, SCOPE)
                .or_else(|| Cursor::decode(t, PAST))
                .ok_or_else(super::entities::invalid_token)
        })
        .transpose()?;
    let past = match (&token, at) {
        (Some(t), _) if t.scope == PAST => Some(t.revision),
        (Some(_), _) => None,
        (None, at) => at,
    };
    let snap = match past {
        Some(r) => super::history::snapshot_of_all(r, &state).await?,
        None => super::entities::snapshot_for(token.as_ref(), &state)?,
    };
    let after = token.as_ref().map(|t| t.after.cluster_arn.as_str());
    let health = state.reader.health();

    let mut clusters: BTreeMap<&str, Counts> = BTreeMap::new();
    // A cluster a reconciler runs for is known even while it holds nothing.
    for c in health.reconciled.iter().filter(|c| c.starts_with("arn:")) {
        clusters.entry(c).or_default();
    }
    for kind in Kind::ALL {
        for e in snap.of(kind).values() {
            let c = clusters.entry(&e.cluster_arn).or_default();
            match kind {
                Kind::Task => *c.tasks.entry(e.status.clone()).or_default() += 1,
                Kind::Instance => c.instances += 1,
                Kind::Service => c.services += 1,
            }
        }
    }
    // Reconcilers are known by ARN when discovered, by name when configured.
    let (by_arn, by_name): (HashSet<&str>, HashSet<&str>) = health
        .reconciled
        .iter()
        .map(String::as_str)
        .partition(|r| r.starts_with("arn:"));
    let mut items = Vec::new();
    let mut last = None;
    let mut more = false;
    let chosen = clusters
        .iter()
        .filter(|(arn, _)| after.is_none_or(|a| **arn > a) && filter.in_place(arn));
    for (arn, counts) in chosen {
        if items.len() == limit {
            more = true;
            break;
        }
        let name = actors::arn::cluster_name(arn).unwrap_or_default();
        let reconciled = by_arn.contains(arn) || by_name.contains(name);
        let mut it = item(arn, counts, reconciled);
        if let Some(e) = reconcile_error(&health, arn, name) {
            it["reconcileError"] = json!(e);
        }
        items.push(it);
        last = Some(*arn);
    }
    let mut body = Map::new();
    body.insert("items".into(), Value::Array(items));
    body.insert(
        "metadata".into(),
        json!({"entityVersion": snap.revision.to_string()}),
    );
    if let (true, Some(last)) = (more, last) {
        let scope = past.map(|_| PAST);
        state.pages.put_scoped(&snap, scope);
        let token = Cursor {
            scope: scope.unwrap_or(SCOPE).into(),
            revision: snap.revision,
            after: Key {
                cluster_arn: last.to_owned(),
                arn: String::new(),
            },
        };
        body.insert("nextToken".into(), json!(token.encode()));
    }
    Ok(json(StatusCode::OK, Value::Object(body).to_string()))
}

/// Why the cluster `arn` (named `name`) is not reconciled now: its sweeps
/// fail, or the clusters of its account and region cannot be listed.
fn reconcile_error<'h>(health: &'h Health, arn: &str, name: &str) -> Option<&'h String> {
    let errors = &health.reconcile_errors;
    let place = Place::of_arn(arn);
    errors.get(arn).or_else(|| errors.get(name)).or_else(|| {
        let mut of_place = health.discovery_errors.iter();
        of_place.find(|(p, _)| p.holds(&place)).map(|(_, e)| e)
    })
}

fn item(arn: &str, counts: &Counts, reconciled: bool) -> Value {
    let (region, account) = actors::arn::region_and_account(arn).unwrap_or_default();
    json!({
        "clusterARN": arn,
        "clusterName": actors::arn::cluster_name(arn).unwrap_or_default(),
        "account": account,
        "region": region,
        "tasks": counts.tasks,
        "instances": counts.instances,
        "services": counts.services,
        "reconciled": reconciled,
    })
}
