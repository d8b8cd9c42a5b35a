//! The ECS API as the reconciler uses it: one page or one batch per call, so
//! that paging, batching, the request budget and throttling backoff live in
//! one place ([`crate::reconciler`]) whatever answers: AWS (or a stand-in such
//! as moto) through [`AwsEcs`], or the built-in simulator.

use crate::decoder::decode::{self, InstanceDetail, TaskDetail};
use crate::model::{Entry, Service, MAX_SERVICE_EVENTS};
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
    /// No credentials for the account (its role cannot be assumed). Tried
    /// again by the next sweep; readiness does not wait for it.
    #[error("no credentials for this account: {0}")]
    Credentials(String),
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
    if is_credentials_failure(&e) {
        return Error::Credentials(text);
    }
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

/// Whether `e` or one of its sources is a credentials provider's failure
/// (say, `AssumeRole` refused).
fn is_credentials_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    use aws_credential_types::provider::error::CredentialsError;
    let mut next = Some(e);
    // Bounded: error chains are short, but nothing outside is trusted.
    for _ in 0..32 {
        let Some(err) = next else { return false };
        if err.downcast_ref::<CredentialsError>().is_some() {
            return true;
        }
        next = err.source();
    }
    false
}

fn some(s: Option<&str>) -> Option<String> {
    s.map(str::to_owned)
}

/// ECS's per-entity version; 0 (what stand-ins without one send) is unknown.
fn version(v: Option<u64>) -> Option<u64> {
    v.filter(|v| *v > 0)
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

fn malformed(e: serde_json::Error) -> decode::Error {
    decode::Error::MalformedDetail(e.to_string())
}

/// A task of a `DescribeTasks` answer, as ECS sent it, into an entry: the
/// same detail type as a task event's.
pub fn task_entry(raw: &RawValue) -> std::result::Result<Entry, decode::Error> {
    let mut detail: TaskDetail = serde_json::from_str(raw.get()).map_err(malformed)?;
    let version = version(detail.version.take());
    let address = detail.private_address();
    let task = decode::task_from_parts(detail, version)?;
    Entry::from_task(&task)
        .map(|e| e.with_address(address))
        .map_err(|e| decode::Error::Render(e.to_string()))
}

/// A container instance of `cluster_arn` from a `DescribeContainerInstances`
/// answer, as ECS sent it, into an entry: the same detail type as an
/// instance event's.
pub fn instance_entry(
    raw: &RawValue,
    cluster_arn: &str,
) -> std::result::Result<Entry, decode::Error> {
    let mut detail: InstanceDetail = serde_json::from_str(raw.get()).map_err(malformed)?;
    detail.cluster_arn = Some(cluster_arn.to_owned());
    let version = version(detail.version.take());
    let inst = decode::instance_from_parts(detail, version)?;
    Entry::from_instance(&inst).map_err(|e| decode::Error::Render(e.to_string()))
}

/// A service of a `DescribeServices` answer, as ECS sent it, into an entry,
/// read now. `cluster` is the cluster asked about, for an answer without
/// `clusterArn`.
pub fn service_entry(raw: &RawValue, cluster: &str) -> std::result::Result<Entry, decode::Error> {
    use crate::arn::{Arn, ClusterRef, Resource};
    let mut service: Service = serde_json::from_str(raw.get()).map_err(malformed)?;
    if service.service_arn.is_empty() {
        return Err(decode::Error::NoArn("serviceArn"));
    }
    let parsed = Arn::parse(&service.service_arn, Resource::Service)
        .map_err(|_| decode::Error::InvalidArn("serviceArn"))?;
    if service.cluster_arn.is_empty() {
        service.cluster_arn = match ClusterRef::parse(cluster) {
            Some(ClusterRef::Arn(c)) => c,
            Some(ClusterRef::Name(name)) => parsed.cluster_arn(&name),
            None => return Err(decode::Error::NoArn("clusterArn")),
        };
    } else {
        Arn::parse(&service.cluster_arn, Resource::Cluster)
            .map_err(|_| decode::Error::InvalidArn("clusterArn"))?;
    }
    if service.status.is_empty() {
        return Err(decode::Error::NoStatus("status"));
    }
    if service.service_name.is_empty() {
        service.service_name = parsed.id.to_owned();
    }
    service.events.truncate(MAX_SERVICE_EVENTS);
    service.updated_at = Some(format_ms(crate::time::now_ms()));
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
    /// The objects of the answer's `list` member, each as ECS sent it.
    fn items(&self, list: &str) -> Vec<Box<RawValue>> {
        let Some(body) = self.0.lock().ok().and_then(|mut b| b.take()) else {
            return Vec::new();
        };
        serde_json::from_slice::<HashMap<String, Box<RawValue>>>(&body)
            .ok()
            .and_then(|mut answer| answer.remove(list))
            .and_then(|items| serde_json::from_str(items.get()).ok())
            .unwrap_or_default()
    }
}

/// Converts what a Describe returned, item by item as ECS sent it (`key`
/// names its ARN), reporting items that cannot be converted as failures
/// (they are then neither written nor deleted). Each entry keeps its object.
fn described(
    items: Vec<Box<RawValue>>,
    fails: &[aws_sdk_ecs::types::Failure],
    key: &str,
    convert: impl Fn(&RawValue) -> std::result::Result<Entry, decode::Error>,
) -> Described {
    let mut d = Described {
        entries: Vec::with_capacity(items.len()),
        failures: failures(fails),
    };
    for item in items {
        match convert(&item) {
            Ok(e) => d.entries.push(e.with_ecs(Some(item.get()))),
            Err(e) => {
                let arn = serde_json::from_str::<HashMap<String, serde_json::Value>>(item.get())
                    .ok()
                    .and_then(|o| o.get(key)?.as_str().map(str::to_owned))
                    .unwrap_or_default();
                d.failures.push((arn, Failure::Other(e.to_string())));
            }
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
                raw.items("containerInstances"),
                out.failures(),
                "containerInstanceArn",
                |i| instance_entry(i, &cluster_arn),
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
                raw.items("tasks"),
                out.failures(),
                "taskArn",
                task_entry,
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
                raw.items("services"),
                out.failures(),
                "serviceArn",
                |s| service_entry(s, &cluster),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(v: serde_json::Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(&v).unwrap()
    }

    #[test]
    fn describe_answers_read_as_ecs_sent_them() {
        let cluster = "arn:aws:ecs:us-west-2:111122223333:cluster/web";
        // Times in epoch seconds, as the ECS API's JSON has them.
        let task = raw(serde_json::json!({
            "taskArn": "arn:aws:ecs:us-west-2:111122223333:task/web/0123",
            "clusterArn": cluster, "lastStatus": "RUNNING", "desiredStatus": "RUNNING",
            "version": 3, "createdAt": 1_780_000_000.25, "launchType": "FARGATE",
            "containers": [{"name": "app", "exitCode": null, "networkBindings": []}],
            "attachments": [{"type": "ElasticNetworkInterface", "details": [
                {"name": "privateIPv4Address", "value": "10.0.0.7"}]}],
        }));
        let e = task_entry(&task).unwrap();
        assert_eq!(
            (e.version, e.address.as_deref()),
            (Some(3), Some("10.0.0.7"))
        );
        let v1: serde_json::Value = serde_json::from_str(e.entity.get()).unwrap();
        assert_eq!(v1["createdAt"], "2026-05-28T20:26:40.250Z");
        let service = raw(serde_json::json!({
            "serviceArn": "arn:aws:ecs:us-west-2:111122223333:service/web/api",
            "status": "ACTIVE", "desiredCount": 2, "taskDefinition": "arn:aws:ecs:us-west-2:111122223333:task-definition/api:7",
            "deployments": [{"id": "ecs-svc/1", "status": "PRIMARY", "rolloutState": "COMPLETED",
                             "taskDefinition": "arn:aws:ecs:us-west-2:111122223333:task-definition/api:7",
                             "createdAt": 1_780_000_000, "updatedAt": 1_780_000_060}],
            "events": (0..30).map(|i| serde_json::json!({"id": i.to_string(), "message": "m"})).collect::<Vec<_>>(),
        }));
        let e = service_entry(&service, "web").unwrap();
        assert_eq!(e.cluster_arn, cluster, "the cluster asked about");
        assert_eq!(e.rollout.as_deref(), Some("COMPLETED"));
        let v1: serde_json::Value = serde_json::from_str(e.entity.get()).unwrap();
        assert_eq!(v1["serviceName"], "api");
        assert_eq!(
            v1["taskDefinitionARN"],
            "arn:aws:ecs:us-west-2:111122223333:task-definition/api:7"
        );
        assert_eq!(
            v1["deployments"][0]["updatedAt"],
            "2026-05-28T20:27:40.000Z"
        );
        assert_eq!(v1["events"].as_array().unwrap().len(), MAX_SERVICE_EVENTS);
        // What cannot be read is a failure of that item, named by its ARN.
        let bad = raw(
            serde_json::json!({"serviceArn": "arn:aws:ecs:us-west-2:111122223333:service/web/x", "status": ""}),
        );
        let d = described(vec![service, bad], &[], "serviceArn", |s| {
            service_entry(s, "web")
        });
        assert_eq!(d.entries.len(), 1);
        assert_eq!(d.failures.len(), 1);
        assert!(d.failures[0].0.ends_with("service/web/x"));
    }

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
