//! The six shared fixtures: each decodes to its expected outcome, and the API
//! renders each entity exactly as `rendered/` says.

use crate::support::*;
use actors::decoder::MessageOutcome;
use serde_json::Value;

on_both_backends!(
    each_fixture_alone_renders_exactly_as_expected,
    the_two_instance_events_in_either_order_end_draining,
    the_stopped_fixture_expires_under_the_default_retention,
    resource_values_render_as_api_md_says,
);

const ALL: [&str; 6] = [
    "instance-active.json",
    "service-action-ignored.json",
    "sns-wrapped-instance-draining.json",
    "task-fargate-short-arn.json",
    "task-running-ec2.json",
    "task-stopped-ec2.json",
];

fn no_nulls(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Array(a) => a.iter().all(no_nulls),
        Value::Object(o) => o.values().all(no_nulls),
        _ => true,
    }
}

fn enc(s: &str) -> String {
    s.replace('/', "%2F")
}

#[test]
fn project_copy_matches_the_shared_fixtures() {
    let Some(shared) = shared_copy("fixtures") else {
        return;
    };
    for dir in ["events", "rendered"] {
        for name in ALL {
            let a = std::fs::read(shared.join(dir).join(name)).expect("shared fixture");
            let b = std::fs::read(fixtures_dir().join(dir).join(name)).expect("copied fixture");
            assert_eq!(a, b, "{dir}/{name} differs from ../shared/fixtures");
        }
    }
}

async fn each_fixture_alone_renders_exactly_as_expected(b: Backend) {
    for name in ALL {
        let t = start_on(b).await;
        let expected = rendered(name);
        let outcome = t.inject(&[fixture(name)]).await;
        match expected["kind"].as_str() {
            Some("ignored") => {
                assert_eq!(outcome, [MessageOutcome::Ignored], "{name}");
                assert_eq!(
                    t.get("/v1/tasks").await.json()["items"],
                    serde_json::json!([])
                );
                assert_eq!(
                    t.get("/v1/instances").await.json()["items"],
                    serde_json::json!([])
                );
                let metrics = String::from_utf8(t.get("/metrics").await.body).unwrap();
                assert!(
                    metrics.contains("css_events_total{outcome=\"ignored\"} 1"),
                    "{metrics}"
                );
            }
            Some(kind) => {
                assert_eq!(outcome, [MessageOutcome::Applied], "{name}");
                let entity = &expected["entity"];
                let (list, arn_field) = match kind {
                    "task" => ("/v1/tasks", "taskARN"),
                    _ => ("/v1/instances", "containerInstanceARN"),
                };
                let arn = entity[arn_field].as_str().unwrap();
                let cluster_arn = entity["clusterARN"].as_str().unwrap();
                let cluster = cluster_arn.rsplit('/').next().unwrap();

                // Describe by cluster name with a raw ARN, and by encoded cluster ARN with an encoded ARN.
                for path in [
                    format!("{list}/{cluster}/{arn}"),
                    format!("{list}/{}/{}", enc(cluster_arn), enc(arn)),
                ] {
                    let r = t.get(&path).await;
                    assert_eq!(r.status, 200, "{name} {path}");
                    let item = r.json();
                    assert_eq!(
                        &item["entity"], entity,
                        "{name}: describe renders differently"
                    );
                    assert!(no_nulls(&item), "{name}: a null value");
                    let version = item["metadata"]["entityVersion"].as_str().unwrap();
                    assert_eq!(version, t.rev(1), "{name}: first write of an empty store");
                }
                let listed = t.get(list).await.json();
                assert_eq!(listed["items"].as_array().unwrap().len(), 1);
                assert_eq!(
                    &listed["items"][0]["entity"], entity,
                    "{name}: list renders differently"
                );
                assert_eq!(listed["metadata"]["entityVersion"], t.rev(1));
            }
            None => panic!("{name}: no kind"),
        }
    }
}

async fn the_two_instance_events_in_either_order_end_draining(b: Backend) {
    let active = fixture("instance-active.json");
    let draining = fixture("sns-wrapped-instance-draining.json");
    for (order, expect_stale) in [([&active, &draining], false), ([&draining, &active], true)] {
        let t = start_on(b).await;
        let outcomes = t.inject(&order).await;
        assert_eq!(
            outcomes[1] == MessageOutcome::Stale,
            expect_stale,
            "{outcomes:?}"
        );
        let items = t.get("/v1/instances").await.json()["items"].clone();
        assert_eq!(items.as_array().unwrap().len(), 1);
        assert_eq!(
            items[0]["entity"],
            rendered("sns-wrapped-instance-draining.json")["entity"]
        );
        let drained = t.get("/v1/instances?status=draining").await.json();
        assert_eq!(drained["items"].as_array().unwrap().len(), 1);
    }
}

async fn the_stopped_fixture_expires_under_the_default_retention(b: Backend) {
    let t = start_with_on(b, css::config::Feed::None, |s| {
        s.store.stopped_task_retention = std::time::Duration::from_secs(3600);
    })
    .await;
    t.inject(&[fixture("task-stopped-ec2.json")]).await;
    // Its stoppedAt is long past: the writer's housekeeping (a 30 s timer at
    // this retention; asked for at once here) deletes it.
    t.housekeep().await;
    let mut gone = false;
    for _ in 0..100 {
        if t.get("/v1/tasks").await.json()["items"] == serde_json::json!([]) {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(gone, "STOPPED task past its retention was not deleted");
    let metrics = String::from_utf8(t.get("/metrics").await.body).unwrap();
    assert!(
        metrics.contains("css_store_deletions_total{reason=\"retention\"} 1"),
        "{metrics}"
    );
    // The tombstone keeps the same event from bringing it back.
    let again = t.inject(&[fixture("task-stopped-ec2.json")]).await;
    assert_eq!(again, [MessageOutcome::Stale]);
    assert_eq!(
        t.get("/v1/tasks").await.json()["items"],
        serde_json::json!([])
    );
}

async fn resource_values_render_as_api_md_says(b: Backend) {
    let t = start_on(b).await;
    let mut v: Value = serde_json::from_str(&fixture("instance-active.json")).unwrap();
    v["detail"]["registeredResources"] = serde_json::json!([
        {"name": "CPU", "type": "DOUBLE", "doubleValue": 10.3},
        {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22", "2376"]},
        {"name": "MEMORY", "type": "LONG", "longValue": 8589934592_i64},
        {"name": "GPU", "type": "INTEGER", "integerValue": 0},
        {"name": "ODD", "type": "SOMETHING_NEW", "integerValue": 5}
    ]);
    assert_eq!(t.inject(&[v.to_string()]).await, [MessageOutcome::Applied]);
    let items = t.get("/v1/instances").await.json()["items"].clone();
    let entity = &items[0]["entity"];
    assert_eq!(
        entity["registeredResources"],
        serde_json::json!([
            {"name": "CPU", "type": "DOUBLE", "value": "10.30"},
            {"name": "PORTS", "type": "STRINGSET", "value": "22,2376"},
            {"name": "MEMORY", "type": "LONG", "value": "8589934592"},
            {"name": "GPU", "type": "INTEGER", "value": "0"},
            {"name": "ODD", "type": "SOMETHING_NEW", "value": ""}
        ])
    );
    // The two lists are converted each on its own (v0.3 mixed them up).
    assert_eq!(
        entity["remainingResources"],
        rendered("instance-active.json")["entity"]["remainingResources"]
    );
}
