//! A service's timeline (history.md): one ordered list of what happened to
//! it, derived from the retained versions of the service and of its tasks —
//! its deployments appearing or changing state, its new service events, and
//! its tasks reaching RUNNING and STOPPED.

use crate::model::{Service, Task};
use crate::store::Version;
use crate::time::{format_ms, parse_ms};
use serde::Serialize;

/// One thing that happened, at `at`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    /// RFC 3339 UTC ms: ECS's own time where the change carries one, else
    /// when this service observed it.
    pub at: String,
    /// The revision whose version showed it.
    pub entity_version: String,
    #[serde(flatten)]
    pub what: What,
    /// Its place in the timeline: `at`, the revision, and a tiebreak.
    #[serde(skip)]
    pub order: Order,
}

/// Where an item sorts: by time, then revision, then what it is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Order {
    pub at_ms: i64,
    pub revision: u64,
    pub about: String,
}

/// What happened.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum What {
    /// A deployment appeared, or its `status` or `rolloutState` changed.
    #[serde(rename_all = "camelCase")]
    Deployment {
        id: Option<String>,
        #[serde(rename = "taskDefinitionARN")]
        task_definition_arn: Option<String>,
        status: Option<String>,
        rollout_state: Option<String>,
        rollout_state_reason: Option<String>,
        desired_count: Option<i64>,
        pending_count: Option<i64>,
        running_count: Option<i64>,
        failed_tasks: Option<i64>,
    },
    /// A new entry in the service's `events`.
    ServiceEvent {
        id: Option<String>,
        message: Option<String>,
    },
    /// A task of the service reached RUNNING.
    #[serde(rename_all = "camelCase")]
    TaskStarted {
        #[serde(rename = "taskARN")]
        task_arn: String,
        #[serde(rename = "taskDefinitionARN")]
        task_definition_arn: Option<String>,
        started_by: Option<String>,
    },
    /// A task of the service reached STOPPED.
    #[serde(rename_all = "camelCase")]
    TaskStopped {
        #[serde(rename = "taskARN")]
        task_arn: String,
        #[serde(rename = "taskDefinitionARN")]
        task_definition_arn: Option<String>,
        stop_code: Option<String>,
        stopped_reason: Option<String>,
        containers: Vec<Exit>,
        /// Whether it stopped failed (the rule of [`crate::model::Entry::failed`]).
        failed: bool,
    },
}

/// How a container of a stopped task ended.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Exit {
    pub name: Option<String>,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
}

/// The timeline of a service from its versions and those of its tasks
/// (each in (ARN, revision) order), newest first.
pub fn of(service: &[Version], tasks: &[Version]) -> Vec<Item> {
    let mut items = Vec::new();
    let mut prev: Option<Service> = None;
    for v in service.iter().filter(|v| !v.deleted) {
        let Ok(now) = serde_json::from_str::<Service>(v.entry.entity.get()) else {
            continue;
        };
        service_changes(prev.as_ref(), &now, v, &mut items);
        prev = Some(now);
    }
    let mut last: Option<(&str, String)> = None;
    for v in tasks.iter().filter(|v| !v.deleted) {
        let Ok(task) = serde_json::from_str::<Task>(v.entry.entity.get()) else {
            continue;
        };
        let before = match &last {
            Some((arn, status)) if *arn == v.entry.arn => Some(status.as_str()),
            _ => None,
        };
        if let Some(item) = task_change(before, &task, v) {
            items.push(item);
        }
        last = Some((&v.entry.arn, task.last_status));
    }
    items.sort_by(|a, b| b.order.cmp(&a.order));
    items
}

fn item(at: Option<&str>, v: &Version, about: String, what: What) -> Item {
    let at_ms = at.and_then(parse_ms).unwrap_or(v.observed_at_ms);
    Item {
        at: format_ms(at_ms),
        entity_version: v.entry.revision.to_string(),
        what,
        order: Order {
            at_ms,
            revision: v.entry.revision,
            about,
        },
    }
}

fn service_changes(prev: Option<&Service>, now: &Service, v: &Version, out: &mut Vec<Item>) {
    for d in &now.deployments {
        let before = prev.and_then(|p| p.deployments.iter().find(|o| o.id == d.id));
        let changed =
            before.is_none_or(|o| o.status != d.status || o.rollout_state != d.rollout_state);
        if !changed {
            continue;
        }
        let at = d.updated_at.as_deref().or(d.created_at.as_deref());
        let about = format!("deployment {}", d.id.as_deref().unwrap_or_default());
        out.push(item(
            at,
            v,
            about,
            What::Deployment {
                id: d.id.clone(),
                task_definition_arn: d.task_definition_arn.clone(),
                status: d.status.clone(),
                rollout_state: d.rollout_state.clone(),
                rollout_state_reason: d.rollout_state_reason.clone(),
                desired_count: d.desired_count,
                pending_count: d.pending_count,
                running_count: d.running_count,
                failed_tasks: d.failed_tasks,
            },
        ));
    }
    for e in &now.events {
        let seen = prev.is_some_and(|p| p.events.iter().any(|o| o.id == e.id));
        if seen {
            continue;
        }
        let about = format!("event {}", e.id.as_deref().unwrap_or_default());
        out.push(item(
            e.created_at.as_deref(),
            v,
            about,
            What::ServiceEvent {
                id: e.id.clone(),
                message: e.message.clone(),
            },
        ));
    }
}

fn task_change(before: Option<&str>, task: &Task, v: &Version) -> Option<Item> {
    let status = task.last_status.as_str();
    if before == Some(status) {
        return None;
    }
    let about = format!("task {}", task.task_arn);
    match status {
        "RUNNING" => Some(item(
            task.started_at.as_deref(),
            v,
            about,
            What::TaskStarted {
                task_arn: task.task_arn.clone(),
                task_definition_arn: task.task_definition_arn.clone(),
                started_by: task.started_by.clone(),
            },
        )),
        "STOPPED" => Some(item(
            task.stopped_at.as_deref(),
            v,
            about,
            What::TaskStopped {
                task_arn: task.task_arn.clone(),
                task_definition_arn: task.task_definition_arn.clone(),
                stop_code: task.stop_code.clone(),
                stopped_reason: task.stopped_reason.clone(),
                containers: task
                    .containers
                    .iter()
                    .map(|c| Exit {
                        name: c.name.clone(),
                        exit_code: c.exit_code,
                        reason: c.reason.clone(),
                    })
                    .collect(),
                failed: v.entry.failed(),
            },
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Entry;
    use std::sync::Arc;

    fn version(entry: Entry, revision: u64, observed_at_ms: i64) -> Version {
        let mut entry = entry;
        entry.revision = revision;
        Version {
            entry: Arc::new(entry),
            deleted: false,
            observed_at_ms,
        }
    }

    fn service(rollout: &str, updated: &str, events: &[(&str, &str)]) -> Entry {
        let json = serde_json::json!({
            "serviceArn": "arn:aws:ecs:r:1:service/c/web", "serviceName": "web",
            "clusterArn": "arn:aws:ecs:r:1:cluster/c", "status": "ACTIVE",
            "deployments": [{"id": "d2", "status": "PRIMARY", "taskDefinition": "td:2",
                "rolloutState": rollout, "updatedAt": updated}],
            "events": events.iter().map(|(id, at)| serde_json::json!(
                {"id": id, "createdAt": at, "message": format!("event {id}")})).collect::<Vec<_>>(),
        });
        Entry::from_service(&serde_json::from_value(json).unwrap()).unwrap()
    }

    fn task(status: &str, exit: Option<i64>) -> Entry {
        let json = serde_json::json!({
            "taskARN": "arn:aws:ecs:r:1:task/c/t1", "clusterARN": "arn:aws:ecs:r:1:cluster/c",
            "taskDefinitionARN": "td:2", "lastStatus": status, "group": "service:web",
            "startedAt": "2026-12-01T10:00:02Z", "stoppedAt": "2026-12-01T10:00:03Z",
            "stopCode": exit.map(|_| "EssentialContainerExited"),
            "containers": [{"name": "app", "exitCode": exit}],
        });
        Entry::from_task(&serde_json::from_value(json).unwrap()).unwrap()
    }

    #[test]
    fn a_failing_rollout_reads_newest_first_with_each_change_once() {
        let svc = [
            version(
                service(
                    "IN_PROGRESS",
                    "2026-12-01T10:00:01Z",
                    &[("e1", "2026-12-01T10:00:01Z")],
                ),
                1,
                0,
            ),
            // The same state described again: nothing new.
            version(
                service(
                    "IN_PROGRESS",
                    "2026-12-01T10:00:01Z",
                    &[("e1", "2026-12-01T10:00:01Z")],
                ),
                4,
                0,
            ),
            version(
                service(
                    "FAILED",
                    "2026-12-01T10:00:04Z",
                    &[
                        ("e2", "2026-12-01T10:00:04Z"),
                        ("e1", "2026-12-01T10:00:01Z"),
                    ],
                ),
                5,
                0,
            ),
        ];
        let tasks = [
            version(task("PENDING", None), 2, 0),
            version(task("RUNNING", None), 3, 0),
            version(task("RUNNING", None), 6, 0),
            version(task("STOPPED", Some(1)), 7, 0),
        ];
        let items = of(&svc, &tasks);
        let kinds: Vec<String> = items
            .iter()
            .map(|i| {
                let v = serde_json::to_value(i).unwrap();
                format!(
                    "{} {}",
                    v["type"].as_str().unwrap(),
                    v["rolloutState"]
                        .as_str()
                        .or(v["id"].as_str())
                        .unwrap_or("")
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "serviceEvent e2",
                "deployment FAILED",
                "taskStopped ",
                "taskStarted ",
                "serviceEvent e1",
                "deployment IN_PROGRESS",
            ]
        );
        let stopped = serde_json::to_value(&items[2]).unwrap();
        assert_eq!(stopped["failed"], true);
        assert_eq!(stopped["containers"][0]["exitCode"], 1);
        assert_eq!(stopped["at"], "2026-12-01T10:00:03.000Z");
        assert_eq!(stopped["entityVersion"], "7");
        assert_eq!(stopped["taskARN"], "arn:aws:ecs:r:1:task/c/t1");
    }
}
