//! Decoding of ECS change events (EventBridge JSON, bare or SNS-wrapped) into
//! [`Entry`]s. Pure functions; the [`crate::decoder`] actor runs them.
//!
//! Event types never deny unknown fields: AWS adds fields over time, and an
//! event with a new field is still a good event. Every way a message can be bad is one variant of [`Error`].

use crate::arn::{Arn, Resource as ArnKind};
use crate::model::{
    Attribute, Container, ContainerOverride, Entry, Instance, NetworkBinding, Overrides, Resource,
    ResourceValue, Task, VersionInfo,
};
use crate::time::normalize;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// The largest message body accepted: SQS's own limit (256 KiB).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// `detail-type` of a task state change.
pub const TASK_STATE_CHANGE: &str = "ECS Task State Change";
/// `detail-type` of a container-instance state change.
pub const INSTANCE_STATE_CHANGE: &str = "ECS Container Instance State Change";
/// `detail-type` of a service action (steady state, placement failures, …).
pub const SERVICE_ACTION: &str = "ECS Service Action";
/// `detail-type` of a service deployment's change.
pub const DEPLOYMENT_STATE_CHANGE: &str = "ECS Deployment State Change";

/// Why a message could not be decoded. None of these is retryable: the message
/// is counted, logged once and dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("body of {0} bytes is larger than the limit of {MAX_BODY_BYTES} bytes")]
    Oversized(usize),
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is not a JSON object")]
    NotObject,
    #[error("SNS notification has no Message string")]
    SnsWithoutMessage,
    #[error("event has no detail-type")]
    NoDetailType,
    #[error("event has no detail")]
    NoDetail,
    #[error("malformed detail: {0}")]
    MalformedDetail(String),
    #[error("detail has no version")]
    NoVersion,
    #[error("detail has no {0}")]
    NoArn(&'static str),
    #[error("detail has an invalid {0}")]
    InvalidArn(&'static str),
    #[error("detail has no {0}")]
    NoStatus(&'static str),
    #[error("entity could not be rendered: {0}")]
    Render(String),
}

/// What a message turned out to be.
// Nearly every message is an entity: boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A task or instance to apply.
    Entity(Entry),
    /// A service event: the service (`resources[0]`) changed and is to be
    /// described again (services.md).
    Service {
        cluster_arn: String,
        service_arn: String,
        detail_type: String,
    },
    /// A valid event of a type the service does not store (its `detail-type`).
    Ignored(String),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "detail-type")]
    detail_type: Option<String>,
    #[serde(borrow)]
    detail: Option<&'a RawValue>,
    #[serde(rename = "Type")]
    sns_type: Option<String>,
    #[serde(rename = "Message")]
    sns_message: Option<String>,
    #[serde(borrow)]
    resources: Option<&'a RawValue>,
}

/// Decodes one message body.
pub fn decode(body: &str) -> Result<Decoded, Error> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Error::Oversized(body.len()));
    }
    let env = parse_envelope(body)?;
    if env.sns_type.as_deref() == Some("Notification") && env.detail_type.is_none() {
        // EventBridge → SNS → SQS: the event is a string inside the notification.
        let inner = env.sns_message.ok_or(Error::SnsWithoutMessage)?;
        let env = parse_envelope(&inner)?;
        return decode_event(env);
    }
    decode_event(env)
}

fn parse_envelope(body: &str) -> Result<Envelope<'_>, Error> {
    let trimmed = body.trim_start();
    if !trimmed.starts_with('{') {
        return match serde_json::from_str::<serde::de::IgnoredAny>(body) {
            Ok(_) => Err(Error::NotObject),
            Err(e) => Err(Error::NotJson(e.to_string())),
        };
    }
    serde_json::from_str(body).map_err(|e| {
        if e.is_data() {
            Error::MalformedDetail(e.to_string())
        } else {
            Error::NotJson(e.to_string())
        }
    })
}

fn decode_event(env: Envelope<'_>) -> Result<Decoded, Error> {
    let detail_type = env.detail_type.ok_or(Error::NoDetailType)?;
    let is_task = match detail_type.as_str() {
        TASK_STATE_CHANGE => true,
        INSTANCE_STATE_CHANGE => false,
        SERVICE_ACTION | DEPLOYMENT_STATE_CHANGE => {
            return service_event(env.detail, env.resources, detail_type)
        }
        _ => return Ok(Decoded::Ignored(detail_type)),
    };
    let detail = env
        .detail
        .filter(|d| d.get() != "null")
        .ok_or(Error::NoDetail)?;
    let entry = if is_task {
        let d: TaskDetail = serde_json::from_str(detail.get())
            .map_err(|e| Error::MalformedDetail(e.to_string()))?;
        let address = d.private_address();
        Entry::from_task(&task_from_detail(d)?).map(|e| e.with_address(address))
    } else {
        let d: InstanceDetail = serde_json::from_str(detail.get())
            .map_err(|e| Error::MalformedDetail(e.to_string()))?;
        Entry::from_instance(&instance_from_detail(d)?)
    };
    // The detail is the entity in ECS's shape: kept for the ECS read API.
    entry
        .map(|e| Decoded::Entity(e.with_ecs(Some(detail.get()))))
        .map_err(|e| Error::Render(e.to_string()))
}

/// What a service event must have: a detail object, the service ARN as
/// `resources[0]`, and the cluster (`detail.clusterArn`, or from a
/// long-format service ARN).
fn service_event(
    detail: Option<&RawValue>,
    resources: Option<&RawValue>,
    detail_type: String,
) -> Result<Decoded, Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ServiceDetail {
        cluster_arn: Option<String>,
    }
    let detail = detail
        .filter(|d| d.get() != "null")
        .ok_or(Error::NoDetail)?;
    let d: ServiceDetail =
        serde_json::from_str(detail.get()).map_err(|e| Error::MalformedDetail(e.to_string()))?;
    let resources: Vec<serde_json::Value> = match resources {
        Some(r) => serde_json::from_str::<Option<Vec<serde_json::Value>>>(r.get())
            .map_err(|_| Error::InvalidArn("resources[0]"))?
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let arn = match resources.into_iter().next() {
        None => None,
        Some(serde_json::Value::String(a)) => Some(a),
        Some(_) => return Err(Error::InvalidArn("resources[0]")),
    };
    let (service_arn, cluster_arn) =
        check_arns(arn, d.cluster_arn, ArnKind::Service, "resources[0]")?;
    Ok(Decoded::Service {
        cluster_arn,
        service_arn,
        detail_type,
    })
}

/// Checks an entity ARN and its cluster ARN; derives the cluster ARN from a
/// long-format entity ARN when the detail lacks it.
fn check_arns(
    arn: Option<String>,
    cluster_arn: Option<String>,
    kind: ArnKind,
    what: &'static str,
) -> Result<(String, String), Error> {
    let arn = arn.filter(|a| !a.is_empty()).ok_or(Error::NoArn(what))?;
    let parsed = Arn::parse(&arn, kind).map_err(|_| Error::InvalidArn(what))?;
    let cluster_arn = match cluster_arn.filter(|c| !c.is_empty()) {
        Some(c) => {
            Arn::parse(&c, ArnKind::Cluster).map_err(|_| Error::InvalidArn("clusterArn"))?;
            c
        }
        None => match parsed.cluster {
            Some(name) => parsed.cluster_arn(name),
            None => return Err(Error::NoArn("clusterArn")),
        },
    };
    Ok((arn, cluster_arn))
}

fn ts(s: Option<String>) -> Option<String> {
    s.map(|s| normalize(&s))
}

/// Builds the API task from an event detail (also used for the ECS API's answers).
pub fn task_from_detail(d: TaskDetail) -> Result<Task, Error> {
    let version = d.version.ok_or(Error::NoVersion)?;
    task_from_parts(d, Some(version))
}

/// Builds the API task from a detail whose version may be unknown (an ECS API
/// answer has none).
pub fn task_from_parts(d: TaskDetail, version: Option<u64>) -> Result<Task, Error> {
    let (task_arn, cluster_arn) = check_arns(d.task_arn, d.cluster_arn, ArnKind::Task, "taskArn")?;
    let last_status = d
        .last_status
        .filter(|s| !s.is_empty())
        .ok_or(Error::NoStatus("lastStatus"))?;
    Ok(Task {
        task_arn,
        cluster_arn,
        container_instance_arn: d.container_instance_arn.filter(|s| !s.is_empty()),
        task_definition_arn: d.task_definition_arn,
        last_status,
        desired_status: d.desired_status,
        created_at: ts(d.created_at),
        started_at: ts(d.started_at),
        stopped_at: ts(d.stopped_at),
        stopped_reason: d.stopped_reason,
        started_by: d.started_by,
        containers: d
            .containers
            .into_iter()
            .map(|c| Container {
                container_arn: c.container_arn,
                name: c.name,
                last_status: c.last_status,
                exit_code: c.exit_code,
                reason: c.reason,
                network_bindings: c.network_bindings,
                image: c.image,
                image_digest: c.image_digest,
                runtime_id: c.runtime_id,
                cpu: c.cpu.map(|s| s.0),
                memory: c.memory.map(|s| s.0),
                health_status: c.health_status,
            })
            .collect(),
        overrides: d
            .overrides
            .map(|o| Overrides {
                container_overrides: o.container_overrides,
                task_role_arn: o.task_role_arn,
            })
            .unwrap_or_default(),
        version,
        updated_at: ts(d.updated_at),
        group: d.group,
        launch_type: d.launch_type,
        cpu: d.cpu.map(|s| s.0),
        memory: d.memory.map(|s| s.0),
        availability_zone: d.availability_zone,
        platform_version: d.platform_version,
        stop_code: d.stop_code,
        stopping_at: ts(d.stopping_at),
        pull_started_at: ts(d.pull_started_at),
        pull_stopped_at: ts(d.pull_stopped_at),
        health_status: d.health_status,
    })
}

/// Builds the API instance from an event detail.
pub fn instance_from_detail(d: InstanceDetail) -> Result<Instance, Error> {
    let version = d.version.ok_or(Error::NoVersion)?;
    instance_from_parts(d, Some(version))
}

/// Builds the API instance from a detail whose version may be unknown (an ECS
/// API answer has none).
pub fn instance_from_parts(d: InstanceDetail, version: Option<u64>) -> Result<Instance, Error> {
    let (arn, cluster_arn) = check_arns(
        d.container_instance_arn,
        d.cluster_arn,
        ArnKind::ContainerInstance,
        "containerInstanceArn",
    )?;
    let status = d
        .status
        .filter(|s| !s.is_empty())
        .ok_or(Error::NoStatus("status"))?;
    let resources = |list: Vec<ResourceDetail>| -> Vec<Resource> {
        list.into_iter()
            .map(|r| {
                let value = match r.kind.as_deref() {
                    Some("INTEGER") => ResourceValue::Integer(r.integer_value),
                    Some("LONG") => ResourceValue::Long(r.long_value),
                    Some("DOUBLE") => ResourceValue::Double(r.double_value),
                    Some("STRINGSET") => ResourceValue::StringSet(&r.string_set_value),
                    _ => ResourceValue::Other,
                };
                Resource::new(
                    r.name.unwrap_or_default(),
                    r.kind.clone().unwrap_or_default(),
                    value,
                )
            })
            .collect()
    };
    Ok(Instance {
        container_instance_arn: arn,
        cluster_arn,
        ec2_instance_id: d.ec2_instance_id,
        status,
        agent_connected: d.agent_connected.unwrap_or(false),
        agent_update_status: d.agent_update_status,
        attributes: d
            .attributes
            .into_iter()
            .filter_map(|a| {
                Some(Attribute {
                    name: a.name?,
                    value: a.value,
                })
            })
            .collect(),
        registered_resources: resources(d.registered_resources),
        remaining_resources: resources(d.remaining_resources),
        version_info: d.version_info.unwrap_or_default(),
        version,
        updated_at: ts(d.updated_at),
        registered_at: ts(d.registered_at),
        running_tasks_count: d.running_tasks_count,
        pending_tasks_count: d.pending_tasks_count,
        status_reason: d.status_reason,
    })
}

/// A string field that some producers send as a number (`cpu`, `memory`).
#[derive(Debug, Clone, PartialEq)]
pub struct Lenient(pub String);

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
            F(f64),
        }
        Ok(Lenient(match Raw::deserialize(d)? {
            Raw::S(s) => s,
            Raw::I(i) => i.to_string(),
            Raw::F(f) => f.to_string(),
        }))
    }
}

/// A list that may also arrive as `null`.
fn null_as_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// `detail` of an `ECS Task State Change`, or a task of a `DescribeTasks`
/// answer (the same shape; its times are epoch seconds), only the fields the
/// service keeps.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDetail {
    pub task_arn: Option<String>,
    pub cluster_arn: Option<String>,
    pub container_instance_arn: Option<String>,
    pub task_definition_arn: Option<String>,
    pub last_status: Option<String>,
    pub desired_status: Option<String>,
    pub version: Option<u64>,
    pub started_by: Option<String>,
    pub group: Option<String>,
    pub launch_type: Option<String>,
    pub platform_version: Option<String>,
    pub availability_zone: Option<String>,
    pub cpu: Option<Lenient>,
    pub memory: Option<Lenient>,
    #[serde(default, deserialize_with = "crate::time::text_or_seconds")]
    pub created_at: Option<String>,
    #[serde(default, deserialize_with = "crate::time::text_or_seconds")]
    pub pull_started_at: Option<String>,
    #[serde(default, deserialize_with = "crate::time::text_or_seconds")]
    pub pull_stopped_at: Option<String>,
    #[serde(default, deserialize_with = "crate::time::text_or_seconds")]
    pub started_at: Option<String>,
    #[serde(default, deserialize_with = "crate::time::text_or_seconds")]
    pub stopping_at: Option<String>,
    #[serde(default, deserialize_with = "crate::time::text_or_seconds")]
    pub stopped_at: Option<String>,
    #[serde(default, deserialize_with = "crate::time::text_or_seconds")]
    pub updated_at: Option<String>,
    pub stopped_reason: Option<String>,
    pub stop_code: Option<String>,
    pub health_status: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub containers: Vec<ContainerDetail>,
    pub overrides: Option<OverridesDetail>,
    /// The task's attachments (an `awsvpc` task's ENI, with its address).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub attachments: Vec<AttachmentDetail>,
}

/// An attachment of a task: its `type` and its `details` (name/value pairs).
#[derive(Debug, Default, Deserialize)]
pub struct AttachmentDetail {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub details: Vec<AttributeDetail>,
}

impl TaskDetail {
    /// The private IPv4 address of an `awsvpc` task's network interface.
    pub fn private_address(&self) -> Option<String> {
        self.attachments
            .iter()
            .flat_map(|a| &a.details)
            .find(|d| d.name.as_deref() == Some("privateIPv4Address"))
            .and_then(|d| d.value.clone())
            .filter(|v| !v.is_empty())
    }
}

/// A container in a task detail.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDetail {
    pub container_arn: Option<String>,
    pub name: Option<String>,
    pub image: Option<String>,
    pub image_digest: Option<String>,
    pub runtime_id: Option<String>,
    pub last_status: Option<String>,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    pub cpu: Option<Lenient>,
    pub memory: Option<Lenient>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub network_bindings: Vec<NetworkBinding>,
    pub health_status: Option<String>,
}

/// `overrides` in a task detail.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverridesDetail {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub container_overrides: Vec<ContainerOverride>,
    pub task_role_arn: Option<String>,
}

/// `detail` of an `ECS Container Instance State Change`, or a container
/// instance of a `DescribeContainerInstances` answer (which has no
/// `clusterArn`: it is the cluster asked about).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceDetail {
    pub container_instance_arn: Option<String>,
    pub cluster_arn: Option<String>,
    pub ec2_instance_id: Option<String>,
    pub status: Option<String>,
    pub status_reason: Option<String>,
    pub agent_connected: Option<bool>,
    pub agent_update_status: Option<String>,
    pub version: Option<u64>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub registered_resources: Vec<ResourceDetail>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub remaining_resources: Vec<ResourceDetail>,
    pub running_tasks_count: Option<i64>,
    pub pending_tasks_count: Option<i64>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub attributes: Vec<AttributeDetail>,
    pub version_info: Option<VersionInfo>,
    #[serde(default, deserialize_with = "crate::time::text_or_seconds")]
    pub registered_at: Option<String>,
    #[serde(default, deserialize_with = "crate::time::text_or_seconds")]
    pub updated_at: Option<String>,
}

/// A resource in an instance detail.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDetail {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub integer_value: Option<i64>,
    pub long_value: Option<i64>,
    pub double_value: Option<f64>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub string_set_value: Vec<String>,
}

/// An attribute in an instance detail.
#[derive(Debug, Default, Deserialize)]
pub struct AttributeDetail {
    pub name: Option<String>,
    pub value: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASK: &str = r#"{"detail-type":"ECS Task State Change","detail":{
        "taskArn":"arn:aws:ecs:us-west-2:1:task/c1/t1","clusterArn":"arn:aws:ecs:us-west-2:1:cluster/c1",
        "lastStatus":"RUNNING","version":4,"newField":{"x":[1,2]}}}"#;

    fn entity(body: &str) -> Entry {
        match decode(body) {
            Ok(Decoded::Entity(e)) => e,
            other => panic!("expected an entity, got {other:?}"),
        }
    }

    #[test]
    fn decodes_a_minimal_task_and_ignores_unknown_fields() {
        let e = entity(TASK);
        assert_eq!(e.arn, "arn:aws:ecs:us-west-2:1:task/c1/t1");
        assert_eq!(e.version, Some(4));
        assert!(e
            .entity
            .get()
            .contains(r#""overrides":{"containerOverrides":[]}"#));
        assert!(e.entity.get().contains(r#""containers":[]"#));
    }

    #[test]
    fn derives_cluster_arn_from_long_task_arn() {
        let e = entity(
            r#"{"detail-type":"ECS Task State Change","detail":{
            "taskArn":"arn:aws:ecs:us-west-2:1:task/c1/t1","lastStatus":"RUNNING","version":1}}"#,
        );
        assert_eq!(e.cluster_arn, "arn:aws:ecs:us-west-2:1:cluster/c1");
    }

    #[test]
    fn service_events_name_their_service_or_are_invalid() {
        let fixture = include_str!("../../../tests/fixtures/events/service-action-ignored.json");
        assert_eq!(
            decode(fixture),
            Ok(Decoded::Service {
                cluster_arn: "arn:aws:ecs:us-west-2:111122223333:cluster/prod-web".into(),
                service_arn: "arn:aws:ecs:us-west-2:111122223333:service/prod-web/web".into(),
                detail_type: SERVICE_ACTION.into(),
            })
        );
        // A deployment change has no clusterArn: the long service ARN names it.
        let deployment = |resources: &str, detail: &str| {
            format!(
                r#"{{"detail-type":"ECS Deployment State Change","resources":{resources},"detail":{detail}}}"#
            )
        };
        let d = r#"{"eventName":"SERVICE_DEPLOYMENT_COMPLETED","deploymentId":"ecs-svc/1"}"#;
        assert!(matches!(
            decode(&deployment(r#"["arn:aws:ecs:r:1:service/c/web"]"#, d)),
            Ok(Decoded::Service { cluster_arn, .. }) if cluster_arn == "arn:aws:ecs:r:1:cluster/c"
        ));
        for (resources, detail, why) in [
            ("[]", d, Error::NoArn("resources[0]")),
            (r#""x""#, d, Error::InvalidArn("resources[0]")),
            ("[7]", d, Error::InvalidArn("resources[0]")),
            (
                r#"["arn:aws:ecs:r:1:task/c/t"]"#,
                d,
                Error::InvalidArn("resources[0]"),
            ),
            (
                r#"["arn:aws:ecs:r:1:service/web"]"#,
                d,
                Error::NoArn("clusterArn"),
            ),
            (
                r#"["arn:aws:ecs:r:1:service/c/web"]"#,
                "null",
                Error::NoDetail,
            ),
            (
                r#"["arn:aws:ecs:r:1:service/c/web"]"#,
                r#"{"clusterArn":"nope"}"#,
                Error::InvalidArn("clusterArn"),
            ),
        ] {
            assert_eq!(
                decode(&deployment(resources, detail)),
                Err(why),
                "{resources} {detail}"
            );
        }
        assert!(matches!(
            decode(&deployment(r#"["arn:aws:ecs:r:1:service/c/web"]"#, "[1]")),
            Err(Error::MalformedDetail(_))
        ));
    }

    #[test]
    fn unwraps_sns_notifications() {
        let sns = serde_json::json!({"Type": "Notification", "Message": TASK}).to_string();
        assert_eq!(entity(&sns).arn, "arn:aws:ecs:us-west-2:1:task/c1/t1");
        assert_eq!(
            decode(r#"{"Type":"Notification"}"#),
            Err(Error::SnsWithoutMessage)
        );
    }

    #[test]
    fn ignores_other_detail_types() {
        assert_eq!(
            decode(r#"{"detail-type":"ECS Capacity Provider State Change","detail":{}}"#),
            Ok(Decoded::Ignored(
                "ECS Capacity Provider State Change".into()
            ))
        );
    }

    #[test]
    fn every_bad_message_has_its_error() {
        let t = |detail: &str| {
            format!(r#"{{"detail-type":"ECS Task State Change","detail":{detail}}}"#)
        };
        assert!(matches!(decode("not json"), Err(Error::NotJson(_))));
        assert!(matches!(decode("{\"a\":"), Err(Error::NotJson(_))));
        assert_eq!(decode("[1,2]"), Err(Error::NotObject));
        assert_eq!(decode("42"), Err(Error::NotObject));
        assert_eq!(decode(r#"{"detail":{}}"#), Err(Error::NoDetailType));
        assert_eq!(
            decode(r#"{"detail-type":"ECS Task State Change"}"#),
            Err(Error::NoDetail)
        );
        assert_eq!(decode(&t("null")), Err(Error::NoDetail));
        assert!(matches!(decode(&t("[]")), Err(Error::MalformedDetail(_))));
        assert!(matches!(
            decode(&t(
                r#"{"taskArn":"arn:aws:ecs:r:1:task/c/t","version":"7"}"#
            )),
            Err(Error::MalformedDetail(_))
        ));
        assert!(matches!(
            decode(&t(
                r#"{"taskArn":"arn:aws:ecs:r:1:task/c/t","version":1.5}"#
            )),
            Err(Error::MalformedDetail(_))
        ));
        assert!(matches!(
            decode(&t(r#"{"taskArn":"arn:aws:ecs:r:1:task/c/t","version":-1}"#)),
            Err(Error::MalformedDetail(_))
        ));
        assert_eq!(
            decode(&t(r#"{"lastStatus":"RUNNING","version":1}"#)),
            Err(Error::NoArn("taskArn"))
        );
        assert_eq!(
            decode(&t(
                r#"{"taskArn":"nope","lastStatus":"RUNNING","version":1}"#
            )),
            Err(Error::InvalidArn("taskArn"))
        );
        assert_eq!(
            decode(&t(
                r#"{"taskArn":"arn:aws:ecs:r:1:task/t","lastStatus":"RUNNING","version":1}"#
            )),
            Err(Error::NoArn("clusterArn"))
        );
        assert_eq!(
            decode(&t(
                r#"{"taskArn":"arn:aws:ecs:r:1:task/c/t","lastStatus":"RUNNING"}"#
            )),
            Err(Error::NoVersion)
        );
        assert_eq!(
            decode(&t(r#"{"taskArn":"arn:aws:ecs:r:1:task/c/t","version":3}"#)),
            Err(Error::NoStatus("lastStatus"))
        );
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_BODY_BYTES));
        assert!(matches!(decode(&big), Err(Error::Oversized(_))));
    }

    #[test]
    fn accepts_numeric_cpu_and_keeps_exit_code_zero() {
        let e = entity(
            r#"{"detail-type":"ECS Task State Change","detail":{
            "taskArn":"arn:aws:ecs:r:1:task/c/t","lastStatus":"STOPPED","version":2,"cpu":256,
            "containers":[{"name":"a","exitCode":0,"networkBindings":null}]}}"#,
        );
        let v: serde_json::Value = serde_json::from_str(e.entity.get()).unwrap();
        assert_eq!(v["cpu"], "256");
        assert_eq!(v["containers"][0]["exitCode"], 0);
        assert_eq!(v["containers"][0]["networkBindings"], serde_json::json!([]));
    }

    #[test]
    fn each_entry_carries_its_index_and_an_older_stored_one_gets_it_on_load() {
        use crate::model::{ContainerPorts, Index, InstanceIndex, TaskIndex};
        let task = entity(include_str!(
            "../../../tests/fixtures/events/task-running-ec2.json"
        ));
        let want = Index::Task(TaskIndex {
            availability_zone: Some("us-west-2b".into()),
            containers: vec![ContainerPorts {
                name: "web".into(),
                ports: vec![(8080, Some(32768))],
            }],
        });
        assert_eq!(task.index, want);
        let instance = entity(include_str!(
            "../../../tests/fixtures/events/instance-active.json"
        ));
        let cpu_memory = Index::Instance(InstanceIndex {
            cpu: (2048, 1536),
            memory: (7680, 6656),
        });
        assert_eq!(instance.index, cpu_memory);
        for e in [task, instance] {
            let mut stored: serde_json::Value = serde_json::to_value(&e).unwrap();
            assert!(stored.as_object_mut().unwrap().remove("index").is_some());
            let loaded = Entry::from_stored(stored.to_string().as_bytes()).unwrap();
            assert_eq!(loaded.index, e.index, "{}", e.arn);
            let again = Entry::from_stored(serde_json::to_string(&e).unwrap().as_bytes()).unwrap();
            assert_eq!(again.index, e.index);
        }
    }
}
