//! Black-box tests of the v1 REST API on port 0: every endpoint, filter and
//! error row of `api.md`, paging, ordering, and hostile requests.

use crate::support::*;
use serde_json::{json, Value};

on_both_backends!(
    ping_and_empty_lists,
    lists_are_ordered_by_cluster_then_arn_and_carry_versions,
    every_task_filter,
    stopped_tasks_are_searchable,
    every_instance_filter,
    describe_by_name_or_arn_raw_or_encoded,
    every_error_row,
    pages_concatenate_to_the_unpaged_list_from_one_snapshot,
    large_lists_are_streamed_in_pieces_and_equal_their_pages,
    hostile_requests_get_4xx_json_and_never_break_the_server,
    lists_and_streams_filter_by_account_and_region,
);

/// A task event with `edit` applied to its detail.
fn task(cluster: &str, id: &str, version: u64, edit: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(&task_event(cluster, id, version, "RUNNING")).unwrap();
    edit(&mut v["detail"]);
    v.to_string()
}

fn instance(cluster: &str, id: &str, version: u64, status: &str, connected: bool) -> String {
    let mut v: Value = serde_json::from_str(&fixture("instance-active.json")).unwrap();
    let d = &mut v["detail"];
    d["clusterArn"] = json!(cluster_arn(cluster));
    d["containerInstanceArn"] = json!(ci_arn(cluster, id));
    d["status"] = json!(status);
    d["agentConnected"] = json!(connected);
    d["version"] = json!(version);
    v.to_string()
}

/// A small world: two clusters (one named with a leading digit), tasks of
/// every filterable kind, and three instances.
async fn world(b: Backend) -> TestService {
    let t = start_on(b).await;
    let events = vec![
        task("prod-web", "a1", 3, |_| {}),
        task("prod-web", "a2", 4, |d| {
            d["lastStatus"] = json!("PENDING");
            d["containerInstanceArn"] = json!(ci_arn("prod-web", "i1"));
        }),
        task("prod-web", "a3", 9, |d| {
            d["lastStatus"] = json!("STOPPED");
            d["desiredStatus"] = json!("STOPPED");
            d["startedBy"] = json!("manual");
            d["stoppedAt"] = json!("2099-01-01T00:00:00Z");
        }),
        task("9batch", "b1", 1, |d| {
            d["launchType"] = json!("FARGATE");
            d["taskDefinitionArn"] =
                json!("arn:aws:ecs:us-west-2:111122223333:task-definition/nightly-report:3");
            d["group"] = json!("family:nightly-report");
            d.as_object_mut().unwrap().remove("startedBy");
        }),
        task("9batch", "b2", 2, |d| d["launchType"] = json!("EXTERNAL")),
        instance("prod-web", "i1", 10, "ACTIVE", true),
        instance("prod-web", "i2", 11, "DRAINING", false),
        instance("9batch", "i3", 12, "ACTIVE", false),
    ];
    // One at a time: the revisions follow this order (etcd writes the
    // entities of one batch in flight together, in no set order).
    let mut outcomes = Vec::new();
    for e in &events {
        outcomes.extend(t.inject(std::slice::from_ref(e)).await);
    }
    assert!(
        outcomes
            .iter()
            .all(|o| *o == actors::decoder::MessageOutcome::Applied),
        "{outcomes:?}"
    );
    t
}

fn arns(v: &Value, field: &str) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {v}"))
        .iter()
        .map(|i| {
            i["entity"][field]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

async fn ids(t: &TestService, list: &str, field: &str, query: &str) -> Vec<String> {
    arns(
        &t.get(&format!("{list}{query}")).await.ok_json(query),
        field,
    )
}

async fn task_ids(t: &TestService, query: &str) -> Vec<String> {
    ids(t, "/v1/tasks", "taskARN", query).await
}

async fn instance_ids(t: &TestService, query: &str) -> Vec<String> {
    ids(t, "/v1/instances", "containerInstanceARN", query).await
}

async fn error(t: &TestService, method: &str, path: &str, status: u16, message: &str) {
    let r = request(t.addr(), method, path).await;
    r.expect_status(status, &format!("{method} {path}"));
    assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
    let body = r.json();
    assert!(
        body["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{path}: {body}"
    );
    let got = body["message"].as_str().unwrap_or_default();
    assert!(
        got.contains(message),
        "{path}: message {got:?} lacks {message:?}"
    );
}

async fn ping_and_empty_lists(b: Backend) {
    let t = start_on(b).await;
    let r = t.get("/v1/ping").await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    for path in ["/v1/tasks", "/v1/instances"] {
        let r = t.get(path).await;
        assert_eq!(r.status, 200);
        // The store's revision: 0 for a new embedded store, 1 for a new etcd.
        let revision = if b == Backend::Embedded { "0" } else { "1" };
        assert_eq!(
            r.json(),
            json!({"items": [], "metadata": {"entityVersion": revision}})
        );
    }
    assert_eq!(t.get("/healthz").await.status, 200);
    let ready = t.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json(), json!({"status": "ready", "source": "none"}));
}

async fn lists_are_ordered_by_cluster_then_arn_and_carry_versions(b: Backend) {
    let t = world(b).await;
    // "9batch" sorts before "prod-web"; within a cluster, by ARN.
    assert_eq!(task_ids(&t, "").await, ["b1", "b2", "a1", "a2", "a3"]);
    assert_eq!(instance_ids(&t, "").await, ["i3", "i1", "i2"]);
    let list = t.get("/v1/tasks").await.json();
    assert_eq!(list["metadata"]["entityVersion"], t.rev(8));
    let versions: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["entityVersion"].as_str().unwrap())
        .collect();
    let want: Vec<String> = [4, 5, 1, 2, 3].into_iter().map(|n| t.rev(n)).collect();
    assert_eq!(versions, want);
    assert!(list.get("nextToken").is_none());
}

async fn every_task_filter(b: Backend) {
    let t = world(b).await;
    let cases: &[(&str, &[&str])] = &[
        ("?status=running", &["b1", "b2", "a1"]),
        ("?status=PENDING", &["a2"]),
        ("?status=", &["b1", "b2", "a1", "a2", "a3"]),
        ("?cluster=9batch", &["b1", "b2"]),
        ("?cluster=prod-web&status=RUNNING", &["a1"]),
        (
            "?cluster=arn:aws:ecs:us-west-2:111122223333:cluster%2Fprod-web",
            &["a1", "a2", "a3"],
        ),
        (
            "?cluster=arn%3Aaws%3Aecs%3Aus-west-2%3A111122223333%3Acluster%2F9batch",
            &["b1", "b2"],
        ),
        (
            "?cluster=arn:aws:ecs:eu-west-1:111122223333:cluster/prod-web",
            &[],
        ),
        ("?cluster=other", &[]),
        ("?startedBy=manual", &["a3"]),
        ("?startedBy=ecs-svc%2F1", &["b2", "a1", "a2"]),
        ("?desiredStatus=stopped", &["a3"]),
        ("?launchType=fargate", &["b1"]),
        ("?launchType=EXTERNAL", &["b2"]),
        (
            "?containerInstance=arn:aws:ecs:us-west-2:111122223333:container-instance/prod-web/i1",
            &["a2"],
        ),
        ("?family=nightly-report", &["b1"]),
        ("?family=web", &["b2", "a1", "a2", "a3"]),
        ("?group=service:web&cluster=9batch", &["b2"]),
        ("?service=web", &["b2", "a1", "a2", "a3"]),
        ("?service=web&cluster=9batch", &["b2"]),
        ("?service=nightly-report", &[]),
        ("?service=", &["b1", "b2", "a1", "a2", "a3"]),
    ];
    for (q, want) in cases {
        assert_eq!(task_ids(&t, q).await, *want, "{q}");
    }
    // The stream of tasks takes the same filters.
    let path = "/v1/stream/tasks?service=web&cluster=9batch&snapshot=true";
    let mut s = StreamClient::open(t.addr(), path, "").await;
    let within = std::time::Duration::from_secs(5);
    let first = s.next_json(within).await.expect("an item");
    assert!(first["entity"]["taskARN"]
        .as_str()
        .unwrap()
        .ends_with("/b2"));
    let then = s.next_json(within).await.expect("a bookmark");
    assert!(then.get("bookmark").is_some(), "{then}");
}

async fn every_instance_filter(b: Backend) {
    let t = world(b).await;
    let cases: &[(&str, &[&str])] = &[
        ("?status=active", &["i3", "i1"]),
        ("?status=DRAINING", &["i2"]),
        ("?cluster=9batch", &["i3"]),
        ("?cluster=prod-web&status=ACTIVE", &["i1"]),
        ("?agentConnected=true", &["i1"]),
        ("?agentConnected=false", &["i3", "i2"]),
        ("?status=INACTIVE", &[]),
    ];
    for (q, want) in cases {
        assert_eq!(instance_ids(&t, q).await, *want, "{q}");
    }
}

async fn describe_by_name_or_arn_raw_or_encoded(b: Backend) {
    let t = world(b).await;
    let arn = format!("arn:aws:ecs:us-west-2:{ACCOUNT}:task/9batch/b1");
    let enc = arn.replace('/', "%2F");
    let cl = cluster_arn("9batch");
    for path in [
        format!("/v1/tasks/9batch/{arn}"),
        format!("/v1/tasks/9batch/{enc}"),
        format!("/v1/tasks/{}/{arn}", cl.replace('/', "%2F")),
        format!("/v1/tasks/{cl}/{arn}"),
    ] {
        let r = t.get(&path).await;
        assert_eq!(r.status, 200, "{path}");
        let v = r.json();
        assert_eq!(v["entity"]["taskARN"], arn.as_str());
        assert_eq!(v["entity"]["launchType"], "FARGATE");
        assert_eq!(v["metadata"]["entityVersion"], t.rev(4));
    }
    let r = t
        .get(&format!(
            "/v1/instances/prod-web/{}",
            ci_arn("prod-web", "i2")
        ))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["entity"]["status"], "DRAINING");
    // A cluster that is not the entity's, and entities that are not stored.
    error(
        &t,
        "GET",
        &format!("/v1/tasks/prod-web/{arn}"),
        404,
        "Task not found",
    )
    .await;
    error(
        &t,
        "GET",
        &format!("/v1/tasks/9batch/{arn}x"),
        404,
        "Task not found",
    )
    .await;
    error(
        &t,
        "GET",
        &format!("/v1/instances/9batch/{}", ci_arn("9batch", "zz")),
        404,
        "Instance not found",
    )
    .await;
    error(
        &t,
        "GET",
        &format!("/v1/tasks/bad!name/{arn}"),
        400,
        "Invalid cluster ARN or name",
    )
    .await;
    error(
        &t,
        "GET",
        "/v1/tasks/9batch/not-an-arn",
        400,
        "Invalid task ARN",
    )
    .await;
}

async fn every_error_row(b: Backend) {
    let t = world(b).await;
    let long = "x".repeat(256);
    let rows: Vec<(&str, String, u16, &str)> = vec![
        (
            "GET",
            "/v1/tasks?colour=red".into(),
            400,
            "At least one of the filters provided is unsupported",
        ),
        (
            "GET",
            "/v1/instances?startedBy=x".into(),
            400,
            "At least one of the filters provided is unsupported",
        ),
        (
            "GET",
            "/v1/tasks?entityVersion=1".into(),
            400,
            "At least one of the filters provided is unsupported",
        ),
        (
            "GET",
            "/v1/tasks?status=RUNNING&status=PENDING".into(),
            400,
            "At least one of the filters provided is specified multiple times",
        ),
        (
            "GET",
            "/v1/instances?cluster=a&cluster=a".into(),
            400,
            "At least one of the filters provided is specified multiple times",
        ),
        (
            "GET",
            "/v1/tasks?status=WALKING".into(),
            400,
            "Invalid status",
        ),
        (
            "GET",
            "/v1/tasks?desiredStatus=ACTIVE".into(),
            400,
            "Invalid status",
        ),
        (
            "GET",
            "/v1/instances?status=RUNNING".into(),
            400,
            "Invalid status",
        ),
        (
            "GET",
            "/v1/tasks?cluster=bad%20name".into(),
            400,
            "Invalid cluster ARN or name",
        ),
        (
            "GET",
            format!("/v1/instances?cluster={long}"),
            400,
            "Invalid cluster ARN or name",
        ),
        (
            "GET",
            "/v1/tasks?cluster=arn:aws:ecs:us-west-2:1:task/x".into(),
            400,
            "Invalid cluster ARN or name",
        ),
        ("GET", "/v1/tasks?limit=0".into(), 400, "Invalid limit"),
        ("GET", "/v1/tasks?limit=10001".into(), 400, "Invalid limit"),
        ("GET", "/v1/instances?limit=-1".into(), 400, "Invalid limit"),
        ("GET", "/v1/tasks?limit=ten".into(), 400, "Invalid limit"),
        (
            "GET",
            "/v1/tasks?nextToken=garbage".into(),
            400,
            "Invalid nextToken",
        ),
        (
            "GET",
            "/v1/tasks?nextToken=task.999.YWIK".into(),
            400,
            "Invalid nextToken",
        ),
        (
            "GET",
            "/v1/tasks?launchType=SPOT".into(),
            400,
            "Invalid launchType",
        ),
        (
            "GET",
            "/v1/tasks?containerInstance=i-123".into(),
            400,
            "Invalid containerInstance",
        ),
        (
            "GET",
            "/v1/instances?agentConnected=maybe".into(),
            400,
            "Invalid agentConnected",
        ),
        ("GET", "/v1/nothing".into(), 404, "Not found"),
        ("GET", "/ui/missing.js".into(), 404, "Not found"),
        ("GET", "/v2/tasks".into(), 404, "Not found"),
        ("GET", "/v1/tasks/only-a-cluster".into(), 404, "Not found"),
        ("POST", "/v1/tasks".into(), 405, "Method not allowed"),
        ("DELETE", "/v1/instances".into(), 405, "Method not allowed"),
        ("PUT", "/v1/ping".into(), 405, "Method not allowed"),
        (
            "POST",
            format!("/v1/tasks/prod-web/arn:aws:ecs:us-west-2:{ACCOUNT}:task/prod-web/a1"),
            405,
            "Method not allowed",
        ),
    ];
    for (method, path, status, message) in &rows {
        error(&t, method, path, *status, message).await;
    }
    let r = request(t.addr(), "POST", "/v1/tasks").await;
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    // `/` is the dashboard's (dashboard.md).
    let r = request(t.addr(), "GET", "/").await;
    assert_eq!((r.status, r.header("location")), (302, Some("/ui/")));
}

#[actix_web::test]
async fn store_unavailable_is_503() {
    use actors::store::{BoxFuture, Error, Loaded, Op, Outcome, Result, Store};
    /// A store that cannot be reached: the view never loads.
    struct Down;
    impl Store for Down {
        fn load(&self) -> BoxFuture<'_, Result<Loaded>> {
            Box::pin(async { Err(Error::Unavailable("down".into())) })
        }
        fn commit(&self, _: Vec<Op>, _: i64) -> BoxFuture<'_, Result<Vec<Outcome>>> {
            Box::pin(async { Err(Error::Unavailable("down".into())) })
        }
        fn purge_tombstones(&self, _: i64) -> BoxFuture<'_, Result<usize>> {
            Box::pin(async { Err(Error::Unavailable("down".into())) })
        }
        fn compact_history(&self, _: i64, _: std::time::Duration) -> BoxFuture<'_, Result<()>> {
            Box::pin(async { Err(Error::Unavailable("down".into())) })
        }
        fn check_resume(&self, _: u64) -> BoxFuture<'_, Result<actors::store::Resume>> {
            Box::pin(async { Err(Error::Unavailable("down".into())) })
        }
        fn history(&self, _: u64) -> actors::store::Feed {
            tokio::sync::mpsc::channel(1).1
        }
        fn retained(&self) -> BoxFuture<'_, Result<actors::store::Retained>> {
            Box::pin(async { Err(Error::Unavailable("down".into())) })
        }
        fn revision_at(&self, _: i64) -> BoxFuture<'_, Result<Option<u64>>> {
            Box::pin(async { Err(Error::Unavailable("down".into())) })
        }
        fn state_at(
            &self,
            _: u64,
            _: actors::model::Kind,
            _: Option<String>,
        ) -> BoxFuture<'_, Result<Vec<actors::model::SharedEntry>>> {
            Box::pin(async { Err(Error::Unavailable("down".into())) })
        }
        fn versions(
            &self,
            _: actors::model::Kind,
            _: String,
            _: String,
        ) -> BoxFuture<'_, Result<Vec<actors::store::Version>>> {
            Box::pin(async { Err(Error::Unavailable("down".into())) })
        }
        fn versions_in(
            &self,
            _: actors::model::Kind,
            _: String,
        ) -> BoxFuture<'_, Result<Vec<actors::store::Version>>> {
            Box::pin(async { Err(Error::Unavailable("down".into())) })
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    let svc = css::service::Service::start_with_store(
        &s,
        css::config::Feed::None,
        std::sync::Arc::new(Down),
        css::logging::discard(),
    )
    .await
    .unwrap();
    for path in [
        "/v1/tasks",
        "/v1/instances",
        "/v1/tasks/c/arn:aws:ecs:r:1:task/c/t",
        "/v1/stream/tasks",
        "/v1/stream/instances?entityVersion=1",
    ] {
        let r = get(svc.addr, path).await;
        assert_eq!(r.status, 503, "{path}");
        assert!(r.json()["message"]
            .as_str()
            .unwrap()
            .contains("Store unavailable"));
    }
    let r = get(svc.addr, "/readyz").await;
    assert_eq!(r.status, 503);
    assert!(r.json()["waitingFor"]
        .as_array()
        .is_some_and(|w| !w.is_empty()));
    assert_eq!(r.json()["source"], "none", "{}", r.json());
    assert_eq!(get(svc.addr, "/healthz").await.status, 200);
    assert_eq!(get(svc.addr, "/v1/ping").await.status, 200);
    svc.stop().await;
}

/// Follows `nextToken` from `first` to the end; returns items and page count.
async fn all_pages(t: &TestService, first: &str) -> (Vec<Value>, usize, Vec<String>) {
    let mut items = Vec::new();
    let mut revisions = Vec::new();
    let mut path = first.to_owned();
    for pages in 1..1000 {
        let v = t.get(&path).await.ok_json(&path);
        revisions.push(v["metadata"]["entityVersion"].as_str().unwrap().to_owned());
        items.extend(v["items"].as_array().unwrap().iter().cloned());
        match v.get("nextToken").and_then(Value::as_str) {
            Some(tok) => {
                let sep = if first.contains('?') { '&' } else { '?' };
                path = format!("{first}{sep}nextToken={tok}");
            }
            None => return (items, pages, revisions),
        }
    }
    panic!("paging never ended");
}

/// Lists larger than one piece (256 KiB) are sent chunked while written;
/// they must say the same as a list assembled whole: every item once, in
/// order, the limit and `nextToken` exact across pieces, and the `cluster`
/// filter (which jumps over other clusters) exact by name and by ARN.
async fn large_lists_are_streamed_in_pieces_and_equal_their_pages(b: Backend) {
    let t = start_on(b).await;
    let padding = "x".repeat(2000);
    let clusters = ["a-first", "b-second", "c-third", "d-fourth"];
    let events: Vec<String> = (0..600)
        .map(|i| {
            task(clusters[i % 4], &format!("t{i:04}"), 1, |d| {
                d["startedBy"] = json!(format!("by-{}-{padding}", i % 5));
            })
        })
        .collect();
    for chunk in events.chunks(100) {
        t.inject(chunk).await;
    }
    let r = t.get("/v1/tasks").await;
    assert!(r.body.len() > 3 * 256 * 1024, "{} bytes", r.body.len());
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let all = r.json();
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 600);
    let keys: Vec<(String, String)> = items
        .iter()
        .map(|i| {
            let e = &i["entity"];
            (
                e["clusterARN"].as_str().unwrap().into(),
                e["taskARN"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "in order, each once");

    // Pages far larger than a piece concatenate to the same list.
    for limit in [150, 599, 600, 1000] {
        let (paged, pages, revisions) = all_pages(&t, &format!("/v1/tasks?limit={limit}")).await;
        assert_eq!(&paged, items, "limit {limit}");
        assert_eq!(pages, 600usize.div_ceil(limit), "limit {limit}");
        assert!(revisions.iter().all(|r| *r == revisions[0]));
    }

    // The cluster filter, by name and by ARN, alone and with another filter.
    for (i, c) in clusters.iter().enumerate() {
        let want: Vec<&(String, String)> = keys
            .iter()
            .filter(|(cl, _)| *cl == cluster_arn(c))
            .collect();
        for by in [
            c.to_string(),
            cluster_arn(c).replace(':', "%3A").replace('/', "%2F"),
        ] {
            let got = t.get(&format!("/v1/tasks?cluster={by}")).await.json();
            let got = got["items"].as_array().unwrap();
            assert_eq!(got.len(), want.len(), "cluster={by}");
            assert!(got
                .iter()
                .all(|g| g["entity"]["clusterARN"] == json!(cluster_arn(c))));
            let paged = all_pages(&t, &format!("/v1/tasks?cluster={by}&limit=40"))
                .await
                .0;
            assert_eq!(&paged, got, "cluster={by} paged");
        }
        let by = format!("by-{i}-{padding}");
        let got = t
            .get(&format!("/v1/tasks?cluster={c}&startedBy={by}"))
            .await
            .json();
        let expected = (0..600).filter(|n| n % 4 == i && n % 5 == i).count();
        assert_eq!(
            got["items"].as_array().unwrap().len(),
            expected,
            "{c} and startedBy"
        );
    }
    assert_eq!(
        t.get("/v1/tasks?cluster=zz-none").await.json()["items"],
        json!([])
    );
}

async fn pages_concatenate_to_the_unpaged_list_from_one_snapshot(b: Backend) {
    let t = start_on(b).await;
    let events: Vec<String> = (0..57)
        .map(|i| {
            task(
                if i % 3 == 0 { "7seven" } else { "main" },
                &format!("t{i:03}"),
                1,
                |d| {
                    if i % 2 == 0 {
                        d["lastStatus"] = json!("PENDING");
                    }
                },
            )
        })
        .collect();
    t.inject(&events).await;
    for query in [
        "",
        "?status=PENDING",
        "?cluster=7seven",
        "?cluster=arn:aws:ecs:us-west-2:111122223333:cluster%2Fmain",
    ] {
        let whole = t.get(&format!("/v1/tasks{query}")).await.json();
        let whole = whole["items"].as_array().unwrap().clone();
        for limit in [1, 5, 10, 56, 57, 1000] {
            let sep = if query.is_empty() { '?' } else { '&' };
            let (items, pages, _) =
                all_pages(&t, &format!("/v1/tasks{query}{sep}limit={limit}")).await;
            let ids = |v: &[Value]| {
                v.iter()
                    .map(|i| {
                        i["entity"]["taskARN"]
                            .as_str()
                            .unwrap()
                            .rsplit('/')
                            .next()
                            .unwrap()
                            .to_owned()
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            };
            assert_eq!(ids(&items), ids(&whole), "{query} limit {limit}");
            assert_eq!(items, whole, "{query} limit {limit}");
            assert_eq!(
                pages,
                whole.len().div_ceil(limit).max(1),
                "{query} limit {limit}"
            );
            let mut arns: Vec<_> = items
                .iter()
                .map(|i| i["entity"]["taskARN"].clone())
                .collect();
            arns.dedup();
            assert_eq!(arns.len(), items.len(), "an item twice");
        }
    }

    // Writes between pages change nothing of a listing already started.
    let first = t.get("/v1/tasks?limit=10").await.json();
    let token = first["nextToken"].as_str().unwrap().to_owned();
    let before = first["metadata"]["entityVersion"].clone();
    t.inject(&[
        task("main", "t001", 2, |d| d["lastStatus"] = json!("STOPPED")),
        task("aaa", "new", 1, |_| {}),
    ])
    .await;
    let mut rest = vec![first];
    let mut tok = Some(token);
    while let Some(tk) = tok {
        let v = t
            .get(&format!("/v1/tasks?limit=10&nextToken={tk}"))
            .await
            .json();
        tok = v
            .get("nextToken")
            .and_then(Value::as_str)
            .map(str::to_owned);
        rest.push(v);
    }
    for page in &rest {
        assert_eq!(
            page["metadata"]["entityVersion"], before,
            "a page from another snapshot"
        );
    }
    let all: Vec<&Value> = rest
        .iter()
        .flat_map(|p| p["items"].as_array().unwrap())
        .collect();
    assert_eq!(
        all.len(),
        57,
        "the new task must not appear in the old listing"
    );
    assert!(all.iter().all(|i| i["entity"]["lastStatus"] != "STOPPED"));
    // A fresh listing sees both writes.
    assert_eq!(t.count("/v1/tasks").await, 58);
    assert_eq!(task_ids(&t, "?status=STOPPED").await, ["t001"]);
}

async fn hostile_requests_get_4xx_json_and_never_break_the_server(b: Backend) {
    let t = world(b).await;
    let huge = "a".repeat(20_000);
    let paths: Vec<(String, u16)> = vec![
        ("/v1/tasks?%zz=1".into(), 400),
        ("/v1/tasks?status=%00".into(), 400),
        ("/v1/tasks?status=%ff%fe".into(), 400),
        ("/v1/tasks?=".into(), 400),
        ("/v1/tasks?&&&".into(), 200),
        ("/v1/tasks?status".into(), 200),
        ("/v1/tasks?limit=99999999999999999999999".into(), 400),
        ("/v1/tasks?limit=1e3".into(), 400),
        (format!("/v1/tasks?cluster={huge}"), 400),
        (format!("/v1/tasks?nextToken={huge}"), 400),
        (
            "/v1/tasks?nextToken=task.18446744073709551616.YWIK".into(),
            400,
        ),
        ("/v1/tasks?nextToken=instance.1.YWIK".into(), 400),
        ("/v1/tasks/%ff/%fe".into(), 404),
        ("/v1/tasks/c/%".into(), 400),
        (
            "/v1/tasks/c/arn:aws:ecs:us-west-2:1:task/c/%E2%82".into(),
            404,
        ),
        ("/v1/tasks/../../etc/passwd".into(), 400),
        ("/v1/tasks/arn:aws:ecs:r:1:cluster".into(), 404),
        ("/v1/tasks/arn:aws:ecs:r:1:cluster/".into(), 404),
        ("/v1/instances///".into(), 400),
        (format!("/v1/instances/c/{huge}"), 400),
        (
            "/v1/tasks/%E2%9C%93/arn:aws:ecs:us-west-2:1:task/x".into(),
            400,
        ),
        ("/v1/ping?x=1".into(), 400),
    ];
    for (p, status) in &paths {
        let r = t.get(p).await;
        assert_eq!(
            r.status,
            *status,
            "{p:.100}: {:.300}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            r.status == 200 || r.body.len() < 2000,
            "{p:.100}: the error echoes too much input"
        );
        assert_eq!(r.header("content-type"), Some("application/json"), "{p}");
        let body = r.json();
        assert!(
            body["message"].is_string() || body["items"].is_array(),
            "{p}"
        );
    }
    // Malformed HTTP never kills the listener.
    for junk in [
        &b"\x00\x01\x02\r\n\r\n"[..],
        b"GET /v1/tasks HTTP/9.9\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /v1/tasks?status=\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let _ = raw(t.addr(), junk).await;
    }
    assert_eq!(t.get("/v1/ping").await.status, 200);
    assert_eq!(task_ids(&t, "").await.len(), 5);
}

/// Every metric family the README lists, by name.
const METRIC_FAMILIES: &[&str] = &[
    "css_events_total",
    "css_store_commits_total",
    "css_store_commit_seconds_total",
    "css_store_errors_total",
    "css_store_revision",
    "css_view_entities",
    "css_view_loaded",
    "css_store_up",
    "css_source_up",
    "css_sqs_receive_seconds",
    "css_sqs_delete_seconds",
    "css_sqs_errors_total",
    "css_events_dead_lettered_total",
    "css_reconcile_sweeps_total",
    "css_reconcile_sweep_errors_total",
    "css_reconcile_sweep_seconds_total",
    "css_reconcile_added_total",
    "css_reconcile_updated_total",
    "css_reconcile_removed_total",
    "css_reconcile_api_calls_total",
    "css_reconcile_throttled_total",
    "css_reconcile_leader",
    "css_reconcile_pending",
    "css_store_deletions_total",
    "css_actor_restarts_total",
    "css_stream_changes_total",
    "css_streams_open",
    "css_stream_items_sent_total",
    "css_streams_dropped_total",
];

#[actix_web::test]
async fn the_metrics_pass_promtool_and_carry_every_family() {
    use css::config::Feed;
    use std::time::Duration;
    // The simulator feeds events and answers the reconcilers' ECS calls.
    let t = start_with(Feed::Simulate, |_| {}).await;
    t.wait_ready().await;
    let swept = "css_reconcile_sweeps_total{cluster=\"prod-web\"}";
    let ready = metric_reaches(t.addr(), swept, 1.0, Duration::from_secs(10)).await;
    assert!(ready, "the simulator's clusters were swept");
    let r = t.get("/metrics").await;
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
    let text = String::from_utf8(r.body).unwrap();
    for family in METRIC_FAMILIES {
        let declared = format!("# TYPE {family} ");
        assert!(text.contains(&declared), "{family} missing from\n{text}");
    }
    assert_eq!(t.metric("css_view_loaded ").await, 1.0);
    assert_eq!(t.metric("css_store_up ").await, 1.0);
    assert_eq!(t.metric("css_source_up ").await, 1.0, "the simulator is up");
    let ready = t.get("/readyz").await.json();
    assert_eq!(
        ready,
        serde_json::json!({"status": "ready", "source": "up"})
    );
    assert!(t.metric("css_events_total{outcome=\"applied\"}").await > 0.0);

    let (ok, said) = crate::servers::promtool(&["check", "metrics"], &text);
    assert!(ok && said.trim().is_empty(), "promtool: {said}");
}

/// The stopped-task filters (issue 20): `stoppedSince` (a time or a
/// duration), `stopCode`, `failed`, `exitCode`, on lists and streams.
async fn stopped_tasks_are_searchable(b: Backend) {
    let t = start_on(b).await;
    let ago = |mins: i64| actors::time::format_ms(actors::time::now_ms() - mins * 60_000);
    let stopped = |id: &str, mins: i64, code: &str, exit: Option<i64>| {
        let (at, code) = (ago(mins), code.to_owned());
        task("c", id, 5, move |d| {
            d["lastStatus"] = json!("STOPPED");
            d["desiredStatus"] = json!("STOPPED");
            d["stoppedAt"] = json!(at);
            d["stopCode"] = json!(code);
            d["containers"] = match exit {
                Some(e) => json!([{"name": "web", "lastStatus": "STOPPED", "exitCode": e}]),
                None => json!([{"name": "web", "lastStatus": "STOPPED"}]),
            };
        })
    };
    for e in [
        task("c", "r1", 1, |_| {}),
        stopped("s1", 30, "EssentialContainerExited", Some(0)),
        stopped("s2", 180, "EssentialContainerExited", Some(137)),
        stopped("s3", 10, "TaskFailedToStart", None),
        stopped("s4", 5, "UserInitiated", Some(0)),
    ] {
        t.inject(&[e]).await;
    }
    let four_hours_ago = ago(240);
    let cases: Vec<(String, &[&str])> = vec![
        ("?stoppedSince=1h".into(), &["s1", "s3", "s4"]),
        ("?stoppedSince=15m".into(), &["s3", "s4"]),
        (
            format!("?stoppedSince={four_hours_ago}"),
            &["s1", "s2", "s3", "s4"],
        ),
        ("?stopCode=TaskFailedToStart".into(), &["s3"]),
        ("?failed=true".into(), &["s2", "s3"]),
        ("?failed=FALSE".into(), &["r1", "s1", "s4"]),
        ("?exitCode=137".into(), &["s2"]),
        ("?exitCode=0".into(), &["s1", "s4"]),
        ("?failed=true&stoppedSince=1h".into(), &["s3"]),
        (
            "?stoppedSince=&failed=".into(),
            &["r1", "s1", "s2", "s3", "s4"],
        ),
    ];
    for (q, want) in &cases {
        assert_eq!(task_ids(&t, q).await, *want, "{q}");
    }
    for (q, message) in [
        ("?stoppedSince=yesterday", "Invalid stoppedSince"),
        ("?failed=maybe", "Invalid failed"),
        ("?exitCode=x", "Invalid exitCode"),
    ] {
        error(&t, "GET", &format!("/v1/tasks{q}"), 400, message).await;
        error(&t, "GET", &format!("/v1/stream/tasks{q}"), 400, message).await;
    }
    let mut s =
        StreamClient::open(t.addr(), "/v1/stream/tasks?failed=true&snapshot=true", "").await;
    let within = std::time::Duration::from_secs(5);
    for want in ["s2", "s3"] {
        let item = s.next_json(within).await.expect("an item");
        assert!(
            item["entity"]["taskARN"].as_str().unwrap().ends_with(want),
            "{item}"
        );
    }
    assert!(s
        .next_json(within)
        .await
        .expect("a bookmark")
        .get("bookmark")
        .is_some());
}

/// Task `id` of a cluster named `web` in `account` and `region`.
fn placed_task(account: &str, region: &str, id: &str) -> String {
    let event = task("web", id, 1, |_| {});
    event
        .replace("111122223333", account)
        .replace("us-west-2", region)
}

/// Four clusters named `web`: two accounts × two regions.
async fn lists_and_streams_filter_by_account_and_region(b: Backend) {
    const OTHER: &str = "222233334444";
    let t = start_on(b).await;
    let mut stream =
        StreamClient::open(t.addr(), &format!("/v1/stream/tasks?account={OTHER}"), "").await;
    let mut events = Vec::new();
    for (account, region, id) in [
        (ACCOUNT, "us-west-2", "a"),
        (ACCOUNT, "eu-west-1", "b"),
        (OTHER, "us-west-2", "c"),
        (OTHER, "eu-west-1", "d"),
    ] {
        events.push(placed_task(account, region, id));
    }
    let outcomes = t.inject(&events).await;
    assert!(outcomes
        .iter()
        .all(|o| *o == actors::decoder::MessageOutcome::Applied));

    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    for (query, want) in [
        ("", &["a", "b", "c", "d"][..]),
        ("?cluster=web", &["a", "b", "c", "d"]),
        (&format!("?account={OTHER}") as &str, &["c", "d"]),
        ("?region=eu-west-1", &["b", "d"]),
        (
            &format!("?account={OTHER}&region=eu-west-1&cluster=web"),
            &["d"],
        ),
        (&format!("?account={ACCOUNT}&status=running"), &["a", "b"]),
        (
            &format!("?cluster={}&account={OTHER}", cluster_arn("web")),
            &[],
        ),
        (
            &format!("?cluster={}&region=us-west-2", cluster_arn("web")),
            &["a"],
        ),
        ("?account=&region=", &["a", "b", "c", "d"]),
    ] {
        assert_eq!(sorted(task_ids(&t, query).await), want, "{query}");
    }
    // Paging walks every place in order and keeps the filter.
    let first = t
        .get("/v1/tasks?region=us-west-2&limit=1")
        .await
        .ok_json("page 1");
    let token = first["nextToken"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let second = t
        .get(&format!(
            "/v1/tasks?region=us-west-2&limit=1&nextToken={token}"
        ))
        .await;
    let pages = [
        arns(&first, "taskARN"),
        arns(&second.ok_json("page 2"), "taskARN"),
    ]
    .concat();
    assert_eq!(sorted(pages), ["a", "c"]);

    for kind in ["tasks", "instances", "services", "stream/tasks"] {
        let path = format!("/v1/{kind}?account=12345");
        error(&t, "GET", &path, 400, "Invalid account").await;
        let path = format!("/v1/{kind}?region=moon");
        error(&t, "GET", &path, 400, "Invalid region").await;
    }

    // A cluster name in several places: a service by name is ambiguous; a
    // full ARN is not.
    error(
        &t,
        "GET",
        "/v1/services/web/api",
        400,
        "cluster name web is in several accounts or regions; use its ARN",
    )
    .await;
    let encoded = cluster_arn("web").replace('/', "%2F");
    error(
        &t,
        "GET",
        &format!("/v1/services/{encoded}/api"),
        404,
        "Service not found",
    )
    .await;
    let d = placed_task(OTHER, "eu-west-1", "d");
    let d: Value = serde_json::from_str(&d).unwrap();
    let arn = d["detail"]["taskArn"].as_str().unwrap();
    t.get(&format!("/v1/tasks/web/{arn}"))
        .await
        .ok_json("describe by full ARN");

    // `/v1/clusters`: the four, with their places and counts.
    let all = t.get("/v1/clusters").await.ok_json("clusters");
    let places: Vec<(String, String)> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["clusterName"], "web", "{c}");
            assert_eq!(c["tasks"], json!({"RUNNING": 1}), "{c}");
            assert_eq!(
                (c["instances"].as_u64(), c["services"].as_u64()),
                (Some(0), Some(0))
            );
            assert_eq!(c["reconciled"], false, "no reconciler in this test");
            let arn = c["clusterARN"].as_str().unwrap();
            assert!(
                arn.contains(&format!(":{}:", c["account"].as_str().unwrap())),
                "{c}"
            );
            (
                c["account"].as_str().unwrap().to_owned(),
                c["region"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(places.len(), 4, "{all}");
    assert!(all["metadata"]["entityVersion"].is_string());
    let mine = t
        .get(&format!("/v1/clusters?account={OTHER}&region=eu-west-1"))
        .await
        .ok_json("one");
    assert_eq!(mine["items"].as_array().unwrap().len(), 1, "{mine}");
    let mut walked = Vec::new();
    let mut next = "/v1/clusters?limit=3".to_owned();
    for _ in 0..3 {
        let page = t.get(&next).await.ok_json("a page of clusters");
        walked.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["clusterARN"].clone()),
        );
        match page["nextToken"].as_str() {
            Some(token) => next = format!("/v1/clusters?limit=3&nextToken={token}"),
            None => break,
        }
    }
    let unpaged: Vec<Value> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["clusterARN"].clone())
        .collect();
    assert_eq!(walked, unpaged);
    error(&t, "GET", "/v1/clusters?region=moon", 400, "Invalid region").await;
    error(
        &t,
        "GET",
        "/v1/clusters?nextToken=abc",
        400,
        "Invalid nextToken",
    )
    .await;

    // The stream gets the other account's tasks and only them: a task
    // written after the four comes right after its two.
    t.inject(&[placed_task(OTHER, "us-west-2", "e")]).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let within = std::time::Duration::from_secs(10);
        let item = stream.next_json(within).await.expect("a change");
        let arn = item["entity"]["taskARN"].as_str().unwrap().to_owned();
        assert!(arn.contains(&format!(":{OTHER}:")), "{arn}");
        got.push(arn.rsplit('/').next().unwrap().to_owned());
    }
    assert_eq!(sorted(got), ["c", "d", "e"]);
}
