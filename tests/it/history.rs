//! History (history.md): each entity's retained versions, every list `at=`
//! a past revision or moment, retention, and the same answers after a
//! restart — on both stores.

use crate::support::*;
use css::config::Feed;
use serde_json::Value;
use std::time::Duration;

/// Waits (bounded) until the clock is past `ms`, so that the next commit
/// is observed at a later millisecond.
async fn after(ms: i64) {
    let passed = eventually(Duration::from_secs(2), || async move {
        actors::time::now_ms() > ms
    })
    .await;
    assert!(passed, "the clock did not move past {ms}");
}

fn statuses(list: &Value) -> Vec<String> {
    let items = list["items"].as_array().expect("items");
    items
        .iter()
        .map(|i| i["entity"]["lastStatus"].as_str().unwrap_or("-").to_owned())
        .collect()
}

fn version(item: &Value) -> u64 {
    item["metadata"]["entityVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("entityVersion")
}

async fn error(t: &TestService, path: &str, status: u16, code: &str) -> String {
    let r = t.get(path).await;
    r.expect_status(status, path);
    let v = r.json();
    assert_eq!(v["code"], code, "{path}: {v}");
    v["message"].as_str().unwrap_or_default().to_owned()
}

/// Every item of a list at `path`, following `nextToken`; each page's
/// `entityVersion`.
async fn all_pages(t: &TestService, path: &str) -> (Vec<Value>, Vec<String>) {
    let (mut items, mut versions) = (Vec::new(), Vec::new());
    let mut next: Option<String> = None;
    for _ in 0..100 {
        let p = match &next {
            Some(tok) => format!("{path}&nextToken={tok}"),
            None => path.to_owned(),
        };
        let v = t.get(&p).await.ok_json(&p);
        items.extend(v["items"].as_array().unwrap().iter().cloned());
        versions.push(v["metadata"]["entityVersion"].as_str().unwrap().to_owned());
        match v["nextToken"].as_str() {
            Some(tok) => next = Some(tok.to_owned()),
            None => return (items, versions),
        }
    }
    panic!("{path}: more than 100 pages");
}

on_both_backends!(
    a_task_s_versions_and_the_lists_at_each_moment,
    history_older_than_the_retention_is_gone
);

async fn a_task_s_versions_and_the_lists_at_each_moment(b: Backend) {
    let t = start_on(b).await;
    let path = task_path("h", "t1");
    let history = format!("{path}/history");
    let mut last_ms = actors::time::now_ms();
    for events in [
        vec![task_event("h", "t1", 1, "PROVISIONING")],
        vec![task_event("h", "t1", 2, "RUNNING")],
        // A duplicate and a late event change nothing.
        vec![
            task_event("h", "t1", 2, "RUNNING"),
            task_event("h", "t1", 1, "PROVISIONING"),
        ],
        vec![task_event("h", "t1", 3, "STOPPED")],
    ] {
        after(last_ms).await;
        t.inject(&events).await;
        last_ms = actors::time::now_ms();
    }

    let h = t.get(&history).await.ok_json("history");
    assert_eq!(statuses(&h), ["PROVISIONING", "RUNNING", "STOPPED"], "{h}");
    let items = h["items"].as_array().unwrap().clone();
    let revs: Vec<u64> = items.iter().map(version).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");
    let observed: Vec<i64> = items
        .iter()
        .map(|i| actors::time::parse_ms(i["metadata"]["observedAt"].as_str().unwrap()).unwrap())
        .collect();
    assert!(observed.windows(2).all(|w| w[0] < w[1]), "{observed:?}");
    let from = actors::time::parse_ms(h["metadata"]["historyFrom"].as_str().unwrap()).unwrap();
    assert!(from <= observed[0], "historyFrom {from} after {observed:?}");
    assert_eq!(h["metadata"]["entityVersion"], revs[2].to_string());
    // Paged, and since=.
    let page = t.get(&format!("{history}?limit=2")).await.ok_json("page 1");
    assert_eq!(statuses(&page), ["PROVISIONING", "RUNNING"]);
    let token = page["nextToken"].as_str().expect("a nextToken");
    let rest = t
        .get(&format!("{history}?limit=2&nextToken={token}"))
        .await
        .ok_json("page 2");
    assert_eq!(statuses(&rest), ["STOPPED"]);
    assert!(rest.get("nextToken").is_none());
    let since = actors::time::format_ms(observed[1]);
    let recent = t
        .get(&format!("{history}?since={since}"))
        .await
        .ok_json("since");
    assert_eq!(statuses(&recent), ["RUNNING", "STOPPED"]);

    // The lists as they were.
    let at = |q: String| format!("/v1/tasks?cluster=h&at={q}");
    let before = t
        .get(&at(actors::time::format_ms(observed[0] - 1)))
        .await
        .ok_json("before");
    assert_eq!(statuses(&before), Vec::<String>::new());
    let first = t.get(&at(revs[0].to_string())).await.ok_json("at r1");
    assert_eq!(statuses(&first), ["PROVISIONING"]);
    assert_eq!(first["metadata"]["entityVersion"], revs[0].to_string());
    let between = t
        .get(&at(actors::time::format_ms(observed[1])))
        .await
        .ok_json("at t2");
    assert_eq!(statuses(&between), ["RUNNING"]);
    assert_eq!(between["metadata"]["entityVersion"], revs[1].to_string());
    let filtered = format!("/v1/tasks?status=STOPPED&at={}", revs[1]);
    assert_eq!(
        statuses(&t.get(&filtered).await.ok_json("filtered")).len(),
        0
    );
    let filtered = format!("/v1/tasks?status=STOPPED&at={}", revs[2]);
    assert_eq!(
        statuses(&t.get(&filtered).await.ok_json("filtered")),
        ["STOPPED"]
    );
    let clusters = t
        .get(&format!("/v1/clusters?at={}", revs[0]))
        .await
        .ok_json("clusters at r1");
    assert_eq!(
        clusters["items"][0]["tasks"],
        serde_json::json!({"PROVISIONING": 1})
    );

    // A deletion ends the history; the list after it no longer has the task.
    t.delete_stored(actors::model::Kind::Task, "/t1").await;
    let h = t.get(&history).await.ok_json("history after delete");
    let last = h["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["deleted"], true, "{h}");
    assert!(last.get("entity").is_none(), "{last}");
    let gone = version(&last);
    assert_eq!(
        statuses(&t.get(&at(gone.to_string())).await.ok_json("gone")).len(),
        0
    );
    assert_eq!(
        statuses(
            &t.get(&at((gone - 1).to_string()))
                .await
                .ok_json("just before")
        ),
        ["STOPPED"]
    );

    // Pages of a list of the past all come from that revision.
    let ids: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
    let running: Vec<String> = ids
        .iter()
        .map(|i| task_event("hp", i, 1, "RUNNING"))
        .collect();
    t.inject(&running).await;
    let then = t.get("/v1/tasks?cluster=hp").await.ok_json("hp");
    let then = then["metadata"]["entityVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let stopped: Vec<String> = ids
        .iter()
        .map(|i| task_event("hp", i, 2, "STOPPED"))
        .collect();
    t.inject(&stopped).await;
    let (items, pages) = all_pages(&t, &format!("/v1/tasks?cluster=hp&limit=2&at={then}")).await;
    assert_eq!(items.len(), 5);
    assert!(items.iter().all(|i| i["entity"]["lastStatus"] == "RUNNING"));
    assert_eq!(pages.len(), 3);
    assert!(pages.iter().all(|p| *p == then), "{pages:?}");

    // Not a moment of the past.
    let now: u64 = t.get("/v1/tasks").await.json()["metadata"]["entityVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let m = error(&t, &format!("/v1/tasks?at={}", now + 1), 400, "InvalidAt").await;
    assert!(m.starts_with("Invalid at"), "{m}");
    error(&t, "/v1/tasks?at=2999-01-01T00:00:00Z", 400, "InvalidAt").await;
    error(&t, "/v1/services?at=yesterday", 400, "InvalidAt").await;
    error(
        &t,
        &format!("{}/history", task_path("h", "never")),
        404,
        "TaskNotFound",
    )
    .await;
    error(&t, &format!("{history}?since=soon"), 400, "InvalidSince").await;
}

async fn history_older_than_the_retention_is_gone(b: Backend) {
    let t = start_with_on(b, Feed::None, |s| {
        s.store.history_retention = Some(Duration::from_secs(1));
    })
    .await;
    age_out_two_writes(&t).await;
    let first = t.rev(1);
    let path = format!("/v1/tasks?at={first}");
    let expired = eventually(Duration::from_secs(10), || async {
        t.get(&path).await.status == 410
    })
    .await;
    assert!(
        expired,
        "revision {first} is older than the retention but still listed"
    );
    let m = error(&t, &path, 410, "HistoryExpired").await;
    assert!(
        m.starts_with("History before") && m.ends_with("is no longer kept"),
        "{m}"
    );
    error(
        &t,
        "/v1/tasks?at=2020-01-01T00:00:00Z",
        410,
        "HistoryExpired",
    )
    .await;
    // What is kept: the state at the oldest kept moment, and what came after.
    let h = t
        .get(&format!("{}/history", task_path("c", "a")))
        .await
        .ok_json("history");
    let versions: Vec<i64> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["entity"]["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions.last(), Some(&3), "{h}");
    assert!(
        !versions.contains(&1),
        "version 1 is past the retention: {h}"
    );
    let kept = h["metadata"]["historyFrom"].as_str().unwrap();
    let now = t
        .get(&format!("/v1/tasks?at={kept}"))
        .await
        .ok_json("at historyFrom");
    assert_eq!(now["items"].as_array().unwrap().len(), 1, "{now}");
}

#[actix_web::test]
async fn history_is_the_same_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let t = start_with(Feed::None, |s| s.store.data_dir = data.clone()).await;
    t.inject(&[task_event("r", "t", 1, "PENDING")]).await;
    t.inject(&[task_event("r", "t", 2, "RUNNING")]).await;
    let first = t.rev(1);
    let paths = [
        format!("{}/history", task_path("r", "t")),
        format!("/v1/tasks?at={first}"),
        format!("/v1/clusters?at={first}"),
    ];
    let mut answers = Vec::new();
    for p in &paths {
        answers.push(t.get(p).await.ok_json(p));
    }
    assert_eq!(statuses(&answers[1]), ["PENDING"]);
    t.svc.stop().await;

    // The stopped actors let go of the store file as they wind down.
    let mut s = settings(&data);
    s.store.data_dir = data.clone();
    let mut again = None;
    for _ in 0..200 {
        match css::service::Service::start(&s, Feed::None, css::logging::discard()).await {
            Ok(svc) => {
                again = Some(svc);
                break;
            }
            Err(e) => {
                assert!(e.to_string().contains("locked"), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let again = again.expect("the store is let go of within 10 s");
    let ready = eventually(Duration::from_secs(10), || async {
        get(again.addr, "/readyz").await.status == 200
    })
    .await;
    assert!(ready);
    for (p, before) in paths.iter().zip(&answers) {
        assert_eq!(&get(again.addr, p).await.ok_json(p), before, "{p}");
    }
}
