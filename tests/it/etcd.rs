//! The etcd store's own features: history compaction, credentials, TLS.

use crate::servers::{make_certs, Etcd};
use crate::support::*;
use css::config::Feed;
use std::time::Duration;

/// Applies one event through the service's pipeline.
async fn apply(svc: &css::service::Service, body: String) -> Vec<actors::decoder::MessageOutcome> {
    let messages = vec![actors::decoder::RawMessage::new("1", body)];
    svc.pipeline
        .decoder
        .send(actors::decoder::Decode { messages })
        .await
        .unwrap()
        .unwrap()
}

#[actix_web::test]
async fn history_older_than_the_retention_is_compacted() {
    let t = start_with_on(Backend::Etcd, Feed::None, |s| {
        s.store.history_retention = Some(Duration::from_secs(1));
    })
    .await;
    age_out_two_writes(&t).await;

    let endpoint = t._etcd.as_ref().unwrap().endpoint();
    let mut c = etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap();
    let old = t.base + 1;
    let mut compacted = false;
    for _ in 0..50 {
        let r = c
            .get(
                "css/e/",
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_revision(old as i64),
                ),
            )
            .await;
        if let Err(e) = r {
            // etcd's answer for a revision its history no longer holds.
            let out_of_range = matches!(&e, etcd_client::Error::GRpcStatus(s)
                if s.code() == tonic::Code::OutOfRange);
            assert!(out_of_range, "{e}");
            compacted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        compacted,
        "revision {old} is older than the retention but still readable"
    );
    // The newest state is untouched.
    let v = t.get("/v1/tasks").await.json();
    assert_eq!(v["items"][0]["entity"]["version"], 3);
}

#[actix_web::test]
async fn etcd_with_a_user_and_password() {
    let etcd = Etcd::start();
    let mut c = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    c.user_add("root", "s3cret-pass", None).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.auth_enable().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let bad = dir.path().join("bad");
    std::fs::write(&good, "s3cret-pass\n").unwrap();
    std::fs::write(&bad, "wrong").unwrap();
    let start = |password_file: std::path::PathBuf| {
        let mut s = settings(dir.path());
        s.store.backend = actors::store::Backend::Etcd;
        s.store.etcd_endpoints = vec![etcd.endpoint()];
        s.store.etcd_username = "root".into();
        s.store.etcd_password_file = password_file;
        async move { css::service::Service::start(&s, Feed::None, css::logging::discard()).await }
    };
    let refused = start(bad).await;
    assert!(refused.is_err(), "a wrong password must not start");

    let svc = start(good).await.expect("the right password works");
    let ok = eventually(Duration::from_secs(10), || async {
        get(svc.addr, "/readyz").await.status == 200
    })
    .await;
    assert!(ok);
    let out = apply(&svc, task_event("auth", "a", 1, "RUNNING")).await;
    assert_eq!(out, [actors::decoder::MessageOutcome::Applied]);
    assert_eq!(count(svc.addr, "/v1/tasks").await, 1);
    svc.stop().await;
}

#[actix_web::test]
async fn etcd_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(certs.path());
    let etcd = Etcd::start_with_tls(Some((cert, key)));
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.store.backend = actors::store::Backend::Etcd;
    s.store.etcd_endpoints = vec![etcd.endpoint()];
    s.store.etcd_ca_file = ca;
    let svc = css::service::Service::start(&s, Feed::None, css::logging::discard())
        .await
        .unwrap();
    let ok = eventually(Duration::from_secs(10), || async {
        get(svc.addr, "/readyz").await.status == 200
    })
    .await;
    assert!(ok, "not ready over TLS");
    let out = apply(&svc, task_event("tls", "a", 1, "RUNNING")).await;
    assert_eq!(out, [actors::decoder::MessageOutcome::Applied]);
    svc.stop().await;

    // Without the CA, the plain client cannot talk to it: never ready.
    let mut s = settings(dir.path());
    s.store.backend = actors::store::Backend::Etcd;
    s.store.etcd_endpoints = vec![etcd.endpoint()];
    let svc = css::service::Service::start(&s, Feed::None, css::logging::discard())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(get(svc.addr, "/readyz").await.status, 503);
    svc.stop().await;
}

/// An etcd store on `etcd`'s keys under `prefix`.
async fn store_on(etcd: &Etcd, prefix: &str) -> actors::store::Etcd {
    let config = actors::store::etcd::Config {
        endpoints: vec![etcd.endpoint()],
        key_prefix: prefix.into(),
        ..Default::default()
    };
    let store = actors::store::Etcd::connect(&config, css::logging::discard()).await;
    store.expect("etcd answers")
}

/// The store op that an event's entity is written with.
fn put_op(event: &str) -> actors::store::Op {
    use actors::decoder::decode::{decode, Decoded};
    match decode(event) {
        Ok(Decoded::Entity(e)) => actors::store::Op::Put(e),
        other => panic!("{other:?}"),
    }
}

/// A write skips the read before its compare-and-swap by guessing from what
/// this replica last saw; another replica's writes make those guesses wrong,
/// and the version rule must still hold, read from etcd, every time.
#[actix_web::test]
async fn writes_from_a_replica_with_an_outdated_view_follow_the_version_rule() {
    use actors::store::{self, Op, Outcome, Store};
    let etcd = Etcd::start();
    let (a, b) = (
        store_on(&etcd, "/guess").await,
        store_on(&etcd, "/guess").await,
    );
    a.load().await.unwrap();
    b.load().await.unwrap();
    let put = |version: u64, status: &str| vec![put_op(&task_event("g", "t1", version, status))];
    let one = |outcomes: store::Result<Vec<Outcome>>| outcomes.unwrap().pop().unwrap();
    let applied = |o: Outcome| match o {
        Outcome::Applied(c) => c,
        Outcome::Stale => panic!("stale, expected applied"),
    };
    let stale = |o: Outcome| matches!(o, Outcome::Stale);

    // b writes v5; a has never seen the task: its guess (absent) is wrong.
    let v5 = applied(one(b.commit(put(5, "PENDING"), 1).await));
    assert!(
        stale(one(a.commit(put(3, "PENDING"), 1).await)),
        "v3 over v5"
    );
    let v6 = applied(one(a.commit(put(6, "RUNNING"), 1).await));
    assert!(v6.entry.revision > v5.entry.revision);
    // b last saw v5: its guess lets v5 < v4 < v6 through; the read must not.
    assert!(
        stale(one(b.commit(put(4, "RUNNING"), 1).await)),
        "v4 over v6"
    );
    let v7 = applied(one(b.commit(put(7, "RUNNING"), 1).await));

    // a deletes at the revision it saw (v6): the task has changed since.
    let delete = |rev: u64| {
        vec![Op::Delete {
            arn: v5.entry.arn.clone(),
            if_revision: rev,
        }]
    };
    assert!(stale(one(a.commit(delete(v6.entry.revision), 1).await)));
    let gone = applied(one(a.commit(delete(v7.entry.revision), 1).await));
    assert!(gone.deleted && gone.entry.version == Some(7));

    // b still guesses v7 live: the tombstone (v7) must block v7 and admit v8.
    assert!(stale(one(b.commit(put(7, "STOPPED"), 1).await)));
    let v8 = applied(one(b.commit(put(8, "STOPPED"), 1).await));
    assert!(v8.entry.revision > gone.entry.revision);
    assert_eq!(v8.entry.status, "STOPPED");

    // What etcd holds, read afresh, is v8, and nothing older got in.
    let fresh = store_on(&etcd, "/guess").await.load().await.unwrap();
    assert_eq!(fresh.entries.len(), 1);
    assert_eq!(fresh.entries[0].version, Some(8));
    assert_eq!(fresh.entries[0].revision, v8.entry.revision);

    // a deletes v8 and purges the tombstone: the task is unknown again, so
    // any version applies (rule 7), though b's guess (v8 live) says stale.
    assert!(applied(one(a.commit(delete(v8.entry.revision), 1).await)).deleted);
    assert_eq!(a.purge_tombstones(i64::MAX).await.unwrap(), 1);
    let v2 = applied(one(b.commit(put(2, "PENDING"), 1).await));
    assert_eq!(v2.entry.version, Some(2));
}

#[actix_web::test]
async fn a_replica_that_lost_the_lead_writes_nothing_as_the_leader() {
    use actors::store::{self, Store};
    let etcd = Etcd::start();
    let a = store_on(&etcd, "css").await;
    let task = |id: &str| put_op(&task_event("c", id, 1, "RUNNING"));
    assert!(a.lead("c").await.unwrap());
    assert!(a.leads("c"));
    let written = a.commit_as_leader(vec![task("t1")], 1, "c").await.unwrap();
    assert_eq!(written.len(), 1);
    // Another replica takes the lead (as after this one's lease ran out).
    let mut other = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    other
        .put("css/leader/c", "another replica", None)
        .await
        .unwrap();
    let refused = a.commit_as_leader(vec![task("t2")], 2, "c").await;
    assert!(
        matches!(refused, Err(store::Error::NotLeader(ref c)) if c == "c"),
        "{refused:?}"
    );
    assert!(!a.leads("c"), "it knows it no longer leads");
    let t2 = other
        .get("css/e/arn:aws:ecs:us-west-2:111122223333:task/c/t2", None)
        .await;
    assert_eq!(t2.unwrap().count(), 0, "the fenced write was made");
    // An unfenced write (an event) is not the leader's business.
    assert_eq!(a.commit(vec![task("t2")], 3).await.unwrap().len(), 1);
}
