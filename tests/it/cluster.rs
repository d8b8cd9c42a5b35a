//! A three-member etcd cluster losing members, with the real etcd: the
//! service routes around a dead member, waits out a lost quorum without
//! restarting anything, and loses and duplicates nothing.

use crate::servers::EtcdCluster;
use crate::support::*;
use actors::decoder::{Decode, MessageOutcome, RawMessage};
use css::config::Feed;
use std::time::Duration;

async fn on_cluster(cluster: &EtcdCluster) -> TestService {
    let endpoints = cluster.endpoints();
    start_with(Feed::None, move |s| {
        s.store.backend = actors::store::Backend::Etcd;
        s.store.etcd_endpoints = endpoints;
    })
    .await
}

/// Delivers `bodies` in batches of 10 as a queue does: a batch the service
/// could not store is delivered again (every 250 ms, for at most a minute).
/// Returns how many were applied.
async fn deliver(t: &TestService, bodies: &[String]) -> usize {
    let mut applied = 0;
    for (n, batch) in bodies.chunks(10).enumerate() {
        let messages: Vec<RawMessage> = batch
            .iter()
            .enumerate()
            .map(|(i, b)| RawMessage::new(format!("{n}-{i}"), b.clone()))
            .collect();
        let mut stored = false;
        for _ in 0..240 {
            let sent = Decode {
                messages: messages.clone(),
            };
            if let Ok(Ok(outcomes)) = t.svc.pipeline.decoder.send(sent).await {
                applied += outcomes
                    .iter()
                    .filter(|o| **o == MessageOutcome::Applied)
                    .count();
                stored = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(stored, "batch {n} was never stored");
    }
    applied
}

fn events(from: usize, to: usize) -> Vec<String> {
    (from..to)
        .map(|i| task_event("c", &format!("t{i}"), 1, "RUNNING"))
        .collect()
}

/// Tasks listed, and the store's revision (one per write).
async fn stored(t: &TestService) -> (usize, u64) {
    let list = t.get("/v1/tasks").await.json();
    let revision = list["metadata"]["entityVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (list["items"].as_array().map_or(0, Vec::len), revision)
}

#[actix_web::test]
async fn the_etcd_leader_killed_during_ingest_loses_nothing_and_writes_nothing_twice() {
    let _alone = heavy().await;
    let mut cluster = EtcdCluster::start();
    let t = on_cluster(&cluster).await;
    let all = events(0, 2000);
    let (before, after) = all.split_at(500);
    let mut applied = deliver(&t, before).await;
    let leader = cluster.leader().await;
    cluster.kill(leader);
    applied += deliver(&t, after).await;
    // Each event written once: 2,000 tasks in 2,000 revisions. (A write
    // whose answer died with the member is found written on the retry, and
    // counted stale then.)
    assert_eq!(stored(&t).await, (2000, t.base + 2000));
    assert!(applied >= 1990, "applied {applied}");
    let metrics = &t.svc.pipeline.metrics;
    assert_eq!(metrics.writer_restarts.get(), 0, "no restart and reload");
    assert_eq!(t.get("/readyz").await.status, 200);
}

#[actix_web::test]
async fn a_lost_quorum_makes_the_service_unready_and_loses_nothing() {
    let _alone = heavy().await;
    let mut cluster = EtcdCluster::start();
    let t = on_cluster(&cluster).await;
    deliver(&t, &events(0, 100)).await;
    cluster.kill(1);
    cluster.kill(2);
    let unready = eventually(Duration::from_secs(8), || async {
        t.get("/readyz").await.status == 503
    })
    .await;
    assert!(unready, "still ready without a quorum");
    let outage = async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(t.get("/readyz").await.status, 503, "ready without a quorum");
        cluster.restart(1);
        cluster.restart(2);
    };
    // Events keep arriving meanwhile; they are stored once quorum returns.
    let late = events(100, 300);
    let ((), _) = tokio::join!(outage, deliver(&t, &late));
    let ready = eventually(Duration::from_secs(30), || async {
        t.get("/readyz").await.status == 200
    })
    .await;
    assert!(ready, "not ready after quorum returned");
    assert_eq!(stored(&t).await, (300, t.base + 300));
    assert_eq!(t.svc.pipeline.metrics.writer_restarts.get(), 0);
}

/// Whether `p` reports leading each of `clusters` (`true`) or none (`false`).
async fn leads_all(p: &Proc, clusters: &[&str], leading: bool) -> bool {
    for c in clusters {
        let gauge = format!("css_reconcile_leader{{cluster=\"{c}\"}}");
        if (p.metric(&gauge).await == 1.0) != leading {
            return false;
        }
    }
    true
}

#[actix_web::test]
async fn a_replica_cut_off_from_etcd_goes_unready_hands_over_and_recovers() {
    let _alone = heavy().await;
    let etcd = EtcdCluster::start_everywhere();
    let ns = crate::servers::Netns::new();
    let env = vec![("CSS_RECONCILE__INTERVAL", "1s".to_owned())];
    // The simulator's first three clusters (each replica simulates the same).
    let clusters = ["prod-web", "batch", "9-analytics"];
    let inside: std::net::SocketAddr = format!("{}:3000", ns.inside_ip).parse().unwrap();
    let through_veth = etcd.endpoints_at(&ns.host_ip).join(",");
    let args = ["--simulate", "--etcd-endpoint", &through_veth];
    let cut_off = Proc::spawn_in(&ns.name, inside, &args, &env);
    cut_off.wait_ready(Duration::from_secs(30)).await;
    let led = eventually(Duration::from_secs(10), || {
        leads_all(&cut_off, &clusters, true)
    })
    .await;
    assert!(led, "the first replica leads every cluster");
    let on_loopback = etcd.endpoints().join(",");
    let other = Proc::spawn(&["--simulate", "--etcd-endpoint", &on_loopback], &env);
    other.wait_ready(Duration::from_secs(30)).await;

    ns.etcd_link(false);
    let unready = eventually(Duration::from_secs(15), || async {
        cut_off.status("/readyz").await == Some(503)
    })
    .await;
    assert!(unready, "still ready without etcd");
    let moved = eventually(Duration::from_secs(25), || async {
        leads_all(&other, &clusters, true).await && leads_all(&cut_off, &clusters, false).await
    })
    .await;
    assert!(moved, "its clusters did not move to the other replica");
    assert_eq!(other.status("/readyz").await, Some(200));

    ns.etcd_link(true);
    let back = eventually(Duration::from_secs(30), || async {
        cut_off.status("/readyz").await == Some(200)
    })
    .await;
    assert!(back, "not ready again once the link returned");
}

/// Reads `n` items from `s`; their versions.
async fn versions(s: &mut StreamClient, n: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let item = s
            .next_json(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("the stream stalled after {} items", out.len()));
        out.push(version_of(&item));
    }
    out
}

#[actix_web::test]
async fn with_writes_in_flight_every_stream_is_gap_free_and_in_order() {
    let t = start_on(Backend::Etcd).await;
    let path = "/v1/stream/tasks";
    let mut live =
        StreamClient::open(t.addr(), &format!("{path}?entityVersion={}", t.rev(1)), "").await;
    // 200 tasks, each in versions 1..=3, in 8 writers at once; a task's
    // versions may arrive out of order (the older is then stale).
    let events: Vec<String> = (1..=3)
        .flat_map(|v| (0..200).map(move |i| task_event("c", &format!("t{i}"), v, "RUNNING")))
        .collect();
    let mut writers = Vec::new();
    for part in events.chunks(75) {
        let part = part.to_vec();
        let addr_t = &t;
        writers.push(async move {
            for batch in part.chunks(10) {
                addr_t.inject(batch).await;
            }
        });
    }
    futures_util::future::join_all(writers).await;
    let list = t.get("/v1/tasks").await.json();
    let last: u64 = list["metadata"]["entityVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let written = (last - t.base) as usize;
    assert!(written >= 200, "only {written} writes");
    let expect = |from: u64| (from..=last).collect::<Vec<u64>>();
    assert_eq!(versions(&mut live, written).await, expect(t.base + 1));
    // From any version, out of the history: the same, from there.
    for from in [t.base + 1, t.base + written as u64 / 3, last] {
        let mut s = StreamClient::open(t.addr(), &format!("{path}?entityVersion={from}"), "").await;
        assert_eq!(
            versions(&mut s, (last - from + 1) as usize).await,
            expect(from)
        );
    }
}
