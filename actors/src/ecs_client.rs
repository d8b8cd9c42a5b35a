//! The ECS API as the reconciler uses it: one page or one batch per call, so
//! that paging, batching, the request budget and throttling backoff live in
//! one place ([`crate::reconciler`]) whatever answers: AWS (or a stand-in such
//! as moto) through [`AwsEcs`], or the built-in simulator.

use crate::decode::{self, ContainerDetail, InstanceDetail, OverridesDetail, TaskDetail};
use crate::model::{
    ContainerOverride, Deployment, Entry, KeyValue, LoadBalancer, NetworkBinding, Service,
    ServiceEvent, VersionInfo, MAX_SERVICE_EVENTS,
};
use crate::store::BoxFuture;
use crate::time::format_ms;
use aws_sdk_ecs::config::interceptors::AfterDeserializationInterceptorContextRef;
use aws_sdk_ecs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_ecs::error::{BoxError, ProvideErrorMetadata};
use aws_sdk_ecs::types::DesiredStatus;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most ARNs one Describe call takes.
pub const DESCRIBE_BATCH: usize = 100;
/// Most services one `DescribeServices` call takes.
pub const DESCRIBE_SERVICES_BATCH: usize = 10;

/// Why an ECS call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Retryable, after a backoff.
    #[error("throttled: {0}")]
    Throttled(String),
    /// The cluster is gone. Not retryable.
    #[error("cluster not found: {0}")]
    ClusterNotFound(String),
    /// Anything else. Not retried within a sweep; the next sweep tries again.
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One page of ARNs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub arns: Vec<String>,
    pub next: Option<String>,
}

/// Pages followed at most for one listing (10,000 × 100 ARNs).
pub const MAX_PAGES: usize = 10_000;

/// Every ARN of a listing: `page(token)` fetches one page, from `None` (the
/// first) on, following `next` tokens; at most [`MAX_PAGES`] pages.
pub async fn all_pages<F, Fut>(mut page: F) -> Result<Vec<String>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Page>>,
{
    let mut arns = Vec::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let p = page(token.take()).await?;
        arns.extend(p.arns);
        match p.next.filter(|n| !n.is_empty()) {
            Some(next) => token = Some(next),
            None => return Ok(arns),
        }
    }
    Err(Error::Other(format!("more than {MAX_PAGES} pages")))
}

/// What a Describe call found, and the ARNs it reported as failures.
#[derive(Debug, Clone, Default)]
pub struct Described {
    pub entries: Vec<Entry>,
    /// `(ARN, why)` of the ARNs not described.
    pub failures: Vec<(String, Failure)>,
}

/// Why an ARN was not described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// ECS no longer knows it (its reason `MISSING`): it is gone.
    Missing,
    /// Any other reason ECS gave, or why its answer could not be converted.
    Other(String),
}

impl Failure {
    /// From ECS's `reason`.
    pub fn of(reason: &str) -> Failure {
        match reason {
            "MISSING" => Failure::Missing,
            other => Failure::Other(other.to_owned()),
        }
    }
}

/// Which tasks to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Running,
    Stopped,
}

/// The calls a sweep makes. `cluster` is a cluster ARN or name.
pub trait Ecs: Send + Sync + 'static {
    fn list_clusters(&self, next: Option<String>) -> BoxFuture<'_, Result<Page>>;
    fn list_container_instances(
        &self,
        cluster: &str,
        next: Option<String>,
    ) -> BoxFuture<'_, Result<Page>>;
    fn describe_container_instances(
        &self,
        cluster: &str,
        arns: Vec<String>,
    ) -> BoxFuture<'_, Result<Described>>;
    fn list_tasks(
        &self,
        cluster: &str,
        status: TaskStatus,
        next: Option<String>,
    ) -> BoxFuture<'_, Result<Page>>;
    fn describe_tasks(&self, cluster: &str, arns: Vec<String>) -> BoxFuture<'_, Result<Described>>;
    fn list_services(&self, cluster: &str, next: Option<String>) -> BoxFuture<'_, Result<Page>>;
    /// At most [`DESCRIBE_SERVICES_BATCH`] services (names or ARNs).
    fn describe_services(
        &self,
        cluster: &str,
        services: Vec<String>,
    ) -> BoxFuture<'_, Result<Described>>;
}

/// ECS through the AWS SDK.
#[derive(Clone)]
pub struct AwsEcs {
    client: aws_sdk_ecs::Client,
}

impl AwsEcs {
    pub fn new(client: aws_sdk_ecs::Client) -> Self {
        AwsEcs { client }
    }
}

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: aws_sdk_ecs::error::SdkError<E>,
) -> Error {
    let text = aws_sdk_ecs::error::DisplayErrorContext(&e).to_string();
    match e.code() {
        Some(
            "ThrottlingException"
            | "Throttling"
            | "RequestLimitExceeded"
            | "TooManyRequestsException",
        ) => Error::Throttled(text),
        Some("ClusterNotFoundException") => Error::ClusterNotFound(text),
        _ => Error::Other(text),
    }
}

fn time(t: Option<&aws_sdk_ecs::primitives::DateTime>) -> Option<String> {
    t.and_then(|t| t.to_millis().ok()).map(format_ms)
}

fn some(s: Option<&str>) -> Option<String> {
    s.map(str::to_owned)
}

/// ECS's per-entity version; 0 (what stand-ins without one send) is unknown.
fn version(v: i64) -> Option<u64> {
    (v > 0).then_some(v as u64)
}

fn failures(f: &[aws_sdk_ecs::types::Failure]) -> Vec<(String, Failure)> {
    f.iter()
        .map(|f| {
            (
                f.arn().unwrap_or_default().to_owned(),
                Failure::of(f.reason().unwrap_or_default()),
            )
        })
        .collect()
}

/// Converts a described task into an entry. An API answer carries no version,
/// so it never overrides a version learned from an event.
pub fn task_entry(t: &aws_sdk_ecs::types::Task) -> std::result::Result<Entry, decode::Error> {
    let detail = TaskDetail {
        task_arn: some(t.task_arn()),
        cluster_arn: some(t.cluster_arn()),
        container_instance_arn: some(t.container_instance_arn()),
        task_definition_arn: some(t.task_definition_arn()),
        last_status: some(t.last_status()),
        desired_status: some(t.desired_status()),
        version: None,
        started_by: some(t.started_by()),
        group: some(t.group()),
        launch_type: t.launch_type().map(|l| l.as_str().to_owned()),
        platform_version: some(t.platform_version()),
        availability_zone: some(t.availability_zone()),
        cpu: some(t.cpu()).map(decode::Lenient),
        memory: some(t.memory()).map(decode::Lenient),
        created_at: time(t.created_at()),
        pull_started_at: time(t.pull_started_at()),
        pull_stopped_at: time(t.pull_stopped_at()),
        started_at: time(t.started_at()),
        stopping_at: time(t.stopping_at()),
        stopped_at: time(t.stopped_at()),
        updated_at: None,
        stopped_reason: some(t.stopped_reason()),
        stop_code: t.stop_code().map(|c| c.as_str().to_owned()),
        health_status: t.health_status().map(|h| h.as_str().to_owned()),
        containers: t
            .containers()
            .iter()
            .map(|c| ContainerDetail {
                container_arn: some(c.container_arn()),
                name: some(c.name()),
                image: some(c.image()),
                image_digest: some(c.image_digest()),
                runtime_id: some(c.runtime_id()),
                last_status: some(c.last_status()),
                exit_code: c.exit_code().map(i64::from),
                reason: some(c.reason()),
                cpu: some(c.cpu()).map(decode::Lenient),
                memory: some(c.memory()).map(decode::Lenient),
                network_bindings: c
                    .network_bindings()
                    .iter()
                    .map(|b| NetworkBinding {
                        bind_ip: some(b.bind_ip()),
                        container_port: b.container_port().map(i64::from),
                        host_port: b.host_port().map(i64::from),
                        protocol: b.protocol().map(|p| p.as_str().to_owned()),
                    })
                    .collect(),
                health_status: c.health_status().map(|h| h.as_str().to_owned()),
            })
            .collect(),
        overrides: t.overrides().map(|o| OverridesDetail {
            container_overrides: o
                .container_overrides()
                .iter()
                .map(|c| ContainerOverride {
                    name: some(c.name()),
                    command: (!c.command().is_empty()).then(|| c.command().to_vec()),
                    environment: (!c.environment().is_empty()).then(|| {
                        c.environment()
                            .iter()
                            .map(|kv| KeyValue {
                                name: some(kv.name()),
                                value: some(kv.value()),
                            })
                            .collect()
                    }),
                })
                .collect(),
            task_role_arn: some(o.task_role_arn()),
        }),
        attachments: t
            .attachments()
            .iter()
            .map(|a| decode::AttachmentDetail {
                kind: some(a.r#type()),
                details: a
                    .details()
                    .iter()
                    .map(|kv| decode::AttributeDetail {
                        name: some(kv.name()),
                        value: some(kv.value()),
                    })
                    .collect(),
            })
            .collect(),
    };
    let address = detail.private_address();
    let task = decode::task_from_parts(detail, version(t.version()))?;
    Entry::from_task(&task)
        .map(|e| e.with_address(address))
        .map_err(|e| decode::Error::Render(e.to_string()))
}

/// Converts a described container instance of `cluster_arn` into an entry.
pub fn instance_entry(
    i: &aws_sdk_ecs::types::ContainerInstance,
    cluster_arn: &str,
) -> std::result::Result<Entry, decode::Error> {
    let resources = |list: &[aws_sdk_ecs::types::Resource]| {
        list.iter()
            .map(|r| decode::ResourceDetail {
                name: some(r.name()),
                kind: some(r.r#type()),
                integer_value: Some(i64::from(r.integer_value())),
                long_value: Some(r.long_value()),
                double_value: Some(r.double_value()),
                string_set_value: r.string_set_value().to_vec(),
            })
            .collect()
    };
    let detail = InstanceDetail {
        container_instance_arn: some(i.container_instance_arn()),
        cluster_arn: Some(cluster_arn.to_owned()),
        ec2_instance_id: some(i.ec2_instance_id()),
        status: some(i.status()),
        status_reason: some(i.status_reason()),
        agent_connected: Some(i.agent_connected()),
        agent_update_status: i.agent_update_status().map(|s| s.as_str().to_owned()),
        version: None,
        registered_resources: resources(i.registered_resources()),
        remaining_resources: resources(i.remaining_resources()),
        running_tasks_count: Some(i64::from(i.running_tasks_count())),
        pending_tasks_count: Some(i64::from(i.pending_tasks_count())),
        attributes: i
            .attributes()
            .iter()
            .map(|a| decode::AttributeDetail {
                name: Some(a.name().to_owned()),
                value: some(a.value()),
            })
            .collect(),
        version_info: i.version_info().map(|v| VersionInfo {
            agent_hash: some(v.agent_hash()),
            agent_version: some(v.agent_version()),
            docker_version: some(v.docker_version()),
        }),
        registered_at: time(i.registered_at()),
        updated_at: None,
    };
    let inst = decode::instance_from_parts(detail, version(i.version()))?;
    Entry::from_instance(&inst).map_err(|e| decode::Error::Render(e.to_string()))
}

/// Converts a described service into an entry, read now. `cluster` is the
/// cluster asked about, for an answer without `clusterArn`.
pub fn service_entry(
    s: &aws_sdk_ecs::types::Service,
    cluster: &str,
) -> std::result::Result<Entry, decode::Error> {
    use crate::arn::{Arn, ClusterRef, Resource};
    let arn = s
        .service_arn()
        .filter(|a| !a.is_empty())
        .ok_or(decode::Error::NoArn("serviceArn"))?;
    let parsed =
        Arn::parse(arn, Resource::Service).map_err(|_| decode::Error::InvalidArn("serviceArn"))?;
    let cluster_arn = match (
        s.cluster_arn().filter(|c| !c.is_empty()),
        ClusterRef::parse(cluster),
    ) {
        (Some(c), _) => {
            Arn::parse(c, Resource::Cluster)
                .map_err(|_| decode::Error::InvalidArn("clusterArn"))?;
            c.to_owned()
        }
        (None, Some(ClusterRef::Arn(c))) => c,
        (None, Some(ClusterRef::Name(name))) => parsed.cluster_arn(&name),
        (None, None) => return Err(decode::Error::NoArn("clusterArn")),
    };
    let status = s
        .status()
        .filter(|st| !st.is_empty())
        .ok_or(decode::Error::NoStatus("status"))?;
    let count = |n: i32| Some(i64::from(n));
    let service = Service {
        service_arn: arn.to_owned(),
        service_name: s.service_name().unwrap_or(parsed.id).to_owned(),
        cluster_arn,
        status: status.to_owned(),
        desired_count: count(s.desired_count()),
        running_count: count(s.running_count()),
        pending_count: count(s.pending_count()),
        task_definition_arn: some(s.task_definition()),
        launch_type: s.launch_type().map(|l| l.as_str().to_owned()),
        platform_version: some(s.platform_version()),
        scheduling_strategy: s.scheduling_strategy().map(|l| l.as_str().to_owned()),
        created_at: time(s.created_at()),
        deployments: s
            .deployments()
            .iter()
            .map(|d| Deployment {
                id: some(d.id()),
                status: some(d.status()),
                task_definition_arn: some(d.task_definition()),
                desired_count: count(d.desired_count()),
                running_count: count(d.running_count()),
                pending_count: count(d.pending_count()),
                failed_tasks: count(d.failed_tasks()),
                rollout_state: d.rollout_state().map(|r| r.as_str().to_owned()),
                rollout_state_reason: some(d.rollout_state_reason()),
                launch_type: d.launch_type().map(|l| l.as_str().to_owned()),
                created_at: time(d.created_at()),
                updated_at: time(d.updated_at()),
            })
            .collect(),
        events: s
            .events()
            .iter()
            .take(MAX_SERVICE_EVENTS)
            .map(|e| ServiceEvent {
                id: some(e.id()),
                created_at: time(e.created_at()),
                message: some(e.message()),
            })
            .collect(),
        load_balancers: s
            .load_balancers()
            .iter()
            .map(|l| LoadBalancer {
                target_group_arn: some(l.target_group_arn()),
                load_balancer_name: some(l.load_balancer_name()),
                container_name: some(l.container_name()),
                container_port: l.container_port().map(i64::from),
            })
            .collect(),
        updated_at: Some(format_ms(crate::time::now_ms())),
    };
    Entry::from_service(&service).map_err(|e| decode::Error::Render(e.to_string()))
}

/// Keeps the body of one call's answer, so that the entities it describes
/// can be stored as ECS sent them (for the ECS read API), not only as the
/// SDK's types hold them.
#[derive(Debug, Clone, Default)]
struct RawAnswer(Arc<Mutex<Option<bytes::Bytes>>>);

impl Intercept for RawAnswer {
    fn name(&self) -> &'static str {
        "RawAnswer"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        if let (Some(body), Ok(mut slot)) = (context.response().body().bytes(), self.0.lock()) {
            *slot = Some(bytes::Bytes::copy_from_slice(body));
        }
        Ok(())
    }
}

impl RawAnswer {
    /// The objects of the answer's `list` member, by their `key` member.
    fn objects(&self, list: &str, key: &str) -> HashMap<String, Box<RawValue>> {
        let Some(body) = self.0.lock().ok().and_then(|mut b| b.take()) else {
            return HashMap::new();
        };
        let Ok(answer) = serde_json::from_slice::<HashMap<String, serde_json::Value>>(&body) else {
            return HashMap::new();
        };
        let Some(serde_json::Value::Array(items)) = answer.get(list) else {
            return HashMap::new();
        };
        items
            .iter()
            .filter_map(|item| {
                let arn = item.get(key)?.as_str()?.to_owned();
                Some((arn, serde_json::value::to_raw_value(item).ok()?))
            })
            .collect()
    }
}

/// Converts what a Describe returned, reporting entities that cannot be
/// converted as failures (they are then neither written nor deleted). Each
/// entry keeps its object of the raw answer (`raw`, by ARN).
fn described<T>(
    items: &[T],
    fails: &[aws_sdk_ecs::types::Failure],
    arn: impl Fn(&T) -> Option<&str>,
    convert: impl Fn(&T) -> std::result::Result<Entry, decode::Error>,
    mut raw: HashMap<String, Box<RawValue>>,
) -> Described {
    let mut d = Described {
        entries: Vec::with_capacity(items.len()),
        failures: failures(fails),
    };
    for item in items {
        match convert(item) {
            Ok(e) => {
                let ecs = raw.remove(&e.arn);
                d.entries
                    .push(e.with_ecs(ecs.as_deref().map(RawValue::get)));
            }
            Err(e) => d.failures.push((
                arn(item).unwrap_or_default().to_owned(),
                Failure::Other(e.to_string()),
            )),
        }
    }
    d
}

impl Ecs for AwsEcs {
    fn list_clusters(&self, next: Option<String>) -> BoxFuture<'_, Result<Page>> {
        Box::pin(async move {
            let out = self
                .client
                .list_clusters()
                .set_next_token(next)
                .send()
                .await
                .map_err(classify)?;
            Ok(Page {
                arns: out.cluster_arns().to_vec(),
                next: some(out.next_token()),
            })
        })
    }

    fn list_container_instances(
        &self,
        cluster: &str,
        next: Option<String>,
    ) -> BoxFuture<'_, Result<Page>> {
        let cluster = cluster.to_owned();
        Box::pin(async move {
            let out = self
                .client
                .list_container_instances()
                .cluster(cluster)
                .set_next_token(next)
                .send()
                .await
                .map_err(classify)?;
            Ok(Page {
                arns: out.container_instance_arns().to_vec(),
                next: some(out.next_token()),
            })
        })
    }

    fn describe_container_instances(
        &self,
        cluster: &str,
        arns: Vec<String>,
    ) -> BoxFuture<'_, Result<Described>> {
        let cluster = cluster.to_owned();
        Box::pin(async move {
            let raw = RawAnswer::default();
            let out = self
                .client
                .describe_container_instances()
                .cluster(&cluster)
                .set_container_instances(Some(arns))
                .customize()
                .interceptor(raw.clone())
                .send()
                .await
                .map_err(classify)?;
            // The instances do not carry their cluster: it is the one asked about.
            let cluster_arn = match crate::arn::ClusterRef::parse(&cluster) {
                Some(crate::arn::ClusterRef::Name(name)) => out
                    .container_instances()
                    .first()
                    .and_then(|i| i.container_instance_arn())
                    .and_then(|a| {
                        crate::arn::Arn::parse(a, crate::arn::Resource::ContainerInstance).ok()
                    })
                    .map(|a| a.cluster_arn(&name))
                    .unwrap_or(cluster),
                _ => cluster,
            };
            Ok(described(
                out.container_instances(),
                out.failures(),
                |i| i.container_instance_arn(),
                |i| instance_entry(i, &cluster_arn),
                raw.objects("containerInstances", "containerInstanceArn"),
            ))
        })
    }

    fn list_tasks(
        &self,
        cluster: &str,
        status: TaskStatus,
        next: Option<String>,
    ) -> BoxFuture<'_, Result<Page>> {
        let cluster = cluster.to_owned();
        Box::pin(async move {
            let status = match status {
                TaskStatus::Running => DesiredStatus::Running,
                TaskStatus::Stopped => DesiredStatus::Stopped,
            };
            let out = self
                .client
                .list_tasks()
                .cluster(cluster)
                .desired_status(status)
                .set_next_token(next)
                .send()
                .await
                .map_err(classify)?;
            Ok(Page {
                arns: out.task_arns().to_vec(),
                next: some(out.next_token()),
            })
        })
    }

    fn describe_tasks(&self, cluster: &str, arns: Vec<String>) -> BoxFuture<'_, Result<Described>> {
        let cluster = cluster.to_owned();
        Box::pin(async move {
            let raw = RawAnswer::default();
            let out = self
                .client
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(arns))
                .customize()
                .interceptor(raw.clone())
                .send()
                .await
                .map_err(classify)?;
            Ok(described(
                out.tasks(),
                out.failures(),
                |t| t.task_arn(),
                task_entry,
                raw.objects("tasks", "taskArn"),
            ))
        })
    }

    fn list_services(&self, cluster: &str, next: Option<String>) -> BoxFuture<'_, Result<Page>> {
        let cluster = cluster.to_owned();
        Box::pin(async move {
            let out = self
                .client
                .list_services()
                .cluster(cluster)
                .set_next_token(next)
                .send()
                .await
                .map_err(classify)?;
            Ok(Page {
                arns: out.service_arns().to_vec(),
                next: some(out.next_token()),
            })
        })
    }

    fn describe_services(
        &self,
        cluster: &str,
        services: Vec<String>,
    ) -> BoxFuture<'_, Result<Described>> {
        let cluster = cluster.to_owned();
        Box::pin(async move {
            let raw = RawAnswer::default();
            let out = self
                .client
                .describe_services()
                .cluster(&cluster)
                .set_services(Some(services))
                .customize()
                .interceptor(raw.clone())
                .send()
                .await
                .map_err(classify)?;
            Ok(described(
                out.services(),
                out.failures(),
                |s| s.service_arn(),
                |s| service_entry(s, &cluster),
                raw.objects("services", "serviceArn"),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn all_pages_follows_tokens_to_the_last_page() {
        let mut asked = Vec::new();
        let arns = all_pages(|token: Option<String>| {
            asked.push(token.clone());
            let n: usize = token.as_deref().map_or(0, |t| t.parse().unwrap());
            async move {
                Ok(Page {
                    arns: vec![format!("a{n}")],
                    // An empty token ends a listing, as no token does.
                    next: Some(if n < 2 {
                        (n + 1).to_string()
                    } else {
                        String::new()
                    }),
                })
            }
        })
        .await
        .unwrap();
        assert_eq!(arns, ["a0", "a1", "a2"]);
        assert_eq!(asked, [None, Some("1".into()), Some("2".into())]);
        let endless = all_pages(|_| async {
            Ok(Page {
                arns: Vec::new(),
                next: Some("again".into()),
            })
        })
        .await;
        assert!(endless.is_err(), "bounded");
    }
}
