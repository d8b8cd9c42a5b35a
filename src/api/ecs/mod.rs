//! `POST /ecs`: ECS's read operations served from the store, in ECS's own
//! protocol (AWS JSON 1.1), so AWS SDKs and the AWS CLI read cluster state
//! here by changing only their ECS endpoint (ecs-api.md). Read-only: any
//! other operation is refused, never forwarded.
//!
//! Lists page through one snapshot (as `/v1` lists do); a `nextToken` names
//! the operation, a digest of the request's other members, the snapshot and
//! the last ARN returned, so it works only with the request it came from.

mod shape;
pub mod sigv4;

use super::query::{Cursor, Filter, INSTANCE_STATUSES, LAUNCH_TYPES};
use super::State;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actors::accounts::Place;
use actors::arn::ClusterRef;
use actors::model::{Key, Kind};
use actors::view::Snapshot;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::ops::Bound;

/// How a request's account and region are picked (accounts.md): off (every
/// account and region, as one-place deployments always answered), or on:
/// the region of the request's signature, and the account its access key
/// reads.
#[derive(Debug, Clone, Default)]
pub struct Places {
    /// Whether the deployment spans several accounts or regions.
    pub several: bool,
    /// The home account: read by keys that name no account.
    pub home: Option<String>,
}

impl Places {
    /// The account and region `req` is answered for (`None` parts: any).
    fn of(&self, req: &HttpRequest, creds: Option<&sigv4::Credentials>) -> Place {
        if !self.several {
            return Place::default();
        }
        let authorization = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let Some((key, region)) = authorization.and_then(sigv4::scope) else {
            return Place::new(self.home.as_deref(), None);
        };
        let account = match creds {
            Some(c) => c.account_of(key).or(self.home.as_deref()),
            None if actors::arn::is_valid_account(key) => Some(key),
            None => self.home.as_deref(),
        };
        let region = Some(region).filter(|r| actors::arn::is_valid_region(r));
        Place::new(account, region)
    }
}

/// The `X-Amz-Target` prefix of ECS's operations.
pub const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";

/// The operations served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ListClusters,
    DescribeClusters,
    ListContainerInstances,
    DescribeContainerInstances,
    ListTasks,
    DescribeTasks,
    ListServices,
    DescribeServices,
}

impl Operation {
    pub const ALL: [Operation; 8] = [
        Operation::ListClusters,
        Operation::DescribeClusters,
        Operation::ListContainerInstances,
        Operation::DescribeContainerInstances,
        Operation::ListTasks,
        Operation::DescribeTasks,
        Operation::ListServices,
        Operation::DescribeServices,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::ListClusters => "ListClusters",
            Operation::DescribeClusters => "DescribeClusters",
            Operation::ListContainerInstances => "ListContainerInstances",
            Operation::DescribeContainerInstances => "DescribeContainerInstances",
            Operation::ListTasks => "ListTasks",
            Operation::DescribeTasks => "DescribeTasks",
            Operation::ListServices => "ListServices",
            Operation::DescribeServices => "DescribeServices",
        }
    }

    fn parse(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|o| o.name() == name)
    }
}

/// An error as ECS sends it: a status, `__type` and `message`.
#[derive(Debug, Clone, PartialEq)]
pub struct EcsError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl EcsError {
    fn client(kind: &'static str, message: impl Into<String>) -> EcsError {
        EcsError {
            status: StatusCode::BAD_REQUEST,
            kind,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> EcsError {
        EcsError::client("InvalidParameterException", message)
    }

    fn cluster_not_found() -> EcsError {
        EcsError::client("ClusterNotFoundException", "Cluster not found.")
    }

    fn unavailable() -> EcsError {
        EcsError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "ServerException",
            message: "Store unavailable".into(),
        }
    }
}

/// The members of every request served (each operation reads its own).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    cluster: Option<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
    container_instance: Option<String>,
    family: Option<String>,
    started_by: Option<String>,
    service_name: Option<String>,
    desired_status: Option<String>,
    launch_type: Option<String>,
    status: Option<String>,
    filter: Option<String>,
    scheduling_strategy: Option<String>,
    clusters: Option<Vec<String>>,
    container_instances: Option<Vec<String>>,
    tasks: Option<Vec<String>>,
    services: Option<Vec<String>>,
    #[allow(dead_code)] // accepted (TAGS); tags are not kept
    include: Option<Vec<String>>,
}

fn answer(body: Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/x-amz-json-1.1")
        .insert_header(("x-amzn-RequestId", request_id()))
        .body(body.to_string())
}

fn refuse(e: &EcsError) -> HttpResponse {
    HttpResponse::build(e.status)
        .content_type("application/x-amz-json-1.1")
        .insert_header(("x-amzn-RequestId", request_id()))
        .insert_header(("x-amzn-ErrorType", e.kind))
        .body(json!({"__type": e.kind, "message": e.message}).to_string())
}

fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "css-{:x}-{:x}",
        actors::time::now_ms(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `POST /ecs`.
pub(super) async fn serve(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<State>,
) -> HttpResponse {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let op = target
        .strip_prefix(TARGET_PREFIX)
        .and_then(Operation::parse);
    let place = state.ecs_places.of(&req, state.ecs_credentials.as_deref());
    let result = authenticate(&req, &body, &state).and_then(|()| match op {
        Some(op) => dispatch(op, &body, &state, place),
        None => Err(unsupported(target)),
    });
    let label = op.map_or("other", Operation::name);
    state.metrics.ecs_request(label, result.is_ok());
    match result {
        Ok(v) => answer(v),
        Err(e) => refuse(&e),
    }
}

fn unsupported(target: &str) -> EcsError {
    let name = target.rsplit('.').next().unwrap_or(target);
    let served: Vec<&str> = Operation::ALL.iter().map(|o| o.name()).collect();
    EcsError::client(
        "UnsupportedOperationException",
        format!(
            "{} is not served here: this endpoint is read-only and serves {}",
            if name.is_empty() {
                "(no X-Amz-Target)"
            } else {
                name
            },
            served.join(", ")
        ),
    )
}

/// With `server.ecs_credentials_file`, a valid signature; with only a bearer
/// token configured, nothing (SDKs cannot send it); else open, like `/v1`.
fn authenticate(req: &HttpRequest, body: &[u8], state: &State) -> Result<(), EcsError> {
    let forbidden = |kind, message: String| EcsError {
        status: StatusCode::FORBIDDEN,
        kind,
        message,
    };
    let Some(creds) = &state.ecs_credentials else {
        if state.token.is_some() {
            return Err(forbidden(
                "UnrecognizedClientException",
                "/ecs takes AWS signatures: set server.ecs_credentials_file to use it \
                 while server.auth_token_file guards the API"
                    .into(),
            ));
        }
        return Ok(());
    };
    let signed = sigv4::Signed {
        method: req.method().as_str(),
        path: req.uri().path(),
        query: req.uri().query().unwrap_or_default(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes()))
            .collect(),
        body,
    };
    sigv4::verify(creds, &signed, "ecs", actors::time::now_ms()).map_err(|d| match d {
        sigv4::Denied::UnrecognizedClient(m) => forbidden("UnrecognizedClientException", m),
        sigv4::Denied::InvalidSignature(m) => forbidden("InvalidSignatureException", m),
    })
}

fn dispatch(op: Operation, body: &[u8], state: &State, place: Place) -> Result<Value, EcsError> {
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| {
            EcsError::client(
                "SerializationException",
                format!("The request body is not JSON: {e}"),
            )
        })?
    };
    if !value.is_object() {
        return Err(EcsError::client(
            "SerializationException",
            "The request body must be a JSON object",
        ));
    }
    let r: Request = serde_json::from_value(value.clone())
        .map_err(|e| EcsError::client("SerializationException", e.to_string()))?;
    let snap = state
        .reader
        .snapshot()
        .map_err(|_| EcsError::unavailable())?;
    let ctx = Ctx {
        op,
        r: &r,
        body: &value,
        state,
        snap,
        place,
    };
    match op {
        Operation::ListClusters => ctx.list_clusters(),
        Operation::DescribeClusters => ctx.describe_clusters(),
        Operation::ListContainerInstances => ctx.list(Kind::Instance),
        Operation::ListTasks => ctx.list(Kind::Task),
        Operation::ListServices => ctx.list(Kind::Service),
        Operation::DescribeContainerInstances => ctx.describe(Kind::Instance),
        Operation::DescribeTasks => ctx.describe(Kind::Task),
        Operation::DescribeServices => ctx.describe(Kind::Service),
    }
}

/// One request being answered.
struct Ctx<'a> {
    op: Operation,
    r: &'a Request,
    /// The request as sent, for the digest that ties a token to it.
    body: &'a Value,
    state: &'a State,
    snap: Snapshot,
    /// The account and region the request reads.
    place: Place,
}

/// Where a listing resumes.
struct Resume {
    snap: Snapshot,
    after: Option<Key>,
}

fn known_clusters(snap: &Snapshot) -> BTreeSet<String> {
    snap.clusters()
}

fn one_of(name: &str, value: Option<&str>, allowed: &[&str]) -> Result<Option<String>, EcsError> {
    match value {
        None => Ok(None),
        Some(v) if allowed.contains(&v) => Ok(Some(v.to_owned())),
        Some(v) => Err(EcsError::invalid(format!(
            "{name} '{v}' is not valid: it must be one of {}",
            allowed.join(", ")
        ))),
    }
}

impl Ctx<'_> {
    /// The cluster of the request (`default` when none is named), by name or ARN.
    fn cluster(&self) -> Result<String, EcsError> {
        let given = self.r.cluster.as_deref().unwrap_or("default");
        self.resolve(given).ok_or_else(EcsError::cluster_not_found)
    }

    fn resolve(&self, given: &str) -> Option<String> {
        let wanted = ClusterRef::parse(given)?;
        self.known_clusters(&self.snap)
            .into_iter()
            .find(|c| wanted.matches(c))
    }

    /// The clusters of the request's account and region that some entity
    /// of `snap` is stored under, in order.
    fn known_clusters(&self, snap: &Snapshot) -> BTreeSet<String> {
        let mut all = known_clusters(snap);
        all.retain(|c| self.place.holds(&Place::of_arn(c)));
        all
    }

    /// `maxResults`: 1 to `max`, `default` when absent.
    fn max_results(&self, default: usize, max: usize) -> Result<usize, EcsError> {
        match self.r.max_results {
            None => Ok(default),
            Some(n) if (1..=max as i64).contains(&n) => Ok(n as usize),
            Some(n) => Err(EcsError::invalid(format!(
                "maxResults must be between 1 and {max}, not {n}"
            ))),
        }
    }

    /// The digest of the request without its paging members.
    fn request_digest(&self) -> u64 {
        let mut rest = self.body.clone();
        if let Some(o) = rest.as_object_mut() {
            o.remove("nextToken");
            o.remove("maxResults");
        }
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::hash::DefaultHasher::new();
        (self.op.name(), rest.to_string()).hash(&mut h);
        h.finish()
    }

    /// What this request's cursors are scoped to: the operation and the
    /// digest of the request without its paging members.
    fn scope(&self) -> String {
        format!("ecs:{:x}", self.request_digest())
    }

    fn token(&self, snap: &Snapshot, last: &Key) -> String {
        Cursor {
            scope: self.scope(),
            revision: snap.revision,
            after: last.clone(),
        }
        .encode()
    }

    fn resume(&self) -> Result<Resume, EcsError> {
        let Some(token) = &self.r.next_token else {
            return Ok(Resume {
                snap: self.snap.clone(),
                after: None,
            });
        };
        let cursor = Cursor::decode(token, &self.scope())
            .ok_or_else(|| EcsError::invalid("The nextToken is not valid for this request"))?;
        let snap = match self.state.pages.get(cursor.revision) {
            Some(s) => s,
            None if self.snap.revision == cursor.revision => self.snap.clone(),
            None => return Err(EcsError::invalid("The nextToken has expired: list again")),
        };
        Ok(Resume {
            snap,
            after: Some(cursor.after),
        })
    }

    /// Up to `max` of `keys` (in order), and a token when more are left.
    fn page(
        &self,
        snap: &Snapshot,
        keys: impl Iterator<Item = Key>,
        max: usize,
    ) -> (Vec<String>, Option<String>) {
        let mut out = Vec::new();
        let mut last = None;
        for k in keys {
            if out.len() == max {
                let token = last.map(|l: Key| self.token(snap, &l));
                if token.is_some() {
                    self.state.pages.put(snap);
                }
                return (out, token);
            }
            out.push(k.arn.clone());
            last = Some(k);
        }
        (out, None)
    }

    fn list_clusters(&self) -> Result<Value, EcsError> {
        let max = self.max_results(100, 100)?;
        let resume = self.resume()?;
        let after = resume.after.as_ref().map(|k| k.arn.clone());
        let keys = self
            .known_clusters(&resume.snap)
            .into_iter()
            .filter(|c| after.as_ref().is_none_or(|a| c > a))
            .map(|c| Key {
                cluster_arn: String::new(),
                arn: c,
            });
        let (arns, next) = self.page(&resume.snap, keys, max);
        Ok(with_token(json!({ "clusterArns": arns }), next))
    }

    fn list(&self, kind: Kind) -> Result<Value, EcsError> {
        let (default_max, member) = match kind {
            Kind::Task => (100, "taskArns"),
            Kind::Instance => (100, "containerInstanceArns"),
            Kind::Service => (10, "serviceArns"),
        };
        let max = self.max_results(default_max, 100)?;
        let cluster = self.cluster()?;
        let filter = self.filter(kind)?;
        let resume = self.resume()?;
        let start = match &resume.after {
            Some(k) if k.cluster_arn == cluster => Bound::Excluded(k.clone()),
            Some(_) => {
                return Err(EcsError::invalid(
                    "The nextToken is not valid for this request",
                ))
            }
            None => Bound::Included(Key {
                cluster_arn: cluster.clone(),
                arn: String::new(),
            }),
        };
        let keys = resume
            .snap
            .of(kind)
            .range((start, Bound::Excluded(Key::past(&cluster))))
            .filter(|(_, e)| filter.matches_besides_cluster(e))
            .map(|(k, _)| k.clone());
        let (arns, next) = self.page(&resume.snap, keys, max);
        Ok(with_token(json!({ member: arns }), next))
    }

    /// The request's filters of a `List*` call of `kind`, as the API's one
    /// [`Filter`] (ECS's own messages for values it does not accept).
    fn filter(&self, kind: Kind) -> Result<Filter, EcsError> {
        let r = self.r;
        let mut f = Filter {
            kind: Some(kind),
            launch_type: one_of("launchType", r.launch_type.as_deref(), LAUNCH_TYPES)?,
            ..Filter::default()
        };
        match kind {
            Kind::Task => {
                // ECS lists the tasks it is to keep running unless asked.
                f.desired_status = one_of(
                    "desiredStatus",
                    r.desired_status.as_deref(),
                    &["RUNNING", "PENDING", "STOPPED"],
                )?
                .or_else(|| Some("RUNNING".into()));
                f.family = r.family.clone();
                f.started_by = r.started_by.clone();
                f.service = r.service_name.clone();
                f.container_instance = r.container_instance.clone();
            }
            Kind::Instance => {
                if r.filter.is_some() {
                    return Err(EcsError::invalid(
                        "filter (the cluster query language) is not supported here",
                    ));
                }
                f.launch_type = None;
                // ECS lists no INACTIVE instances, and does not accept it.
                let listed: Vec<&str> = INSTANCE_STATUSES
                    .iter()
                    .copied()
                    .filter(|s| *s != "INACTIVE")
                    .collect();
                f.status = one_of("status", r.status.as_deref(), &listed)?;
            }
            Kind::Service => {
                f.scheduling_strategy = one_of(
                    "schedulingStrategy",
                    r.scheduling_strategy.as_deref(),
                    &["REPLICA", "DAEMON"],
                )?;
            }
        }
        Ok(f)
    }

    fn describe(&self, kind: Kind) -> Result<Value, EcsError> {
        let (wanted, member, most, what) = match kind {
            Kind::Task => (&self.r.tasks, "tasks", 100, "Tasks"),
            Kind::Instance => (
                &self.r.container_instances,
                "containerInstances",
                100,
                "Container instances",
            ),
            Kind::Service => (&self.r.services, "services", 10, "Services"),
        };
        let wanted = wanted.as_deref().unwrap_or_default();
        if wanted.is_empty() {
            return Err(EcsError::invalid(format!("{what} cannot be empty.")));
        }
        if wanted.len() > most {
            return Err(EcsError::invalid(format!(
                "{what} cannot contain more than {most} elements, not {}",
                wanted.len()
            )));
        }
        let cluster = self.cluster()?;
        let map = self.snap.of(kind);
        let mut found = Vec::new();
        let mut failures = Vec::new();
        for given in wanted {
            let hit = if given.starts_with("arn:") {
                map.get(&Key {
                    cluster_arn: cluster.clone(),
                    arn: given.clone(),
                })
            } else {
                // An ID (a service's name): the entity of the cluster whose ARN ends with it.
                map.range((
                    Bound::Included(Key {
                        cluster_arn: cluster.clone(),
                        arn: String::new(),
                    }),
                    Bound::Excluded(Key::past(&cluster)),
                ))
                .map(|(_, e)| e)
                .find(|e| e.arn.rsplit('/').next() == Some(given.as_str()))
            };
            match hit {
                Some(e) => found.push(shape::ecs_value(e)),
                None => failures.push(json!({"arn": given, "reason": "MISSING"})),
            }
        }
        Ok(json!({ member: found, "failures": failures }))
    }

    fn describe_clusters(&self) -> Result<Value, EcsError> {
        let wanted = match &self.r.clusters {
            Some(c) if c.len() > 100 => {
                return Err(EcsError::invalid(
                    "Clusters cannot contain more than 100 elements",
                ))
            }
            Some(c) if !c.is_empty() => c.clone(),
            _ => vec!["default".to_owned()],
        };
        let mut found = Vec::new();
        let mut failures = Vec::new();
        for given in &wanted {
            let Some(arn) = self.resolve(given) else {
                failures.push(json!({"arn": given, "reason": "MISSING"}));
                continue;
            };
            let of = |kind: Kind| {
                self.snap.of(kind).range((
                    Bound::Included(Key {
                        cluster_arn: arn.clone(),
                        arn: String::new(),
                    }),
                    Bound::Excluded(Key::past(&arn)),
                ))
            };
            let count =
                |kind: Kind, status: &str| of(kind).filter(|(_, e)| e.status == status).count();
            found.push(json!({
                "clusterArn": arn,
                "clusterName": actors::arn::cluster_name(&arn).unwrap_or_default(),
                "status": "ACTIVE",
                "registeredContainerInstancesCount": of(Kind::Instance).count(),
                "runningTasksCount": count(Kind::Task, "RUNNING"),
                "pendingTasksCount": count(Kind::Task, "PENDING"),
                "activeServicesCount": count(Kind::Service, "ACTIVE"),
                "statistics": [],
                "tags": [],
                "settings": [],
                "capacityProviders": [],
                "defaultCapacityProviderStrategy": [],
            }));
        }
        Ok(json!({"clusters": found, "failures": failures}))
    }
}

fn with_token(mut v: Value, next: Option<String>) -> Value {
    if let (Some(t), Some(o)) = (next, v.as_object_mut()) {
        o.insert("nextToken".into(), Value::String(t));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_the_region_it_signed_for_and_its_keys_account() {
        let signed = |key: &str, region: &str| {
            let auth = format!(
                "AWS4-HMAC-SHA256 Credential={key}/20261207/{region}/ecs/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=00"
            );
            actix_web::test::TestRequest::default()
                .insert_header(("authorization", auth))
                .to_http_request()
        };
        let (home, member) = ("111111111111", "222222222222");
        let places = Places {
            several: true,
            home: Some(home.into()),
        };
        let place = |a: &str, r: &str| Place::new(Some(a), Some(r));
        // Without a credentials file: a 12-digit key names the account.
        assert_eq!(
            places.of(&signed(member, "eu-west-1"), None),
            place(member, "eu-west-1")
        );
        assert_eq!(
            places.of(&signed("AKID", "us-east-1"), None),
            place(home, "us-east-1")
        );
        // With one: the third column, else the home account.
        let creds = sigv4::Credentials::parse("AKIDM s 222222222222\nAKIDH s\n").unwrap();
        let with = |key: &str| places.of(&signed(key, "us-east-1"), Some(&creds));
        assert_eq!(with("AKIDM"), place(member, "us-east-1"));
        assert_eq!(with("AKIDH"), place(home, "us-east-1"));
        assert_eq!(with(member), place(home, "us-east-1"), "the file decides");
        // Unsigned: the home account, any region; one place: everything.
        let unsigned = actix_web::test::TestRequest::default().to_http_request();
        assert_eq!(places.of(&unsigned, None), Place::new(Some(home), None));
        let one = Places::default();
        assert_eq!(one.of(&signed(member, "eu-west-1"), None), Place::default());
    }

    #[test]
    fn every_served_operation_has_its_name() {
        for op in Operation::ALL {
            assert_eq!(Operation::parse(op.name()), Some(op));
        }
        assert_eq!(Operation::parse("RunTask"), None);
        let e = unsupported("AmazonEC2ContainerServiceV20141113.StopTask");
        assert_eq!(e.kind, "UnsupportedOperationException");
        assert!(
            e.message.starts_with("StopTask is not served here"),
            "{}",
            e.message
        );
        assert!(e.message.contains("DescribeServices"));
    }
}
