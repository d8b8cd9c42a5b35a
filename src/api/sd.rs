//! `GET /v1/sd/prometheus`: Prometheus HTTP service discovery (issue 20).
//! One target per RUNNING task and exposed port, reachable by IP: an
//! `awsvpc` task at its network interface's address; a `bridge` or `host`
//! task at its container instance's `private-ip` attribute and the host
//! port. Filters: `cluster`, `service`, `family`, and `port` (the container
//! port to expose; without it, every bound port), `account`, `region`.

use super::query::{self, Params};
use super::{json, Error, State};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actors::model::{family_of, Entry, Key, Kind};
use serde_json::{json, Map, Value};

const PARAMS: &[&str] = &["cluster", "account", "region", "service", "family", "port"];

/// The task definition's revision (`7` of `…:task-definition/web:7`).
fn revision_of(td: &str) -> &str {
    td.rsplit_once(':').map_or("", |(_, r)| r)
}

fn group(target: String, labels: &Map<String, Value>, container: &str) -> Value {
    let mut labels = labels.clone();
    labels.insert("__meta_ecs_container".into(), json!(container));
    json!({"targets": [target], "labels": labels})
}

/// The targets of one RUNNING task.
fn targets(e: &Entry, port: Option<i64>, instance_address: Option<&str>, out: &mut Vec<Value>) {
    let Some(task) = e.task_index() else { return };
    let td = e.task_definition.as_deref().unwrap_or_default();
    let mut labels = Map::new();
    let (region, account) = actors::arn::region_and_account(&e.cluster_arn).unwrap_or_default();
    for (name, value) in [
        ("__meta_ecs_account", account),
        ("__meta_ecs_region", region),
        (
            "__meta_ecs_cluster",
            actors::arn::cluster_name(&e.cluster_arn).unwrap_or_default(),
        ),
        ("__meta_ecs_service", e.service().unwrap_or("")),
        ("__meta_ecs_task_arn", e.arn.as_str()),
        ("__meta_ecs_family", family_of(td).unwrap_or_default()),
        ("__meta_ecs_revision", revision_of(td)),
        (
            "__meta_ecs_launch_type",
            e.launch_type.as_deref().unwrap_or_default(),
        ),
        (
            "__meta_ecs_availability_zone",
            task.availability_zone.as_deref().unwrap_or_default(),
        ),
    ] {
        labels.insert(name.into(), json!(value));
    }
    let containers = &task.containers;
    if let Some(ip) = &e.address {
        // awsvpc: the task's own address, the container port. When the task
        // reports its ports, `port` must be one of them; when it reports
        // none (usual for awsvpc events), `port` is taken on trust.
        let exposing = containers
            .iter()
            .find(|c| port.is_none_or(|p| c.ports.iter().any(|(cp, _)| *cp == p)));
        let reports_ports = containers.iter().any(|c| !c.ports.is_empty());
        if port.is_some() && reports_ports && exposing.is_none() {
            return;
        }
        let port = port.or_else(|| exposing.and_then(|c| c.ports.first().map(|(cp, _)| *cp)));
        let container = exposing.or(containers.first()).map_or("", |c| &c.name);
        if let Some(p) = port {
            out.push(group(format!("{ip}:{p}"), &labels, container));
        }
        return;
    }
    let Some(ip) = instance_address else { return };
    for c in containers {
        for &(container_port, host_port) in &c.ports {
            if port.is_some_and(|p| p != container_port) {
                continue;
            }
            if let Some(hp) = host_port {
                out.push(group(format!("{ip}:{hp}"), &labels, &c.name));
            }
        }
    }
}

/// `GET /v1/sd/prometheus`.
pub(super) async fn prometheus(
    req: HttpRequest,
    state: web::Data<State>,
) -> Result<HttpResponse, Error> {
    let p = Params::parse(req.query_string(), PARAMS)?;
    // The task filters of `/v1/tasks` (of them, `cluster`, `service` and
    // `family` are accepted here), on running tasks.
    let filter = query::Filter {
        status: Some("RUNNING".into()),
        ..query::Filter::parse(Kind::Task, &p)?
    };
    let port = p
        .value("port")
        .map(|v| match query::whole_number(v) {
            Some(n) if (1..=65_535).contains(&n) => Ok(n as i64),
            _ => Err(Error::bad_request(
                "InvalidParameter",
                "Invalid port: expected a port number from 1 to 65535".into(),
            )),
        })
        .transpose()?;
    let snap = state.snapshot()?;
    let mut out = Vec::new();
    for e in snap.of(Kind::Task).values().filter(|e| filter.matches(e)) {
        let instance = e.container_instance.as_ref().and_then(|ci| {
            snap.of(Kind::Instance)
                .get(&Key {
                    cluster_arn: e.cluster_arn.clone(),
                    arn: ci.clone(),
                })
                .and_then(|i| i.address.clone())
        });
        targets(e, port, instance.as_deref(), &mut out);
    }
    Ok(json(StatusCode::OK, Value::Array(out).to_string()))
}
