//! The dashboard (`/ui/`) in a real browser: headless Chromium driven over
//! WebDriver against the real binary, fed through moto's SQS: the overview's
//! counts equal the API's, a change shows within 2 s without a reload, a
//! filter narrows the table, a task's panel shows its exit codes, a restart
//! of the service is survived; with a token, nothing shows before it.

use crate::reconcile::EcsStack;
use crate::support::*;
use css_bench::webdriver::Browser;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn task(
    cluster: &str,
    id: &str,
    version: u64,
    status: &str,
    edit: impl FnOnce(&mut Value),
) -> String {
    let mut v: Value = serde_json::from_str(&task_event(cluster, id, version, status)).unwrap();
    edit(&mut v["detail"]);
    v.to_string()
}

fn instance(cluster: &str, id: &str) -> String {
    let mut v: Value = serde_json::from_str(&fixture("instance-active.json")).unwrap();
    let d = &mut v["detail"];
    d["clusterArn"] = json!(format!(
        "arn:aws:ecs:us-west-2:111122223333:cluster/{cluster}"
    ));
    d["containerInstanceArn"] = json!(format!(
        "arn:aws:ecs:us-west-2:111122223333:container-instance/{cluster}/{id}"
    ));
    v.to_string()
}

/// Tasks by cluster name, then by `lastStatus`, as the API lists them.
async fn api_counts(addr: std::net::SocketAddr) -> BTreeMap<String, BTreeMap<String, u64>> {
    let list = get(addr, "/v1/tasks").await.json();
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for i in list["items"].as_array().unwrap() {
        let e = &i["entity"];
        let cluster = cluster_of(e);
        *out.entry(cluster.into())
            .or_default()
            .entry(e["lastStatus"].as_str().unwrap().into())
            .or_default() += 1;
    }
    out
}

/// The same, as the overview's cards show them.
const PAGE_COUNTS: &str = r#"
    const out = {};
    for (const card of document.querySelectorAll('.card[data-cluster]')) {
      const c = out[card.dataset.cluster] = {};
      for (const dd of card.querySelectorAll('dl.tasks dd[data-count]')) c[dd.dataset.count] = Number(dd.textContent);
    }
    return out;"#;

async fn page_counts(b: &Browser) -> BTreeMap<String, BTreeMap<String, u64>> {
    serde_json::from_value(b.js(PAGE_COUNTS, json!([])).await).unwrap_or_default()
}

async fn has(p: &Proc, path: &str, check: impl Fn(&Value) -> bool) -> bool {
    eventually(Duration::from_secs(10), || async {
        p.try_get(path)
            .await
            .is_some_and(|r| r.status == 200 && check(&r.json()))
    })
    .await
}

#[actix_web::test]
async fn the_dashboard_shows_the_api_and_follows_it_live() {
    let _alone = heavy().await;
    let s = EcsStack::new().await;
    let addr = css_bench::ports::free_addr();
    let data = s.dir.path().join("data");
    let mut env = s.moto.env();
    env.push(("CSS_SOURCE__WAIT_TIME", "1s".into()));
    env.push(("CSS_SOURCE__VISIBILITY_TIMEOUT", "2s".into()));
    env.push(("CSS_RECONCILE__ENABLED", "false".into()));
    let args = ["--queue", "events", "--data-dir", data.to_str().unwrap()];
    let mut p = Proc::spawn_at(addr, &args, &env);
    p.wait_ready(Duration::from_secs(30)).await;

    // Served from the binary, with nothing allowed from elsewhere.
    let r = get(addr, "/").await;
    assert_eq!((r.status, r.header("location")), (302, Some("/ui/")));
    let r = get(addr, "/ui/app.js").await;
    assert_eq!(
        r.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(r
        .header("content-security-policy")
        .is_some_and(|c| c.contains("connect-src 'self'")));
    assert_eq!(get(addr, "/ui/nope.js").await.status, 404);

    let stopped_at = actors::time::format_ms(actors::time::now_ms() - 300_000);
    let mut events = vec![
        instance("alpha", "i1"),
        instance("alpha", "i2"),
        instance("beta", "i3"),
        task("alpha", "a1", 1, "RUNNING", |_| {}),
        task("alpha", "a2", 1, "RUNNING", |_| {}),
        task("alpha", "a3", 1, "PENDING", |d| {
            d["group"] = json!("family:batch")
        }),
        task("alpha", "a4", 3, "STOPPED", |d| {
            d["desiredStatus"] = json!("STOPPED");
            d["stoppedAt"] = json!(stopped_at);
            d["stopCode"] = json!("EssentialContainerExited");
            d["stoppedReason"] = json!("Essential container in task exited");
            d["containers"] = json!([{"name": "web", "image": "nginx:1.27", "lastStatus": "STOPPED",
                "exitCode": 137, "reason": "OutOfMemoryError: Container killed due to memory usage"}]);
        }),
        task("beta", "b1", 1, "RUNNING", |_| {}),
        task("beta", "b2", 1, "RUNNING", |_| {}),
    ];
    for e in events.drain(..) {
        s.send(e).await;
    }
    assert!(
        has(&p, "/v1/tasks", |v| v["items"]
            .as_array()
            .is_some_and(|i| i.len() == 6))
        .await,
        "the events were not all stored"
    );

    let b = Browser::start().await;
    b.go(&format!("http://{addr}/")).await;
    let live = "return document.querySelector('#conn').dataset.state === 'connected' \
                && document.querySelectorAll('.card[data-cluster]').length";
    assert!(
        b.until(Duration::from_secs(15), live).await.is_some(),
        "the overview never came up"
    );
    assert_eq!(
        b.js("return location.pathname + location.hash", json!([]))
            .await,
        "/ui/",
        "/ redirects to the dashboard"
    );
    let want = api_counts(addr).await;
    let mut got = BTreeMap::new();
    for _ in 0..40 {
        got = page_counts(&b).await;
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got, want, "the overview's task counts are the API's");
    let totals = b
        .js(
            "const c = document.querySelector('.card[data-cluster=\"alpha\"]'); \
             return [c.querySelector('[data-total=instances]').textContent, \
                     c.querySelector('[data-total=failed]').textContent];",
            json!([]),
        )
        .await;
    assert_eq!(
        totals,
        json!(["2", "1"]),
        "two instances, one task failed in the last hour"
    );

    // A change shows within 2 s of the service having it, without a reload.
    b.js("window.__same = true;", json!([])).await;
    s.send(task("alpha", "a3", 2, "RUNNING", |d| {
        d["group"] = json!("family:batch")
    }))
    .await;
    let running = |v: &Value| v["entity"]["lastStatus"] == "RUNNING";
    assert!(has(&p, &task_path("alpha", "a3"), running).await);
    let stored = Instant::now();
    let shown = b
        .until(
            Duration::from_secs(2),
            "const dd = document.querySelector('.card[data-cluster=\"alpha\"] dl.tasks dd[data-count=RUNNING]'); \
             return dd && dd.textContent === '3';",
        )
        .await;
    assert!(shown.is_some(), "the change did not show within 2 s");
    println!(
        "a change showed {:?} after the service stored it",
        stored.elapsed()
    );
    assert_eq!(
        b.js("return window.__same === true", json!([])).await,
        true,
        "no reload"
    );

    // The tasks view: the filters narrow the table, and live in the URL.
    b.go(&format!("http://{addr}/ui/#/tasks?cluster=alpha"))
        .await;
    let rows = "return document.querySelectorAll('#tasks tbody tr').length";
    assert_eq!(b.until(Duration::from_secs(10), rows).await, Some(json!(4)));
    // Its choices are the values the API accepts (its OpenAPI document).
    let choices = |id: &str| {
        format!("return [...document.querySelectorAll('#{id} option')].map((o) => o.value).filter(Boolean)")
    };
    for (id, values) in [
        ("f-status", css::api::TASK_STATUSES),
        ("f-desiredStatus", css::api::TASK_STATUSES),
        ("f-launchType", css::api::LAUNCH_TYPES),
    ] {
        assert_eq!(b.js(&choices(id), json!([])).await, json!(values), "{id}");
    }
    b.js(
        "const s = document.querySelector('#f-status'); s.value = 'STOPPED'; \
         s.dispatchEvent(new Event('change'));",
        json!([]),
    )
    .await;
    let one = "return document.querySelectorAll('#tasks tbody tr').length === 1 && location.hash";
    let hash = b.until(Duration::from_secs(5), one).await;
    assert_eq!(hash, Some(json!("#/tasks?cluster=alpha&status=STOPPED")));
    // A task's panel: its containers with their exit codes.
    b.click("#tasks tbody tr").await;
    let exit = "const e = document.querySelector('#panel:not([hidden]) .exit-code'); return e && e.textContent";
    assert_eq!(
        b.until(Duration::from_secs(5), exit).await,
        Some(json!("137"))
    );
    let panel = b
        .js(
            "return document.querySelector('#panel').innerText",
            json!([]),
        )
        .await;
    assert!(
        panel.as_str().unwrap().contains("OutOfMemoryError"),
        "{panel}"
    );
    assert!(
        panel.as_str().unwrap().contains("EssentialContainerExited"),
        "{panel}"
    );

    // No services are known (no ECS here): the view says so.
    b.go(&format!("http://{addr}/ui/#/services")).await;
    let none = "const e = document.querySelector('#content .empty'); return e && e.textContent";
    let said = b
        .until(Duration::from_secs(5), none)
        .await
        .unwrap_or_default();
    assert!(
        said.as_str().unwrap_or_default().contains("No services"),
        "{said}"
    );

    // A restart is survived: the page reconnects and catches up.
    b.go(&format!("http://{addr}/ui/#/overview")).await;
    assert!(b.until(Duration::from_secs(10), live).await.is_some());
    p.terminate();
    assert!(p.wait_exit(Duration::from_secs(20)).await.is_some());
    let state = "return document.querySelector('#conn').dataset.state === 'reconnecting'";
    assert!(
        b.until(Duration::from_secs(10), state).await.is_some(),
        "no sign of the outage"
    );
    let p = Proc::spawn_at(addr, &args, &env);
    p.wait_ready(Duration::from_secs(30)).await;
    assert!(
        b.until(Duration::from_secs(15), live).await.is_some(),
        "the page did not reconnect"
    );
    // The old process's last long poll (1 s) may still be open at moto, and
    // then takes the next message out of sight for the visibility timeout
    // (2 s here): `has` waits longer than that.
    s.send(task("beta", "b1", 2, "STOPPED", |d| {
        d["desiredStatus"] = json!("STOPPED")
    }))
    .await;
    let stopped = |v: &Value| v["entity"]["lastStatus"] == "STOPPED";
    assert!(has(&p, &task_path("beta", "b1"), stopped).await);
    let caught_up = "const dd = document.querySelector('.card[data-cluster=\"beta\"] dl.tasks dd[data-count=STOPPED]'); \
                     return dd && dd.textContent === '1';";
    assert!(
        b.until(Duration::from_secs(2), caught_up).await.is_some(),
        "a change after the restart did not show within 2 s"
    );
    assert_eq!(page_counts(&b).await, api_counts(addr).await);
}

#[actix_web::test]
async fn with_a_token_the_page_shows_nothing_before_it_is_entered() {
    let _alone = heavy().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let data = dir.path().join("data");
    // The simulator as `./scripts/demo` runs it (two accounts in two
    // regions, two clusters in each), so the screenshot below is what the
    // README promises.
    let p = Proc::spawn(
        &["--simulate", "--data-dir", data.to_str().unwrap()],
        &[
            ("CSS_SERVER__AUTH_TOKEN_FILE", token.display().to_string()),
            ("CSS_SIMULATE__ACCOUNTS", "2".into()),
            ("CSS_SIMULATE__REGIONS", "us-west-2,eu-west-1".into()),
            ("CSS_SIMULATE__CLUSTERS", "2".into()),
        ],
    );
    p.wait_ready(Duration::from_secs(30)).await;
    assert_eq!(
        p.get("/ui/").await.status,
        200,
        "the page holds no data: no token needed"
    );
    assert_eq!(p.get("/v1/tasks").await.status, 401);

    let b = Browser::start().await;
    b.go(&format!("http://{}/ui/", p.addr)).await;
    let asked = "return !document.querySelector('#login').hidden";
    assert!(
        b.until(Duration::from_secs(10), asked).await.is_some(),
        "no token form"
    );
    let nothing = "return getComputedStyle(document.querySelector('#view')).display === 'none' \
                   && document.querySelectorAll('.card, tr').length === 0";
    assert_eq!(
        b.js(nothing, json!([])).await,
        true,
        "data before the token"
    );
    b.type_into("#token", "wrong\u{E007}").await;
    let refused = "const e = document.querySelector('#login-error'); return e.textContent";
    assert!(
        b.until(Duration::from_secs(5), refused).await.is_some(),
        "a wrong token passed"
    );
    assert_eq!(b.js(nothing, json!([])).await, true);
    b.js("document.querySelector('#token').value = '';", json!([]))
        .await;
    b.type_into("#token", "s3cret-token\u{E007}").await;
    let cards = "return document.querySelectorAll('.card[data-cluster]').length";
    let eight = format!("{cards} === 8");
    if b.until(Duration::from_secs(15), &eight).await.is_none() {
        panic!(
            "cards: {} (2 x 2 x 2 clusters)",
            b.js(cards, json!([])).await
        );
    }
    let headings = "return [...document.querySelectorAll('#view h2, #view h3')].map(h => h.textContent).join('|')";
    let headings = b.js(headings, json!([])).await;
    let headings = headings.as_str().unwrap_or_default();
    for place in ["123456789012", "123456789013", "us-west-2", "eu-west-1"] {
        assert!(
            headings.contains(place),
            "{place} in the headings: {headings}"
        );
    }
    let form_gone = "return getComputedStyle(document.querySelector('#login')).display === 'none'";
    assert_eq!(
        b.js(form_gone, json!([])).await,
        true,
        "the token form is gone"
    );
    assert_eq!(
        b.js("return sessionStorage.getItem('css-token')", json!([]))
            .await,
        "s3cret-token",
        "kept for the tab"
    );
    // What the README shows (`DASHBOARD_SCREENSHOT=docs/overview.png` writes it),
    // once every snapshot is in.
    let settled = "const t = document.querySelector('#conn-text').textContent; \
                   return t.startsWith('connected') && !t.includes('loading')";
    assert!(b.until(Duration::from_secs(15), settled).await.is_some());
    // Tall enough for both accounts' four regions.
    b.resize(1280, 1900).await;
    let second = "const h = [...document.querySelectorAll('#view h2')].pop(); \
                  return h && h.getBoundingClientRect().bottom < window.innerHeight";
    assert!(
        b.until(Duration::from_secs(5), second).await.is_some(),
        "the second account in view"
    );
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(b.screenshot().await)
        .unwrap_or_default();
    assert!(png.starts_with(b"\x89PNG"), "a screenshot of the overview");
    if let Some(path) = std::env::var_os("DASHBOARD_SCREENSHOT") {
        std::fs::write(path, &png).unwrap();
    }
}

/// Clusters in two accounts and two regions (from a replay file): the
/// overview groups them by account, then region, and the account and region
/// filters narrow every view, in the URL like the others.
#[actix_web::test]
async fn the_overview_groups_by_account_and_region_and_the_views_filter_by_them() {
    const OTHER: &str = "222233334444";
    let _alone = heavy().await;
    let dir = tempfile::tempdir().unwrap();
    let placed = |account: &str, region: &str, cluster: &str, id: &str| {
        task(cluster, id, 1, "RUNNING", |_| {})
            .replace(ACCOUNT, account)
            .replace("us-west-2", region)
    };
    let events = [
        placed(ACCOUNT, "us-west-2", "web", "a"),
        placed(ACCOUNT, "eu-west-1", "web", "b"),
        placed(OTHER, "us-west-2", "web", "c"),
        placed(OTHER, "us-west-2", "api", "d"),
    ];
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, events.join("\n") + "\n").unwrap();
    let data = dir.path().join("data");
    let args = [
        "--replay",
        file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let p = Proc::spawn(&args, &[]);
    p.wait_ready(Duration::from_secs(30)).await;
    let four = |v: &Value| v["items"].as_array().is_some_and(|i| i.len() == 4);
    assert!(
        has(&p, "/v1/tasks", four).await,
        "the events were not all stored"
    );

    let b = Browser::start().await;
    // Waits for the page's `expr` to equal `want`; what it was, if not.
    let shows = |expr: &'static str, want: String| {
        let b = &b;
        async move {
            let check = format!("return ({expr}) === {want:?}");
            match b.until(Duration::from_secs(15), &check).await {
                Some(_) => Ok(()),
                None => Err(b.js(&format!("return {expr}"), json!([])).await),
            }
        }
    };
    let groups = "[...document.querySelectorAll('section.account')].map((a) => \
        a.dataset.account + ' ' + [...a.querySelectorAll('section.region')].map((r) => \
        r.dataset.region + ':' + r.querySelectorAll('.card').length).join(' ')).join(' | ')";
    b.go(&format!("http://{}/ui/", p.addr)).await;
    let want = format!("{ACCOUNT} eu-west-1:1 us-west-2:1 | {OTHER} us-west-2:2");
    shows(groups, want)
        .await
        .expect("grouped by account, then region");

    // The overview narrowed to one account, from the URL.
    b.go(&format!("http://{}/ui/#/overview?account={OTHER}", p.addr))
        .await;
    shows(groups, format!("{OTHER} us-west-2:2"))
        .await
        .expect("one account");

    // The tasks view: choosing a region narrows the table and the URL.
    b.go(&format!("http://{}/ui/#/tasks", p.addr)).await;
    let rows = "[...document.querySelectorAll('#tasks tbody tr')].map((r) => \
        r.dataset.arn.split('/').pop()).sort().join(',')";
    shows(rows, "a,b,c,d".into()).await.expect("every task");
    b.js(
        "const s = document.querySelector('#f-region'); s.value = 'eu-west-1'; \
         s.dispatchEvent(new Event('change'));",
        json!([]),
    )
    .await;
    shows(rows, "b".into()).await.expect("the region's task");
    let hash = b.js("return location.hash", json!([])).await;
    assert!(
        hash.as_str()
            .is_some_and(|h| h.contains("region=eu-west-1")),
        "{hash}"
    );
    // Instances and services take the same filters, from the URL.
    let selected = "(document.querySelector('#f-account') || {}).value + ' ' + \
        (document.querySelector('#f-region') || {}).value";
    for view in ["instances", "services"] {
        b.go(&format!(
            "http://{}/ui/#/{view}?account={OTHER}&region=us-west-2",
            p.addr
        ))
        .await;
        let want = format!("{OTHER} us-west-2");
        shows(selected, want)
            .await
            .unwrap_or_else(|got| panic!("{view}: {got}"));
    }
}
