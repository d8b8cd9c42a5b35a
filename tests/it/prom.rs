//! Cluster state for Prometheus (issue 20): `/metrics/state` for a known
//! state on both stores, kept right through updates and deletions and
//! accepted by `promtool`; a real Prometheus server scraping it and
//! answering PromQL; the README's alert rules checked by `promtool`.

use crate::servers::{promtool, Prometheus};
use crate::support::*;
use actors::model::{Deployment, Entry, Service};
use actors::store::Op;
use serde_json::{json, Value};
use std::time::Duration;

on_both_backends!(the_state_families_follow_the_view);

fn task(id: &str, version: u64, status: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(&task_event("c1", id, version, status)).unwrap();
    v["detail"]["launchType"] = json!("FARGATE");
    edit(&mut v["detail"]);
    v.to_string()
}

fn instance(id: &str, connected: bool) -> String {
    let mut v: Value = serde_json::from_str(&fixture("instance-active.json")).unwrap();
    let d = &mut v["detail"];
    d["clusterArn"] = json!("arn:aws:ecs:us-west-2:111122223333:cluster/c1");
    d["containerInstanceArn"] = json!(format!(
        "arn:aws:ecs:us-west-2:111122223333:container-instance/c1/{id}"
    ));
    d["agentConnected"] = json!(connected);
    v.to_string()
}

/// c1: two instances (one agent disconnected), web's tasks (2 RUNNING and 1
/// PENDING on Fargate), one batch task on EC2, and the service `web`.
async fn state(b: Backend) -> TestService {
    let t = start_on(b).await;
    t.inject(&[
        instance("i1", true),
        instance("i2", false),
        task("t1", 1, "RUNNING", |_| {}),
        task("t2", 1, "RUNNING", |_| {}),
        task("t3", 1, "PENDING", |_| {}),
        task("t4", 1, "RUNNING", |d| {
            d["group"] = json!("family:batch");
            d["launchType"] = json!("EC2");
        }),
    ])
    .await;
    let web = Service {
        service_arn: "arn:aws:ecs:us-west-2:111122223333:service/c1/web".into(),
        service_name: "web".into(),
        cluster_arn: "arn:aws:ecs:us-west-2:111122223333:cluster/c1".into(),
        status: "ACTIVE".into(),
        desired_count: Some(3),
        running_count: Some(2),
        pending_count: Some(1),
        task_definition_arn: None,
        launch_type: Some("FARGATE".into()),
        platform_version: None,
        scheduling_strategy: None,
        created_at: None,
        deployments: ["IN_PROGRESS", "COMPLETED"]
            .map(|s| Deployment {
                rollout_state: Some(s.into()),
                ..Deployment::default()
            })
            .to_vec(),
        events: Vec::new(),
        load_balancers: Vec::new(),
        updated_at: None,
    };
    t.apply(vec![Op::Put(Entry::from_service(&web).unwrap())])
        .await;
    t
}

async fn text(t: &TestService) -> String {
    let r = t.get("/metrics/state").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
    String::from_utf8(r.body).unwrap()
}

fn has(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(text.lines().any(|l| l == *line), "no `{line}` in\n{text}");
    }
}

const WEB_RUNNING: &str = r#"ecs_tasks{account="111122223333",cluster="c1",last_status="RUNNING",launch_type="FARGATE",region="us-west-2",service="web"}"#;

async fn the_state_families_follow_the_view(b: Backend) {
    let t = state(b).await;
    let now = text(&t).await;
    has(
        &now,
        &[
            &format!("{WEB_RUNNING} 2"),
            r#"ecs_tasks{account="111122223333",cluster="c1",last_status="PENDING",launch_type="FARGATE",region="us-west-2",service="web"} 1"#,
            r#"ecs_tasks{account="111122223333",cluster="c1",last_status="RUNNING",launch_type="EC2",region="us-west-2",service=""} 1"#,
            r#"ecs_service_desired_tasks{account="111122223333",cluster="c1",region="us-west-2",service="web"} 3"#,
            r#"ecs_service_running_tasks{account="111122223333",cluster="c1",region="us-west-2",service="web"} 2"#,
            r#"ecs_service_pending_tasks{account="111122223333",cluster="c1",region="us-west-2",service="web"} 1"#,
            r#"ecs_service_deployments{account="111122223333",cluster="c1",region="us-west-2",rollout_state="IN_PROGRESS",service="web"} 1"#,
            r#"ecs_service_deployments{account="111122223333",cluster="c1",region="us-west-2",rollout_state="COMPLETED",service="web"} 1"#,
            r#"ecs_container_instances{account="111122223333",agent_connected="true",cluster="c1",region="us-west-2",status="ACTIVE"} 1"#,
            r#"ecs_container_instances{account="111122223333",agent_connected="false",cluster="c1",region="us-west-2",status="ACTIVE"} 1"#,
            r#"ecs_container_instance_cpu_registered{account="111122223333",cluster="c1",region="us-west-2"} 4096"#,
            r#"ecs_container_instance_cpu_remaining{account="111122223333",cluster="c1",region="us-west-2"} 3072"#,
            r#"ecs_container_instance_memory_registered{account="111122223333",cluster="c1",region="us-west-2"} 15360"#,
            r#"ecs_container_instance_memory_remaining{account="111122223333",cluster="c1",region="us-west-2"} 13312"#,
        ],
    );
    let (ok, said) = promtool(&["check", "metrics"], &now);
    assert!(ok && said.trim().is_empty(), "promtool: {said}");
    assert!(
        !now.contains("ecs_tasks_stopped_total{"),
        "nothing stopped yet"
    );

    // t2 stops with exit code 1: one RUNNING fewer, one failed stop counted;
    // the same STOPPED state again counts nothing more.
    let stop = |v| {
        task("t2", v, "STOPPED", |d| {
            d["stopCode"] = json!("EssentialContainerExited");
            d["containers"] = json!([{"name": "web", "exitCode": 1}]);
        })
    };
    t.inject(&[stop(2)]).await;
    t.inject(&[stop(3)]).await;
    let after = text(&t).await;
    has(
        &after,
        &[
            &format!("{WEB_RUNNING} 1"),
            r#"ecs_tasks{account="111122223333",cluster="c1",last_status="STOPPED",launch_type="FARGATE",region="us-west-2",service="web"} 1"#,
            r#"ecs_tasks_stopped_total{account="111122223333",cluster="c1",failed="true",region="us-west-2",service="web",stop_code="EssentialContainerExited"} 1"#,
        ],
    );
    // A deletion takes its share away; a count at zero is no series.
    t.delete_stored(actors::model::Kind::Task, "/t1").await;
    let gone = text(&t).await;
    assert!(!gone.contains(WEB_RUNNING), "{gone}");
    let (ok, said) = promtool(&["check", "metrics"], &gone);
    assert!(ok && said.trim().is_empty(), "promtool: {said}");
}

/// A real Prometheus scrapes `/metrics/state` and answers PromQL over it.
#[actix_web::test]
async fn prometheus_scrapes_the_state_and_answers_promql() {
    let t = state(Backend::Embedded).await;
    let prom = Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ecs-state\n    \
         metrics_path: /metrics/state\n    static_configs:\n      - targets: ['{}']\n",
        t.addr()
    ));
    let query = |q: &str| {
        let path = format!(
            "/api/v1/query?query={}",
            percent_encoding::utf8_percent_encode(q, percent_encoding::NON_ALPHANUMERIC)
        );
        let addr = prom.addr;
        async move {
            let r = get(addr, &path).await;
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
        }
    };
    let scraped = eventually(Duration::from_secs(30), || async {
        query(r#"sum(ecs_tasks{account="111122223333",cluster="c1",region="us-west-2"})"#).await
            == Some(4.0)
    })
    .await;
    assert!(scraped, "Prometheus never had the tasks");
    assert_eq!(
        query(
            r#"ecs_service_desired_tasks{service="web"} - ecs_service_running_tasks{service="web"}"#
        )
        .await,
        Some(1.0),
        "web runs one task fewer than desired"
    );
    assert_eq!(
        query(r#"sum by (cluster) (ecs_container_instances{agent_connected="false"})"#).await,
        Some(1.0)
    );
}

/// The README's example alert rules (the YAML block after its marker).
pub fn readme_alert_rules() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- alert rules -->")
        .expect("the README marks its alert rules");
    let block = &readme[start..];
    block
        .split_once("```yaml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(rules, _)| rules.to_owned())
        .expect("a yaml block after the marker")
}

/// The README's example alert rules are valid Prometheus rules.
#[test]
fn the_readmes_alert_rules_pass_promtool() {
    let body = readme_alert_rules();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, body).unwrap();
    let (ok, said) = promtool(&["check", "rules", file.to_str().unwrap()], "");
    assert!(ok, "promtool check rules: {said}");
    assert!(said.contains("SUCCESS: 5 rules found"), "{said}");
}

/// Tasks reachable by IP: `a1` (awsvpc, its own address), `a3` (awsvpc, no
/// ports reported), `b1` (bridge, on
/// `i1`, whose `private-ip` attribute is known), `b2` (bridge, on `i2`, with
/// no address known), and a STOPPED awsvpc task.
async fn reachable(t: &TestService) {
    let mut i1: Value = serde_json::from_str(&instance("i1", true)).unwrap();
    i1["detail"]["attributes"] = json!([{"name": "private-ip", "value": "127.0.1.7"}]);
    let awsvpc = |d: &mut Value, ip: &str| {
        d["attachments"] = json!([{"type": "ElasticNetworkInterface",
            "details": [{"name": "subnetId", "value": "subnet-1"}, {"name": "privateIPv4Address", "value": ip}]}]);
        d["containers"] = json!([{"name": "web", "networkBindings": [{"containerPort": 8080, "hostPort": 8080}]}]);
        d["availabilityZone"] = json!("us-west-2a");
    };
    let on = |d: &mut Value, i: &str| {
        d["launchType"] = json!("EC2");
        d["group"] = json!("family:api");
        d["containerInstanceArn"] = json!(format!(
            "arn:aws:ecs:us-west-2:111122223333:container-instance/c1/{i}"
        ));
        d["containers"] = json!([{"name": "api", "networkBindings": [{"containerPort": 9090, "hostPort": 32768}]}]);
    };
    t.inject(&[
        i1.to_string(),
        instance("i2", true),
        task("a1", 1, "RUNNING", |d| awsvpc(d, "127.0.0.5")),
        task("a2", 2, "STOPPED", |d| awsvpc(d, "127.0.0.6")),
        // awsvpc without ports reported (as awsvpc events usually come):
        // reachable only at a port asked for.
        task("a3", 1, "RUNNING", |d| {
            awsvpc(d, "127.0.0.8");
            d["containers"] = json!([{"name": "web"}]);
        }),
        task("b1", 1, "RUNNING", |d| on(d, "i1")),
        task("b2", 1, "RUNNING", |d| on(d, "i2")),
    ])
    .await;
}

fn target_list(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .flat_map(|g| g["targets"].as_array().unwrap().iter())
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

#[actix_web::test]
async fn service_discovery_lists_running_tasks_reachable_by_ip() {
    let t = start_on(Backend::Embedded).await;
    reachable(&t).await;
    let all = t.get("/v1/sd/prometheus").await;
    assert_eq!(all.header("content-type"), Some("application/json"));
    let all = all.json();
    assert_eq!(target_list(&all), ["127.0.0.5:8080", "127.0.1.7:32768"]);
    let a1 = all
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["targets"][0] == "127.0.0.5:8080")
        .unwrap();
    assert_eq!(
        a1["labels"],
        json!({
            "__meta_ecs_cluster": "c1", "__meta_ecs_service": "web",
            "__meta_ecs_account": "111122223333", "__meta_ecs_region": "us-west-2",
            "__meta_ecs_task_arn": "arn:aws:ecs:us-west-2:111122223333:task/c1/a1",
            "__meta_ecs_family": "web", "__meta_ecs_revision": "7", "__meta_ecs_container": "web",
            "__meta_ecs_launch_type": "FARGATE", "__meta_ecs_availability_zone": "us-west-2a",
        })
    );
    for (q, want) in [
        ("?port=9090", &["127.0.0.8:9090", "127.0.1.7:32768"][..]),
        ("?port=8080", &["127.0.0.5:8080", "127.0.0.8:8080"]),
        ("?service=web", &["127.0.0.5:8080"]),
        (
            "?family=web&cluster=c1",
            &["127.0.0.5:8080", "127.0.1.7:32768"],
        ),
        ("?cluster=other", &[]),
        ("?account=999999999999", &[]),
        ("?region=eu-west-1", &[]),
        (
            "?account=111122223333&region=us-west-2&service=web",
            &["127.0.0.5:8080"],
        ),
    ] {
        let v = t.get(&format!("/v1/sd/prometheus{q}")).await.json();
        assert_eq!(target_list(&v), want, "{q}");
    }
    for (q, status) in [
        ("?port=0", 400),
        ("?port=x", 400),
        ("?colour=red", 400),
        ("?cluster=bad!", 400),
    ] {
        assert_eq!(
            t.get(&format!("/v1/sd/prometheus{q}")).await.status,
            status,
            "{q}"
        );
    }

    // A real Prometheus discovers them (and scrapes loopback addresses only).
    let prom = Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ecs-tasks\n    \
         http_sd_configs:\n      - url: 'http://{}/v1/sd/prometheus'\n        refresh_interval: 1s\n",
        t.addr()
    ));
    let mut seen: Vec<(String, String)> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.len() != 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let v = get(prom.addr, "/api/v1/targets").await.json();
        seen = v["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let l = &t["discoveredLabels"];
                let s = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
                (s("__address__"), s("__meta_ecs_task_arn"))
            })
            .collect();
        seen.sort();
    }
    let found = seen.len() == 2;
    assert!(found, "Prometheus's targets: {seen:?}");
    assert_eq!(seen[0].0, "127.0.0.5:8080");
    assert!(seen[1].1.ends_with("/b1"), "{seen:?}");
}
