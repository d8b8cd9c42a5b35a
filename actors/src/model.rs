//! The domain model: tasks and container instances in the exact v0.3 API shape,
//! services in the same style (services.md), and [`Entry`], the form in which
//! the store, the view and the API hold every kind.
//!
//! An entity is rendered to its API JSON once, when it is decoded; lists and
//! streams then only copy those bytes. The fields the API filters on and the
//! version rule needs are kept beside the JSON in [`Entry`].

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;

/// What an entity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Task,
    Instance,
    Service,
}

impl Kind {
    /// Every kind, in the order of [`Kind::index`].
    pub const ALL: [Kind; 3] = [Kind::Task, Kind::Instance, Kind::Service];

    /// Its name in tokens, stream events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Instance => "instance",
            Kind::Service => "service",
        }
    }

    /// Its position in [`Kind::ALL`], for per-kind tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A task, with the v0.3 field names plus the fields v0.3 lacked (marked (ext)).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    #[serde(rename = "taskARN")]
    pub task_arn: String,
    #[serde(rename = "clusterARN")]
    pub cluster_arn: String,
    #[serde(rename = "containerInstanceARN")]
    pub container_instance_arn: Option<String>,
    #[serde(rename = "taskDefinitionARN")]
    pub task_definition_arn: Option<String>,
    pub last_status: String,
    pub desired_status: Option<String>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub stopped_at: Option<String>,
    pub stopped_reason: Option<String>,
    pub started_by: Option<String>,
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub overrides: Overrides,
    pub version: Option<u64>,
    pub updated_at: Option<String>,
    pub group: Option<String>,
    pub launch_type: Option<String>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub availability_zone: Option<String>,
    pub platform_version: Option<String>,
    pub stop_code: Option<String>,
    pub stopping_at: Option<String>,
    pub pull_started_at: Option<String>,
    pub pull_stopped_at: Option<String>,
    pub health_status: Option<String>,
}

/// A container of a task.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(rename = "containerARN")]
    pub container_arn: Option<String>,
    pub name: Option<String>,
    pub last_status: Option<String>,
    /// Present whenever ECS sent it, 0 included (v0.3 dropped 0).
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    #[serde(default)]
    pub network_bindings: Vec<NetworkBinding>,
    pub image: Option<String>,
    pub image_digest: Option<String>,
    pub runtime_id: Option<String>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub health_status: Option<String>,
}

/// A port binding of a container; ECS and v0.3 use the same names.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBinding {
    #[serde(rename = "bindIP")]
    pub bind_ip: Option<String>,
    pub container_port: Option<i64>,
    pub host_port: Option<i64>,
    pub protocol: Option<String>,
}

/// `overrides` of a task; `{"containerOverrides": []}` when ECS sent none.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Overrides {
    #[serde(default)]
    pub container_overrides: Vec<ContainerOverride>,
    pub task_role_arn: Option<String>,
}

/// One container's overrides.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerOverride {
    pub name: Option<String>,
    pub command: Option<Vec<String>>,
    pub environment: Option<Vec<KeyValue>>,
}

/// An environment variable.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyValue {
    pub name: Option<String>,
    pub value: Option<String>,
}

/// A container instance, with the v0.3 field names plus the fields v0.3 lacked (marked (ext)).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    #[serde(rename = "containerInstanceARN")]
    pub container_instance_arn: String,
    #[serde(rename = "clusterARN")]
    pub cluster_arn: String,
    #[serde(rename = "EC2InstanceID", default)]
    pub ec2_instance_id: Option<String>,
    pub status: String,
    #[serde(default)]
    pub agent_connected: bool,
    pub agent_update_status: Option<String>,
    #[serde(default)]
    pub attributes: Vec<Attribute>,
    #[serde(default)]
    pub registered_resources: Vec<Resource>,
    #[serde(default)]
    pub remaining_resources: Vec<Resource>,
    #[serde(default)]
    pub version_info: VersionInfo,
    pub version: Option<u64>,
    pub updated_at: Option<String>,
    pub registered_at: Option<String>,
    pub running_tasks_count: Option<i64>,
    pub pending_tasks_count: Option<i64>,
    pub status_reason: Option<String>,
}

/// An instance attribute; `value` omitted when ECS sent none.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

/// A resource of an instance with its value rendered as a string (see [`Resource::new`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

/// A resource value as ECS sends it.
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceValue<'a> {
    Integer(Option<i64>),
    Long(Option<i64>),
    Double(Option<f64>),
    StringSet(&'a [String]),
    Other,
}

impl Resource {
    /// Renders a resource value as v0.3 did: `INTEGER`/`LONG` in decimal,
    /// `DOUBLE` with two decimals, `STRINGSET` joined by `,`, anything else `""`.
    pub fn new(name: String, kind: String, value: ResourceValue<'_>) -> Resource {
        let value = match value {
            ResourceValue::Integer(v) | ResourceValue::Long(v) => v.unwrap_or(0).to_string(),
            ResourceValue::Double(v) => format!("{:.2}", v.unwrap_or(0.0)),
            ResourceValue::StringSet(v) => v.join(","),
            ResourceValue::Other => String::new(),
        };
        Resource { name, kind, value }
    }
}

/// Versions of the ECS agent and Docker on an instance.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub agent_hash: Option<String>,
    pub agent_version: Option<String>,
    pub docker_version: Option<String>,
}

/// A service, as `DescribeServices` gives it, in the v1 style (services.md).
/// It reads ECS's own JSON too (`serviceArn`, `taskDefinition`, times in
/// epoch seconds): a `DescribeServices` answer deserializes into it.
/// `updatedAt` comes last: it is when the state was read, not part of it
/// (see [`same_state`]).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    #[serde(rename = "serviceARN", alias = "serviceArn")]
    pub service_arn: String,
    /// (ECS answers without it are named by their ARN.)
    #[serde(default)]
    pub service_name: String,
    /// (ECS answers without it are of the cluster asked about.)
    #[serde(rename = "clusterARN", alias = "clusterArn", default)]
    pub cluster_arn: String,
    pub status: String,
    pub desired_count: Option<i64>,
    pub running_count: Option<i64>,
    pub pending_count: Option<i64>,
    #[serde(rename = "taskDefinitionARN", alias = "taskDefinition", default)]
    pub task_definition_arn: Option<String>,
    pub launch_type: Option<String>,
    pub platform_version: Option<String>,
    pub scheduling_strategy: Option<String>,
    #[serde(default, deserialize_with = "crate::time::text_or_seconds")]
    pub created_at: Option<String>,
    #[serde(default)]
    pub deployments: Vec<Deployment>,
    /// The latest service events, newest first, at most [`MAX_SERVICE_EVENTS`].
    #[serde(default)]
    pub events: Vec<ServiceEvent>,
    #[serde(default)]
    pub load_balancers: Vec<LoadBalancer>,
    /// When this state was read from ECS. Keep it the last field.
    #[serde(default, deserialize_with = "crate::time::text_or_seconds")]
    pub updated_at: Option<String>,
}

/// The container-instance attribute that gives its private IP address, for
/// Prometheus discovery of tasks in `bridge` or `host` network mode (a custom
/// attribute: ECS does not set one).
pub const PRIVATE_IP_ATTRIBUTE: &str = "private-ip";

/// Service events kept per service.
pub const MAX_SERVICE_EVENTS: usize = 20;

/// A deployment of a service.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: Option<String>,
    pub status: Option<String>,
    #[serde(rename = "taskDefinitionARN", alias = "taskDefinition", default)]
    pub task_definition_arn: Option<String>,
    pub desired_count: Option<i64>,
    pub running_count: Option<i64>,
    pub pending_count: Option<i64>,
    pub failed_tasks: Option<i64>,
    pub rollout_state: Option<String>,
    pub rollout_state_reason: Option<String>,
    pub launch_type: Option<String>,
    #[serde(default, deserialize_with = "crate::time::text_or_seconds")]
    pub created_at: Option<String>,
    #[serde(default, deserialize_with = "crate::time::text_or_seconds")]
    pub updated_at: Option<String>,
}

/// A message ECS recorded about a service.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    pub id: Option<String>,
    #[serde(default, deserialize_with = "crate::time::text_or_seconds")]
    pub created_at: Option<String>,
    pub message: Option<String>,
}

/// A load balancer a service registers its tasks with; ECS's names.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    pub target_group_arn: Option<String>,
    pub load_balancer_name: Option<String>,
    pub container_name: Option<String>,
    pub container_port: Option<i64>,
}

/// Whether `a` and `b`, two renderings of one entity of `kind`, hold the
/// same state: for a service, the same [`Service`] but for `updatedAt` (the
/// time it was read, so that reading an unchanged service again changes
/// nothing); for the other kinds, the same rendering.
pub fn same_state(kind: Kind, a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    if kind != Kind::Service {
        return false;
    }
    let state = |s: &str| {
        serde_json::from_str::<Service>(s).ok().map(|s| Service {
            updated_at: None,
            ..s
        })
    };
    matches!((state(a), state(b)), (Some(x), Some(y)) if x == y)
}

/// An entity as the store, the view and the API hold it: its rendered API JSON
/// (`entity`) and the fields that ordering, filtering and the version rule need.
///
/// Serialized as is into the store, so that loading needs no re-rendering.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub kind: Kind,
    pub arn: String,
    pub cluster_arn: String,
    /// ECS's per-entity version; `None` when the source gave none (an ECS API
    /// answer), which then never overrides a known version.
    pub version: Option<u64>,
    /// The store revision at which this entry was written (`entityVersion`);
    /// 0 until it is stored.
    #[serde(default)]
    pub revision: u64,
    /// When it was stored, in Unix milliseconds.
    #[serde(default)]
    pub stored_at_ms: i64,
    /// `lastStatus` of a task, `status` of an instance or a service.
    pub status: String,
    pub desired_status: Option<String>,
    pub started_by: Option<String>,
    pub launch_type: Option<String>,
    pub container_instance: Option<String>,
    pub group: Option<String>,
    pub family: Option<String>,
    /// The task definition ARN of a service.
    pub task_definition: Option<String>,
    /// The PRIMARY deployment's `rolloutState` of a service.
    pub rollout: Option<String>,
    pub agent_connected: Option<bool>,
    /// `stoppedAt` of a task, in Unix milliseconds (for STOPPED-task retention).
    pub stopped_at_ms: Option<i64>,
    /// `stopCode` of a task.
    pub stop_code: Option<String>,
    /// The exit codes a task's containers reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_codes: Vec<i64>,
    /// Where it is reached: an `awsvpc` task's private IPv4 address, or a
    /// container instance's `private-ip` attribute (Prometheus discovery).
    pub address: Option<String>,
    /// What consumers read of each kind besides the fields above.
    #[serde(default, skip_serializing_if = "Index::is_missing")]
    pub index: Index,
    /// The API JSON of the entity.
    pub entity: Box<RawValue>,
    /// The entity in ECS's own shape, as its source gave it: an event's
    /// `detail`, or the object a Describe call answered (ecs-api.md). `None`
    /// when the source had none (the ECS read API then derives it from
    /// `entity`).
    pub ecs: Option<Packed>,
}

/// The typed fields of one kind that filters, metrics and Prometheus
/// discovery read, computed once from the model when the entry is made, so
/// that no consumer parses the entity's JSON again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Index {
    /// Not computed: an entry stored before the index existed.
    /// [`Entry::from_stored`] computes it from the entity.
    #[default]
    Missing,
    Task(TaskIndex),
    Instance(InstanceIndex),
    Service(ServiceIndex),
}

impl Index {
    fn is_missing(&self) -> bool {
        *self == Index::Missing
    }
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskIndex {
    pub availability_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerPorts>,
}

/// A container's name and the ports it binds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPorts {
    pub name: String,
    /// `(containerPort, hostPort)` of each network binding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<(i64, Option<i64>)>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceIndex {
    /// Registered and remaining `CPU` units.
    pub cpu: (i64, i64),
    /// Registered and remaining `MEMORY` (MiB).
    pub memory: (i64, i64),
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceIndex {
    /// `desiredCount`, `runningCount`, `pendingCount` (0 when absent).
    pub counts: [i64; 3],
    /// The `rolloutState` of each deployment ("" when it has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<String>,
    pub scheduling_strategy: Option<String>,
}

impl TaskIndex {
    fn of(task: &Task) -> TaskIndex {
        TaskIndex {
            availability_zone: task.availability_zone.clone(),
            containers: task
                .containers
                .iter()
                .map(|c| ContainerPorts {
                    name: c.name.clone().unwrap_or_default(),
                    ports: c
                        .network_bindings
                        .iter()
                        .filter_map(|b| Some((b.container_port?, b.host_port)))
                        .collect(),
                })
                .collect(),
        }
    }
}

impl InstanceIndex {
    fn of(instance: &Instance) -> InstanceIndex {
        let amount = |list: &[Resource], name: &str| {
            list.iter()
                .find(|r| r.name == name)
                .and_then(|r| r.value.parse::<f64>().ok())
                .map_or(0, |v| v as i64)
        };
        let both = |name| {
            (
                amount(&instance.registered_resources, name),
                amount(&instance.remaining_resources, name),
            )
        };
        InstanceIndex {
            cpu: both("CPU"),
            memory: both("MEMORY"),
        }
    }
}

impl ServiceIndex {
    fn of(service: &Service) -> ServiceIndex {
        ServiceIndex {
            counts: [
                service.desired_count.unwrap_or(0),
                service.running_count.unwrap_or(0),
                service.pending_count.unwrap_or(0),
            ],
            rollouts: service
                .deployments
                .iter()
                .map(|d| d.rollout_state.clone().unwrap_or_default())
                .collect(),
            scheduling_strategy: service.scheduling_strategy.clone(),
        }
    }
}

/// JSON kept LZ4-compressed against a dictionary of typical ECS JSON, in
/// memory and in the store (as base64): the ECS shape of an entity is read
/// rarely (by the ECS read API) and would otherwise more than half again the
/// view's memory. A task's detail of 1.6 KB packs into about 300 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Packed(Box<[u8]>);

/// The dictionary of format 1: event details of every kind, with a
/// made-up account, region and cluster. Stored data depends on these exact
/// bytes: never edit it; a new dictionary needs a new format byte.
const DICTIONARY_1: &[u8] = include_bytes!("ecs-dictionary.json");

impl Packed {
    pub fn pack(json: &str) -> Packed {
        let mut out = vec![1u8];
        out.extend(lz4_flex::block::compress_prepend_size_with_dict(
            json.as_bytes(),
            DICTIONARY_1,
        ));
        Packed(out.into_boxed_slice())
    }

    /// Bytes that [`Packed::bytes`] gave (the store keeps them as such).
    pub fn from_bytes(bytes: &[u8]) -> Packed {
        Packed(bytes.into())
    }

    /// The packed bytes, format byte first.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The JSON; `None` if the bytes are not what [`Packed::pack`] made.
    pub fn unpack(&self) -> Option<String> {
        let (format, packed) = self.0.split_first()?;
        let bytes = match format {
            1 => lz4_flex::block::decompress_size_prepended_with_dict(packed, DICTIONARY_1).ok()?,
            _ => return None,
        };
        String::from_utf8(bytes).ok()
    }

    /// Compressed size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({} bytes)", self.0.len())
    }
}

impl Serialize for Packed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        s.serialize_str(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Packed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)?;
        Ok(Packed(bytes.into_boxed_slice()))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.revision == other.revision
            && self.arn == other.arn
            && self.cluster_arn == other.cluster_arn
            && self.version == other.version
            && self.entity.get() == other.entity.get()
    }
}

/// Shared handle to an entry; the view and snapshots hold these.
pub type SharedEntry = Arc<Entry>;

/// The task-definition family of `…:task-definition/web:7` (`web`).
pub fn family_of(task_definition_arn: &str) -> Option<&str> {
    let (_, rest) = task_definition_arn.rsplit_once(":task-definition/")?;
    Some(rest.rsplit_once(':').map_or(rest, |(f, _)| f))
}

impl Entry {
    /// A task that has stopped: it leaves the store only through
    /// `store.stopped_task_retention`, never because ECS forgot it.
    pub fn is_stopped_task(&self) -> bool {
        self.kind == Kind::Task && self.status.eq_ignore_ascii_case("STOPPED")
    }

    /// A task entry for unit tests: not yet stored, entity `{"arn", "s": status}`.
    #[cfg(test)]
    pub(crate) fn test_task(arn: &str, version: Option<u64>, status: &str) -> Entry {
        let entity = serde_json::json!({"arn": arn, "s": status});
        Entry {
            kind: Kind::Task,
            arn: arn.into(),
            cluster_arn: "arn:aws:ecs:r:1:cluster/c".into(),
            version,
            revision: 0,
            stored_at_ms: 0,
            status: status.into(),
            desired_status: None,
            started_by: None,
            launch_type: None,
            container_instance: None,
            group: None,
            family: None,
            task_definition: None,
            rollout: None,
            agent_connected: None,
            stopped_at_ms: None,
            stop_code: None,
            exit_codes: Vec::new(),
            address: None,
            index: Index::Task(TaskIndex::default()),
            entity: serde_json::value::to_raw_value(&entity).expect("JSON value"),
            ecs: None,
        }
    }

    /// Appends the API item wrapper of this entry to `out`:
    /// `{"entity":…,"metadata":{"entityVersion":"N"}}`, with `"deleted":true`
    /// in `metadata` for a stream item that announces a removal.
    pub fn write_item(&self, deleted: bool, out: &mut String) {
        use std::fmt::Write as _;
        out.push_str(r#"{"entity":"#);
        out.push_str(self.entity.get());
        let _ = write!(out, r#","metadata":{{"entityVersion":"{}""#, self.revision);
        if deleted {
            out.push_str(r#","deleted":true"#);
        }
        out.push_str("}}");
    }

    /// Renders a task into an entry.
    pub fn from_task(task: &Task) -> Result<Entry, serde_json::Error> {
        Ok(Entry {
            kind: Kind::Task,
            arn: task.task_arn.clone(),
            cluster_arn: task.cluster_arn.clone(),
            version: task.version,
            revision: 0,
            stored_at_ms: 0,
            status: task.last_status.clone(),
            desired_status: task.desired_status.clone(),
            started_by: task.started_by.clone(),
            launch_type: task.launch_type.clone(),
            container_instance: task.container_instance_arn.clone(),
            group: task.group.clone(),
            family: task
                .task_definition_arn
                .as_deref()
                .and_then(family_of)
                .map(str::to_owned),
            task_definition: task.task_definition_arn.clone(),
            rollout: None,
            agent_connected: None,
            stopped_at_ms: task.stopped_at.as_deref().and_then(crate::time::parse_ms),
            stop_code: task.stop_code.clone(),
            exit_codes: task.containers.iter().filter_map(|c| c.exit_code).collect(),
            address: None,
            index: Index::Task(TaskIndex::of(task)),
            entity: serde_json::value::to_raw_value(task)?,
            ecs: None,
        })
    }

    /// Renders a container instance into an entry.
    pub fn from_instance(instance: &Instance) -> Result<Entry, serde_json::Error> {
        Ok(Entry {
            kind: Kind::Instance,
            arn: instance.container_instance_arn.clone(),
            cluster_arn: instance.cluster_arn.clone(),
            version: instance.version,
            revision: 0,
            stored_at_ms: 0,
            status: instance.status.clone(),
            desired_status: None,
            started_by: None,
            launch_type: None,
            container_instance: None,
            group: None,
            family: None,
            task_definition: None,
            rollout: None,
            agent_connected: Some(instance.agent_connected),
            stopped_at_ms: None,
            stop_code: None,
            exit_codes: Vec::new(),
            address: instance
                .attributes
                .iter()
                .find(|a| a.name == PRIVATE_IP_ATTRIBUTE)
                .and_then(|a| a.value.clone()),
            index: Index::Instance(InstanceIndex::of(instance)),
            entity: serde_json::value::to_raw_value(instance)?,
            ecs: None,
        })
    }

    /// Renders a service into an entry (it has no version: see [`same_state`]).
    pub fn from_service(service: &Service) -> Result<Entry, serde_json::Error> {
        let primary = service
            .deployments
            .iter()
            .find(|d| d.status.as_deref() == Some("PRIMARY"));
        Ok(Entry {
            kind: Kind::Service,
            arn: service.service_arn.clone(),
            cluster_arn: service.cluster_arn.clone(),
            version: None,
            revision: 0,
            stored_at_ms: 0,
            status: service.status.clone(),
            desired_status: None,
            started_by: None,
            launch_type: service.launch_type.clone(),
            container_instance: None,
            group: None,
            family: service
                .task_definition_arn
                .as_deref()
                .and_then(family_of)
                .map(str::to_owned),
            task_definition: service.task_definition_arn.clone(),
            rollout: primary.and_then(|d| d.rollout_state.clone()),
            agent_connected: None,
            stopped_at_ms: None,
            stop_code: None,
            exit_codes: Vec::new(),
            address: None,
            index: Index::Service(ServiceIndex::of(service)),
            entity: serde_json::value::to_raw_value(service)?,
            ecs: None,
        })
    }

    /// An entry as the store holds it (its JSON). One stored before the
    /// [`Index`] existed gets it here, from its entity, once.
    pub fn from_stored(json: &[u8]) -> Result<Entry, serde_json::Error> {
        let mut e: Entry = serde_json::from_slice(json)?;
        if e.index.is_missing() {
            let entity = e.entity.get();
            e.index = match e.kind {
                Kind::Task => Index::Task(TaskIndex::of(&serde_json::from_str(entity)?)),
                Kind::Instance => {
                    Index::Instance(InstanceIndex::of(&serde_json::from_str(entity)?))
                }
                Kind::Service => Index::Service(ServiceIndex::of(&serde_json::from_str(entity)?)),
            };
        }
        Ok(e)
    }

    /// The index of a task (`None` for the other kinds).
    pub fn task_index(&self) -> Option<&TaskIndex> {
        match &self.index {
            Index::Task(t) => Some(t),
            _ => None,
        }
    }

    /// The index of a container instance.
    pub fn instance_index(&self) -> Option<&InstanceIndex> {
        match &self.index {
            Index::Instance(i) => Some(i),
            _ => None,
        }
    }

    /// The index of a service.
    pub fn service_index(&self) -> Option<&ServiceIndex> {
        match &self.index {
            Index::Service(s) => Some(s),
            _ => None,
        }
    }

    /// This entry with `ecs`, the entity as its source gave it (JSON).
    pub fn with_ecs(mut self, ecs: Option<&str>) -> Entry {
        self.ecs = ecs.map(Packed::pack);
        self
    }

    /// Whether a task failed: a container exited with a non-zero code, or it
    /// stopped for a reason other than a clean exit, a user or the service
    /// scheduler (`EssentialContainerExited` with exit 0, `UserInitiated`,
    /// `ServiceSchedulerInitiated`). ECS events do not say which containers
    /// are essential, so every container's exit code counts.
    pub fn failed(&self) -> bool {
        self.exit_codes.iter().any(|&c| c != 0)
            || self.stop_code.as_deref().is_some_and(|c| {
                !matches!(
                    c,
                    "EssentialContainerExited" | "UserInitiated" | "ServiceSchedulerInitiated"
                )
            })
    }

    /// This entry with `address`.
    pub fn with_address(mut self, address: Option<String>) -> Entry {
        self.address = address;
        self
    }

    /// The service a task belongs to: NAME of its `group` `service:NAME`.
    pub fn service(&self) -> Option<&str> {
        self.group
            .as_deref()
            .and_then(|g| g.strip_prefix("service:"))
    }

    /// The name of a service entry (the last part of its ARN).
    pub fn service_name(&self) -> &str {
        self.arn.rsplit('/').next().unwrap_or_default()
    }

    /// The key that orders entities: by cluster ARN, then by the entity's ARN.
    pub fn key(&self) -> Key {
        Key {
            cluster_arn: self.cluster_arn.clone(),
            arn: self.arn.clone(),
        }
    }
}

/// Ordering key of the view: `(clusterARN, ARN)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub cluster_arn: String,
    pub arn: String,
}

impl Key {
    /// The smallest key of cluster `cluster_arn`.
    pub fn first_of(cluster_arn: &str) -> Key {
        Key {
            cluster_arn: cluster_arn.to_owned(),
            arn: String::new(),
        }
    }

    /// The smallest key after every key of `cluster_arn` (no ARN holds a NUL).
    pub fn past(cluster_arn: &str) -> Key {
        Key {
            cluster_arn: format!("{cluster_arn}\0"),
            arn: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_is_the_name_before_the_revision() {
        assert_eq!(
            family_of("arn:aws:ecs:us-west-2:1:task-definition/web:42"),
            Some("web")
        );
        assert_eq!(
            family_of("arn:aws:ecs:us-west-2:1:task-definition/web"),
            Some("web")
        );
        assert_eq!(family_of("web:42"), None);
    }

    #[test]
    fn a_services_state_leaves_out_when_it_was_read() {
        let mut s = Service {
            service_arn: "arn:aws:ecs:r:1:service/c/web".into(),
            service_name: "web".into(),
            cluster_arn: "arn:aws:ecs:r:1:cluster/c".into(),
            status: "ACTIVE".into(),
            desired_count: Some(2),
            running_count: Some(2),
            pending_count: Some(0),
            task_definition_arn: None,
            launch_type: None,
            platform_version: None,
            scheduling_strategy: None,
            created_at: None,
            deployments: vec![Deployment {
                status: Some("PRIMARY".into()),
                rollout_state: Some("COMPLETED".into()),
                updated_at: Some("2026-01-01T00:00:00.000Z".into()),
                ..Deployment::default()
            }],
            events: Vec::new(),
            load_balancers: Vec::new(),
            updated_at: Some("2026-01-01T00:00:01.000Z".into()),
        };
        let a = Entry::from_service(&s).unwrap();
        assert_eq!(a.rollout.as_deref(), Some("COMPLETED"));
        assert_eq!(a.service_name(), "web");
        s.updated_at = Some("2026-01-01T00:00:09.000Z".into());
        let b = Entry::from_service(&s).unwrap();
        assert_ne!(a.entity.get(), b.entity.get());
        let same = |x: &Entry, y: &Entry| same_state(Kind::Service, x.entity.get(), y.entity.get());
        assert!(same(&a, &b), "read at another time, the same state");
        s.running_count = Some(1);
        let c = Entry::from_service(&s).unwrap();
        assert!(!same(&a, &c));
        // A deployment's own updatedAt is state.
        s.running_count = None;
        s.deployments[0].updated_at = Some("2026-01-01T00:00:05.000Z".into());
        let d = Entry::from_service(&s).unwrap();
        assert!(!same(&a, &d));
        // Field order does not matter.
        let (x, y) = (
            r#"{"serviceARN":"s","status":"ACTIVE","serviceName":"n","clusterARN":"c"}"#,
            r#"{"clusterARN":"c","serviceARN":"s","serviceName":"n","status":"ACTIVE","updatedAt":"t"}"#,
        );
        assert!(same_state(Kind::Service, x, y));
        // For the other kinds, any difference is a change.
        let task = r#"{"taskARN":"t","updatedAt":"x"}"#;
        assert!(!same_state(
            Kind::Task,
            task,
            r#"{"taskARN":"t","updatedAt":"y"}"#
        ));
    }

    #[test]
    fn packed_json_round_trips_through_the_store_format() {
        let json = r#"{"taskArn":"arn:aws:ecs:r:1:task/c/t","containers":[{"taskArn":"arn:aws:ecs:r:1:task/c/t"}]}"#;
        let mut e =
            Entry::test_task("arn:aws:ecs:r:1:task/c/t", Some(1), "RUNNING").with_ecs(Some(json));
        let fixture = include_str!("../../tests/fixtures/events/task-stopped-ec2.json");
        let detail: serde_json::Value = serde_json::from_str(fixture).unwrap();
        let detail = detail["detail"].to_string();
        let packed = Packed::pack(&detail);
        assert!(
            packed.len() * 3 < detail.len(),
            "{} of {}",
            packed.len(),
            detail.len()
        );
        assert_eq!(packed.unpack(), Some(detail));
        assert_eq!(
            Packed(Box::new([9, 1, 2])).unpack(),
            None,
            "an unknown format"
        );
        assert_eq!(
            e.ecs.as_ref().and_then(Packed::unpack).as_deref(),
            Some(json)
        );
        let stored = serde_json::to_string(&e).unwrap();
        let back: Entry = serde_json::from_str(&stored).unwrap();
        assert_eq!(back.ecs, e.ecs);
        e.ecs = None;
        assert!(!serde_json::to_string(&e).unwrap().contains(r#""ecs":"#));
        assert!(serde_json::from_str::<Packed>("\"!!\"").is_err());
    }

    #[test]
    fn resource_values_render_as_strings() {
        let r = |v| Resource::new("X".into(), "T".into(), v).value;
        assert_eq!(r(ResourceValue::Integer(Some(2048))), "2048");
        assert_eq!(r(ResourceValue::Long(Some(-3))), "-3");
        assert_eq!(r(ResourceValue::Double(Some(10.3))), "10.30");
        let set = vec!["22".to_owned(), "2376".to_owned()];
        assert_eq!(r(ResourceValue::StringSet(&set)), "22,2376");
        assert_eq!(r(ResourceValue::StringSet(&[])), "");
        assert_eq!(r(ResourceValue::Other), "");
    }
}
