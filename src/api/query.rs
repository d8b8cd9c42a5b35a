//! Query parameters of the v1 API: the list filters, `limit` and
//! `nextToken`, validated into typed values with the v0.3 error messages.

use super::Error;
use actors::arn::{Arn, ClusterRef, Resource};
use actors::model::{Entry, Key, Kind};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Task statuses accepted by `status` and `desiredStatus`.
pub const TASK_STATUSES: &[&str] = &[
    "PROVISIONING",
    "PENDING",
    "ACTIVATING",
    "RUNNING",
    "DEACTIVATING",
    "STOPPING",
    "DEPROVISIONING",
    "STOPPED",
    "DELETED",
];

/// Instance statuses accepted by `status`.
pub const INSTANCE_STATUSES: &[&str] = &[
    "ACTIVE",
    "DRAINING",
    "INACTIVE",
    "REGISTERING",
    "DEREGISTERING",
    "REGISTRATION_FAILED",
];

/// Service statuses accepted by `status`.
pub const SERVICE_STATUSES: &[&str] = &["ACTIVE", "DRAINING", "INACTIVE"];

/// Rollout states accepted by `rollout`.
pub const ROLLOUT_STATES: &[&str] = &["IN_PROGRESS", "COMPLETED", "FAILED"];

/// Launch types (the `launchType` filters of `/v1` and `/ecs`).
pub const LAUNCH_TYPES: &[&str] = &["EC2", "FARGATE", "EXTERNAL"];

/// Largest `limit`.
pub const MAX_LIMIT: usize = 10_000;

/// At most `max` characters of client input, for echoing in an error message.
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Parameters of a list or describe request, each given at most once, each
/// known to the endpoint. Empty values count as absent.
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Splits and decodes `query`, rejecting unknown and repeated parameters.
    pub fn parse(query: &str, allowed: &[&str]) -> Result<Params, Error> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            if !allowed.contains(&k.as_ref()) {
                return Err(Error::bad_request(
                    "UnsupportedFilter",
                    format!(
                        "At least one of the filters provided is unsupported: {}",
                        clip(&k, 100)
                    ),
                ));
            }
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(Error::bad_request(
                    "DuplicateFilter",
                    format!(
                        "At least one of the filters provided is specified multiple times: {}",
                        clip(&k, 100)
                    ),
                ));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Params(pairs))
    }

    /// The non-empty value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.value(name).filter(|v| !v.is_empty())
    }

    /// A parameter's value as sent, empty included: for options, where an
    /// empty value is an error rather than "no filter".
    pub fn value(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn status(value: Option<&str>, allowed: &[&str], name: &str) -> Result<Option<String>, Error> {
    let Some(v) = value else { return Ok(None) };
    let upper = v.to_ascii_uppercase();
    if allowed.contains(&upper.as_str()) {
        Ok(Some(upper))
    } else {
        Err(Error::bad_request(
            "InvalidStatus",
            format!(
                "Invalid status: {name} must be one of {}",
                allowed.join(", ")
            ),
        ))
    }
}

/// Parses a cluster name or cluster ARN.
pub fn cluster(value: &str) -> Result<ClusterRef, Error> {
    ClusterRef::parse(value).ok_or_else(|| {
        Error::bad_request(
            "InvalidCluster",
            "Invalid cluster ARN or name: a name is 1-255 letters, digits, - and _".to_owned(),
        )
    })
}

/// The filters of `/v1/tasks` and `/v1/instances`; all given ones must match.
#[derive(Debug, Default)]
pub struct Filter {
    pub kind: Option<Kind>,
    /// The AWS account the entity is in (12 digits, from its cluster's ARN).
    pub account: Option<String>,
    /// The region the entity is in.
    pub region: Option<String>,
    pub status: Option<String>,
    pub cluster: Option<ClusterRef>,
    pub started_by: Option<String>,
    pub desired_status: Option<String>,
    pub launch_type: Option<String>,
    pub container_instance: Option<String>,
    pub family: Option<String>,
    pub group: Option<String>,
    /// The service a task belongs to: its `group` is `service:NAME`.
    pub service: Option<String>,
    pub agent_connected: Option<bool>,
    /// A service's task definition: an ARN, `family:revision` or `family`.
    pub task_definition: Option<TaskDefinition>,
    /// The rollout state of a service's PRIMARY deployment.
    pub rollout: Option<String>,
    /// Tasks stopped at or after this time (Unix milliseconds).
    pub stopped_since: Option<i64>,
    pub stop_code: Option<String>,
    /// Tasks that failed, or did not ([`Entry::failed`]).
    pub failed: Option<bool>,
    /// Tasks one of whose containers exited with this code.
    pub exit_code: Option<i64>,
    /// A service's `schedulingStrategy` (`/ecs` only).
    pub scheduling_strategy: Option<String>,
}

/// The `taskDefinition` filter, in the form it was given.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskDefinition {
    Arn(String),
    /// `family:revision`, matched against the end of the ARN.
    Revision(String),
    Family(String),
}

impl TaskDefinition {
    fn parse(v: &str) -> Option<TaskDefinition> {
        fn family(f: &str) -> bool {
            !f.is_empty()
                && f.len() <= 255
                && f.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }
        fn revision(r: &str) -> bool {
            whole_number(r).is_some_and(|n| n > 0)
        }
        if v.starts_with("arn:") {
            let (_, rest) = v.split_once(":task-definition/")?;
            let (f, r) = rest.split_once(':')?;
            return (family(f) && revision(r)).then(|| TaskDefinition::Arn(v.to_owned()));
        }
        match v.split_once(':') {
            Some((f, r)) => {
                (family(f) && revision(r)).then(|| TaskDefinition::Revision(v.to_owned()))
            }
            None => family(v).then(|| TaskDefinition::Family(v.to_owned())),
        }
    }

    fn matches(&self, e: &Entry) -> bool {
        let arn = e.task_definition.as_deref();
        match self {
            TaskDefinition::Arn(want) => arn == Some(want.as_str()),
            TaskDefinition::Revision(want) => arn
                .and_then(|a| a.rsplit_once(":task-definition/"))
                .is_some_and(|(_, fr)| fr == want),
            TaskDefinition::Family(want) => e.family.as_deref() == Some(want.as_str()),
        }
    }
}

/// Filter parameter names of each kind (lists and streams).
pub const TASK_FILTERS: &[&str] = &[
    "status",
    "cluster",
    "account",
    "region",
    "startedBy",
    "desiredStatus",
    "launchType",
    "containerInstance",
    "family",
    "group",
    "service",
    "stoppedSince",
    "stopCode",
    "failed",
    "exitCode",
];
pub const INSTANCE_FILTERS: &[&str] = &["status", "cluster", "account", "region", "agentConnected"];
pub const SERVICE_FILTERS: &[&str] = &[
    "status",
    "cluster",
    "account",
    "region",
    "launchType",
    "taskDefinition",
    "rollout",
];

fn launch_type(p: &Params) -> Result<Option<String>, Error> {
    let Some(lt) = p.get("launchType") else {
        return Ok(None);
    };
    let upper = lt.to_ascii_uppercase();
    if !LAUNCH_TYPES.contains(&upper.as_str()) {
        return Err(Error::bad_request(
            "InvalidParameter",
            format!(
                "Invalid launchType: must be one of {}",
                LAUNCH_TYPES.join(", ")
            ),
        ));
    }
    Ok(Some(upper))
}

/// The `account` and `region` filters.
pub fn place(p: &Params) -> Result<(Option<String>, Option<String>), Error> {
    let one = |name: &str, valid: fn(&str) -> bool, expected: &str| {
        p.get(name)
            .map(|v| match valid(v) {
                true => Ok(v.to_owned()),
                false => Err(Error::bad_request(
                    "InvalidParameter",
                    format!("Invalid {name}: expected {expected}"),
                )),
            })
            .transpose()
    };
    Ok((
        one(
            "account",
            actors::arn::is_valid_account,
            "an AWS account id of 12 digits",
        )?,
        one(
            "region",
            actors::arn::is_valid_region,
            "a region name such as us-east-1",
        )?,
    ))
}

impl Filter {
    /// Reads and validates the filters of `kind` from `p`.
    pub fn parse(kind: Kind, p: &Params) -> Result<Filter, Error> {
        let cluster = p.get("cluster").map(cluster).transpose()?;
        let (account, region) = place(p)?;
        let mut f = Filter {
            kind: Some(kind),
            cluster,
            account,
            region,
            ..Filter::default()
        };
        match kind {
            Kind::Task => f.task_filters(p)?,
            Kind::Instance => {
                f.status = status(p.get("status"), INSTANCE_STATUSES, "status")?;
                f.agent_connected = boolean(p, "agentConnected")?;
            }
            Kind::Service => f.service_filters(p)?,
        }
        Ok(f)
    }

    fn task_filters(&mut self, p: &Params) -> Result<(), Error> {
        let f = self;
        f.status = status(p.get("status"), TASK_STATUSES, "status")?;
        f.desired_status = status(p.get("desiredStatus"), TASK_STATUSES, "desiredStatus")?;
        f.started_by = p.get("startedBy").map(str::to_owned);
        f.family = p.get("family").map(str::to_owned);
        f.group = p.get("group").map(str::to_owned);
        f.service = p.get("service").map(str::to_owned);
        f.launch_type = launch_type(p)?;
        f.stop_code = p.get("stopCode").map(str::to_owned);
        f.failed = boolean(p, "failed")?;
        f.exit_code = p
            .get("exitCode")
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    Error::bad_request(
                        "InvalidParameter",
                        "Invalid exitCode: expected a whole number".into(),
                    )
                })
            })
            .transpose()?;
        f.stopped_since = p
            .get("stoppedSince")
            .map(|v| {
                since(v, actors::time::now_ms()).ok_or_else(|| {
                    Error::bad_request(
                        "InvalidParameter",
                        "Invalid stoppedSince: expected an RFC 3339 time \
                         (2026-11-30T08:00:00Z) or a duration before now: a whole \
                         number and ms, s, m, h or d (2h, 90m, 3d)"
                            .into(),
                    )
                })
            })
            .transpose()?;
        if let Some(ci) = p.get("containerInstance") {
            if Arn::parse(ci, Resource::ContainerInstance).is_err() {
                return Err(Error::bad_request(
                    "InvalidParameter",
                    "Invalid containerInstance: expected a container instance ARN".into(),
                ));
            }
            f.container_instance = Some(ci.to_owned());
        }
        Ok(())
    }

    fn service_filters(&mut self, p: &Params) -> Result<(), Error> {
        let f = self;
        f.status = status(p.get("status"), SERVICE_STATUSES, "status")?;
        f.launch_type = launch_type(p)?;
        f.task_definition = p
            .get("taskDefinition")
            .map(|v| {
                TaskDefinition::parse(v).ok_or_else(|| {
                    Error::bad_request(
                        "InvalidParameter",
                        "Invalid taskDefinition: expected a task definition ARN, \
                         family:revision or family"
                            .into(),
                    )
                })
            })
            .transpose()?;
        f.rollout = p
            .get("rollout")
            .map(|v| {
                let upper = v.to_ascii_uppercase();
                if ROLLOUT_STATES.contains(&upper.as_str()) {
                    Ok(upper)
                } else {
                    Err(Error::bad_request(
                        "InvalidParameter",
                        format!(
                            "Invalid rollout: must be one of {}",
                            ROLLOUT_STATES.join(", ")
                        ),
                    ))
                }
            })
            .transpose()?;
        Ok(())
    }

    /// Whether `e` passes every given filter.
    pub fn matches(&self, e: &Entry) -> bool {
        self.cluster
            .as_ref()
            .is_none_or(|c| c.matches(&e.cluster_arn))
            && self.in_place(&e.cluster_arn)
            && self.matches_besides_cluster(e)
    }

    /// Whether a cluster is in the account and region asked for.
    pub fn in_place(&self, cluster_arn: &str) -> bool {
        if self.account.is_none() && self.region.is_none() {
            return true;
        }
        let (region, account) = actors::arn::region_and_account(cluster_arn).unwrap_or_default();
        self.account.as_deref().is_none_or(|a| a == account)
            && self.region.as_deref().is_none_or(|r| r == region)
    }

    /// [`Filter::matches`] for an entity already known to be in the cluster.
    pub fn matches_besides_cluster(&self, e: &Entry) -> bool {
        fn eq(want: &Option<String>, have: &Option<String>) -> bool {
            want.as_ref()
                .is_none_or(|w| have.as_deref() == Some(w.as_str()))
        }
        fn eq_ci(want: &Option<String>, have: Option<&str>) -> bool {
            want.as_ref()
                .is_none_or(|w| have.is_some_and(|h| h.eq_ignore_ascii_case(w)))
        }
        self.kind.is_none_or(|k| k == e.kind)
            && eq_ci(&self.status, Some(&e.status))
            && eq(&self.started_by, &e.started_by)
            && eq_ci(&self.desired_status, e.desired_status.as_deref())
            && eq_ci(&self.launch_type, e.launch_type.as_deref())
            && self.container_instance.as_ref().is_none_or(|want| {
                // An ARN, or (on `/ecs`) the ID at its end.
                e.container_instance
                    .as_deref()
                    .is_some_and(|c| c == want || c.rsplit('/').next() == Some(want.as_str()))
            })
            && eq(&self.family, &e.family)
            && eq(&self.group, &e.group)
            && self
                .service
                .as_ref()
                .is_none_or(|s| e.service() == Some(s.as_str()))
            && self
                .agent_connected
                .is_none_or(|a| e.agent_connected == Some(a))
            && self.task_definition.as_ref().is_none_or(|t| t.matches(e))
            && eq(&self.rollout, &e.rollout)
            && self
                .stopped_since
                .is_none_or(|since| e.stopped_at_ms.is_some_and(|t| t >= since))
            && eq(&self.stop_code, &e.stop_code)
            && self
                .failed
                .is_none_or(|f| e.kind == Kind::Task && e.failed() == f)
            && self.exit_code.is_none_or(|c| e.exit_codes.contains(&c))
            && self.scheduling_strategy.as_ref().is_none_or(|want| {
                e.service_index()
                    .is_some_and(|s| s.scheduling_strategy.as_deref() == Some(want.as_str()))
            })
    }
}

/// A `true`/`false` parameter (any case).
fn boolean(p: &Params, name: &str) -> Result<Option<bool>, Error> {
    match p.get(name) {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(Error::bad_request(
            "InvalidParameter",
            format!("Invalid {name}: expected true or false"),
        )),
    }
}

/// An RFC 3339 time, or a duration before `now_ms`, in Unix ms. A duration
/// is a whole number (up to 9 digits) and one unit: `ms`, `s`, `m`, `h`, `d`
/// (`2h`, `90m`, `3d`).
pub fn since(v: &str, now_ms: i64) -> Option<i64> {
    if let Some(ms) = actors::time::parse_ms(v) {
        return Some(ms);
    }
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let n: i64 = v[..digits].parse().ok()?;
    let unit = match &v[digits..] {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(now_ms.saturating_sub(n * unit))
}

/// A decimal whole number written with digits only (no sign, no spaces, not
/// empty), as every numeric query parameter is; `None` otherwise or on overflow.
pub fn whole_number(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// Parses `limit` (1–10000).
pub fn limit(p: &Params) -> Result<Option<usize>, Error> {
    p.value("limit")
        .map(|v| match whole_number(v) {
            Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => Ok(n as usize),
            _ => Err(Error::bad_request(
                "InvalidLimit",
                format!("Invalid limit: expected a whole number from 1 to {MAX_LIMIT}"),
            )),
        })
        .transpose()
}

/// Where the next page of a listing starts, for `/v1` lists and `/ecs`
/// alike: which listing it continues (`scope`), the revision of the snapshot
/// it pages through, and the last key returned. Sent as unpadded base64url,
/// so that it needs no escaping in a query string.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// What the listing was: a `/v1` kind, or an `/ecs` operation and a
    /// digest of its request.
    pub scope: String,
    pub revision: u64,
    pub after: Key,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let raw = format!(
            "{}\n{}\n{}\n{}",
            self.scope, self.revision, self.after.cluster_arn, self.after.arn
        );
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The cursor `s` encodes, if it is one of `scope`.
    pub fn decode(s: &str, scope: &str) -> Option<Cursor> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
        let mut parts = raw.splitn(4, '\n');
        let (Some(got), Some(revision), Some(cluster_arn), Some(arn)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        (got == scope).then_some(())?;
        Some(Cursor {
            scope: got.to_owned(),
            revision: revision.parse().ok()?,
            after: Key {
                cluster_arn: cluster_arn.to_owned(),
                arn: arn.to_owned(),
            },
        })
    }

    /// The `nextToken` of a `/v1` listing of `kind`, of now or (scope
    /// `{kind}@{cluster}`) of the past.
    pub fn of_list(s: &str, kind: Kind) -> Result<Cursor, Error> {
        let raw = URL_SAFE_NO_PAD.decode(s).ok();
        let scope = raw.as_deref().and_then(|r| r.split(|b| *b == b'\n').next());
        let past = scope.and_then(|sc| sc.strip_prefix(kind.as_str().as_bytes()));
        let scope = match past {
            Some([b'@', part @ ..]) => {
                format!("{}@{}", kind.as_str(), String::from_utf8_lossy(part))
            }
            _ => kind.as_str().to_owned(),
        };
        Cursor::decode(s, &scope).ok_or_else(super::entities::invalid_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI document lists each filter's values (`x-values`, which
    /// the dashboard reads for its choices) and accepts them in any case
    /// (`pattern`): both as the constants here say.
    #[test]
    fn the_openapi_document_lists_the_values_each_filter_accepts() {
        let doc: serde_json::Value = serde_json::from_str(super::super::health::OPENAPI).unwrap();
        let any_case = |values: &[&str]| {
            let alternatives = values.iter().map(|v| {
                v.chars()
                    .map(|c| match c.is_ascii_alphabetic() {
                        true => format!("[{}{}]", c, c.to_ascii_lowercase()),
                        false => c.to_string(),
                    })
                    .collect::<String>()
            });
            format!("^(|{})$", alternatives.collect::<Vec<_>>().join("|"))
        };
        let mut checked = 0;
        for (kind, name, values) in [
            ("tasks", "status", TASK_STATUSES),
            ("tasks", "desiredStatus", TASK_STATUSES),
            ("tasks", "launchType", LAUNCH_TYPES),
            ("instances", "status", INSTANCE_STATUSES),
            ("services", "status", SERVICE_STATUSES),
            ("services", "launchType", LAUNCH_TYPES),
            ("services", "rollout", ROLLOUT_STATES),
        ] {
            for path in [format!("/v1/{kind}"), format!("/v1/stream/{kind}")] {
                for method in doc["paths"][&path].as_object().unwrap().values() {
                    let Some(params) = method["parameters"].as_array() else {
                        continue;
                    };
                    let p = params.iter().find(|p| p["name"] == name).unwrap();
                    assert_eq!(
                        p["schema"]["x-values"],
                        serde_json::json!(values),
                        "{path} {name}"
                    );
                    assert_eq!(p["schema"]["pattern"], any_case(values), "{path} {name}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 28);
    }

    #[test]
    fn since_takes_a_time_or_a_duration_before_now() {
        let now = actors::time::parse_ms("2026-11-30T12:00:00Z").unwrap();
        assert_eq!(since("2026-11-30T10:00:00Z", now), Some(now - 7_200_000));
        assert_eq!(since("2h", now), Some(now - 7_200_000));
        assert_eq!(since("90m", now), Some(now - 5_400_000));
        assert_eq!(since("3d", now), Some(now - 3 * 86_400_000));
        assert_eq!(since("250ms", now), Some(now - 250));
        assert_eq!(since("0", now), None, "a unit is needed");
        assert_eq!(since("3days", now), None);
        assert_eq!(since("1h30m", now), None);
        assert_eq!(since("yesterday", now), None);
        assert_eq!(since("-2h", now), None);
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            scope: Kind::Task.as_str().into(),
            revision: 42,
            after: Key {
                cluster_arn: "arn:aws:ecs:r:1:cluster/c".into(),
                arn: "arn:aws:ecs:r:1:task/c/é".into(),
            },
        };
        assert_eq!(Cursor::of_list(&c.encode(), Kind::Task).unwrap(), c);
        assert!(Cursor::of_list(&c.encode(), Kind::Instance).is_err());
        let no_key = URL_SAFE_NO_PAD.encode("task\n1\nc");
        let bad_revision = URL_SAFE_NO_PAD.encode("task\nx\nc\na");
        let not_utf8 = URL_SAFE_NO_PAD.encode(b"task\n1\n\xff\na");
        for bad in ["", "task", "%%%%", "Y", &no_key, &bad_revision, &not_utf8] {
            assert!(Cursor::of_list(bad, Kind::Task).is_err(), "{bad}");
        }
    }

    #[test]
    fn params_reject_unknown_and_repeated() {
        assert!(Params::parse("status=RUNNING&cluster=a", TASK_FILTERS).is_ok());
        let e = Params::parse("colour=red", TASK_FILTERS).err().unwrap();
        assert!(e
            .message
            .contains("At least one of the filters provided is unsupported"));
        let e = Params::parse("status=a&status=b", TASK_FILTERS)
            .err()
            .unwrap();
        assert!(e.message.contains("specified multiple times"));
        let p = Params::parse("status=&cluster=x%2Dy", TASK_FILTERS).unwrap();
        assert_eq!(p.get("status"), None);
        assert_eq!(p.get("cluster"), Some("x-y"));
    }
}
