//! Entities in ECS's own shape, as the ECS read API answers them: what the
//! source gave (an event's `detail`, the object a Describe answered) with
//! every timestamp as epoch seconds (the AWS JSON 1.1 protocol's form), or,
//! for an entry stored without it, the v1 rendering with ECS's member names.

use actors::model::{Entry, Kind};
use serde_json::{Map, Value};

/// Epoch seconds (with milliseconds) of an RFC 3339 timestamp.
fn epoch_seconds(s: &str) -> Option<Value> {
    let ms = actors::time::parse_ms(s)?;
    serde_json::Number::from_f64(ms as f64 / 1000.0).map(Value::Number)
}

/// Turns every `…At` member holding an RFC 3339 string into epoch seconds.
fn timestamps(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                if k.ends_with("At") {
                    if let Some(secs) = v.as_str().and_then(epoch_seconds) {
                        *v = secs;
                        continue;
                    }
                }
                timestamps(v);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(timestamps),
        _ => {}
    }
}

/// ECS's member name for a v1 member of an entity of `kind`.
fn ecs_name(kind: Kind, name: &str) -> String {
    match name {
        "EC2InstanceID" => "ec2InstanceId".into(),
        "bindIP" => name.into(),
        // A service's and a deployment's member is `taskDefinition`.
        "taskDefinitionARN" if kind == Kind::Service => "taskDefinition".into(),
        _ => match name.strip_suffix("ARN") {
            Some(stem) => format!("{stem}Arn"),
            None => name.into(),
        },
    }
}

/// A v1 resource `{name, type, value}` as ECS writes it.
fn resource(r: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), r.get("name").cloned().unwrap_or(Value::Null));
    let kind = r.get("type").and_then(Value::as_str).unwrap_or_default();
    out.insert("type".into(), Value::String(kind.into()));
    let value = r.get("value").and_then(Value::as_str).unwrap_or_default();
    let (member, v) = match kind {
        "INTEGER" => ("integerValue", value.parse::<i64>().map(Value::from).ok()),
        "LONG" => ("longValue", value.parse::<i64>().map(Value::from).ok()),
        "DOUBLE" => ("doubleValue", value.parse::<f64>().ok().map(Value::from)),
        "STRINGSET" => (
            "stringSetValue",
            Some(Value::from(
                value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>(),
            )),
        ),
        _ => ("value", None),
    };
    if let Some(v) = v {
        out.insert(member.into(), v);
    }
    Value::Object(out)
}

fn renamed(kind: Kind, v: Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("registeredResources" | "remainingResources", Value::Array(a)) => {
                            Value::Array(
                                a.iter()
                                    .map(|r| r.as_object().map_or(Value::Null, resource))
                                    .collect(),
                            )
                        }
                        (_, v) => renamed(kind, v),
                    };
                    (ecs_name(kind, &k), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| renamed(kind, v)).collect()),
        v => v,
    }
}

/// `e` in ECS's shape.
pub fn ecs_value(e: &Entry) -> Value {
    let mut v = match e.ecs.as_ref().and_then(actors::model::Packed::unpack) {
        Some(raw) => serde_json::from_str(&raw).unwrap_or(Value::Null),
        None => renamed(
            e.kind,
            serde_json::from_str(e.entity.get()).unwrap_or(Value::Null),
        ),
    };
    timestamps(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v1_members_become_ecs_members_and_times_epoch_seconds() {
        let mut v = renamed(
            Kind::Instance,
            json!({"containerInstanceARN": "a", "EC2InstanceID": "i-1", "registeredAt": "2026-01-01T00:00:01.500Z",
                   "registeredResources": [{"name": "CPU", "type": "INTEGER", "value": "2048"},
                                            {"name": "PORTS", "type": "STRINGSET", "value": "22,80"}]}),
        );
        timestamps(&mut v);
        assert_eq!(
            v,
            json!({"containerInstanceArn": "a", "ec2InstanceId": "i-1", "registeredAt": 1767225601.5,
                   "registeredResources": [{"name": "CPU", "type": "INTEGER", "integerValue": 2048},
                                            {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22", "80"]}]})
        );
        let s = renamed(
            Kind::Service,
            json!({"serviceARN": "s", "taskDefinitionARN": "td", "deployments": [{"taskDefinitionARN": "td"}]}),
        );
        assert_eq!(
            s,
            json!({"serviceArn": "s", "taskDefinition": "td", "deployments": [{"taskDefinition": "td"}]})
        );
        let t = renamed(
            Kind::Task,
            json!({"taskDefinitionARN": "td", "containers": [{"containerARN": "c", "networkBindings": [{"bindIP": "0.0.0.0"}]}]}),
        );
        assert_eq!(
            t,
            json!({"taskDefinitionArn": "td", "containers": [{"containerArn": "c", "networkBindings": [{"bindIP": "0.0.0.0"}]}]})
        );
        let mut numbers = json!({"createdAt": 1.5, "startedAt": "not a time"});
        timestamps(&mut numbers);
        assert_eq!(
            numbers,
            json!({"createdAt": 1.5, "startedAt": "not a time"})
        );
    }
}
