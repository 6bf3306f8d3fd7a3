//! Scale-out on a real broker cluster (README "Scaling out"): two Aedes nodes that share state
//! through Redis (`tests/common/cluster.rs`), two bridge instances, each with its own base
//! topic, client id and cameras, each connected to a different node and given both nodes.
//! A subscriber on node A receives every event of both instances and the retained discovery of
//! both. Then node B crashes mid-stream: its instance fails over to node A and delivers its
//! backlog, in order per camera. Every event answered 200 arrives, except what node B had
//! already acknowledged when it died: Aedes acknowledges a QoS 1 message before it passes it
//! on, so those few die with the node (the test checks each missing event against node B's
//! log of what it received). The cluster fires the crashed connection's last will late (after
//! the instance is back on node A); the instance sets its state back to `online`.

mod common;

use std::time::{Duration, Instant};

use common::Collector;
use common::cluster::Cluster;
use common::process::BridgeProcess;
use common::stream::{Stream, Tally, arrivals, wait_arrivals};

/// An instance `camqtt-<name>` on base topic `site-<name>`, given the cluster's nodes with
/// `first` first.
fn instance(cluster: &Cluster, name: &str, first: usize) -> BridgeProcess {
    let nodes = [cluster.url(first), cluster.url(1 - first)].join(",");
    let b = BridgeProcess::spawn(nodes, format!("camqtt-{name}"))
        .toml(&format!(
            "[mqtt]\nbase_topic = \"site-{name}\"\nkeep_alive = 5\n\
             [homeassistant]\ndiscovery_settle = 0\n"
        ))
        .start();
    b.wait_for_log("MQTT connected", Duration::from_secs(30));
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_crash_loses_nothing_the_node_had_not_acknowledged_and_instances_stay_apart() {
    let Some(mut cluster) = Cluster::try_start() else {
        return;
    };
    let col = Collector::start(cluster.port(0), "#").await;
    let a = instance(&cluster, "a", 0);
    let b = instance(&cluster, "b", 1);
    // Aedes speaks MQTT 3.1.1 only: both fell back on their own.
    for bridge in [&a, &b] {
        assert!(
            bridge.log().contains("using MQTT 3.1.1"),
            "{}",
            bridge.log()
        );
    }

    let stream_a = Stream::start(a.addr, 'A', 2);
    let stream_b = Stream::start(b.addr, 'B', 2);
    wait_arrivals(
        &col,
        "site-a/",
        20,
        Duration::from_secs(20),
        "A's events on node A",
    )
    .await;
    wait_arrivals(
        &col,
        "site-b/",
        20,
        Duration::from_secs(20),
        "B's events via node B",
    )
    .await;

    // The retained discovery of both instances, as a new subscriber on node A sees it.
    let retained =
        common::retained(cluster.port(0), "homeassistant/#", Duration::from_secs(1)).await;
    for id in ["camqtt_bridge_camqtt_a", "camqtt_bridge_camqtt_b"] {
        let topic = format!("homeassistant/device/{id}/config");
        assert!(
            retained.contains_key(&topic),
            "no retained {topic}: {:?}",
            retained.keys()
        );
    }
    let cameras = retained
        .iter()
        .filter(|(t, _)| t.starts_with("homeassistant/device/camqtt_585b69fd"))
        .count();
    assert_eq!(cameras, 4, "{:?}", retained.keys());

    // Node B crashes while both instances' cameras post.
    let crashed = Instant::now();
    let b_before = arrivals(&col, "site-b/").len();
    cluster.kill(1);
    wait_arrivals(
        &col,
        "site-b/",
        b_before + 30,
        Duration::from_secs(30),
        "B's events after the crash",
    )
    .await;
    let (replied_a, replied_b) = (stream_a.stop().await, stream_b.stop().await);

    let deadline = Instant::now() + Duration::from_secs(30);
    let (tally_a, tally_b) = loop {
        let plates = |base| {
            arrivals(&col, base)
                .into_iter()
                .map(|(p, _)| p)
                .collect::<Vec<_>>()
        };
        let t = (
            Tally::of(&replied_a, &plates("site-a/")),
            Tally::of(&replied_b, &plates("site-b/")),
        );
        if (t.0.missing.is_empty() && t.1.missing.is_empty()) || Instant::now() > deadline {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let first_after = arrivals(&col, "site-b/")
        .into_iter()
        .skip(b_before)
        .map(|(_, at)| at)
        .find(|at| *at > crashed)
        .expect("events after the crash");
    eprintln!(
        "cluster, node B crashed: instance A posted {} delivered {} duplicates {}; instance B \
         posted {} delivered {} missing {} duplicates {}; first event of B through node A {} ms \
         after the crash",
        tally_a.posted,
        tally_a.delivered,
        tally_a.duplicates,
        tally_b.posted,
        tally_b.delivered,
        tally_b.missing.len(),
        tally_b.duplicates,
        first_after.saturating_duration_since(crashed).as_millis()
    );
    // Instance A never lost its node: every event answered 200 arrives.
    assert!(
        tally_a.missing.is_empty(),
        "instance A: {} of {} events answered 200 never arrived; first {:?}\nlog:\n{}",
        tally_a.missing.len(),
        tally_a.posted,
        &tally_a.missing[..tally_a.missing.len().min(5)],
        a.log()
    );
    // Instance B: everything node B had not acknowledged arrives through node A. Aedes sends
    // its PUBACK before it passes a message on to Redis (aedes lib/handlers/publish.js), so an
    // event node B received (and so acknowledged) in its last moments can die with it: that is
    // the broker's loss, after its acknowledgement. Every missing event must be one of those.
    let on_b: Vec<String> = cluster
        .received(1)
        .iter()
        .filter_map(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        .filter_map(|v| v["plate"].as_str().map(str::to_owned))
        .collect();
    let lost_by_bridge: Vec<_> = tally_b
        .missing
        .iter()
        .filter(|p| !on_b.contains(p))
        .collect();
    assert!(
        lost_by_bridge.is_empty(),
        "instance B: events answered 200 and never acknowledged by node B did not arrive: \
         {:?}\nlog:\n{}",
        &lost_by_bridge[..lost_by_bridge.len().min(5)],
        b.log()
    );
    for (name, t) in [("A", &tally_a), ("B", &tally_b)] {
        assert!(
            t.out_of_order.is_empty(),
            "instance {name}: {:?}",
            t.out_of_order
        );
    }

    // Instance B is on node A now, says so, and counts the failover; A never moved. (Read
    // from the retained value: the Aedes cluster does not pass every message a client
    // publishes right after it connected to a `#` subscriber of that node, while subscribers
    // to the topic itself get them; the bridge did publish them.)
    let end = Instant::now() + Duration::from_secs(10);
    let info = loop {
        let r = common::retained(
            cluster.port(0),
            "site-b/bridge/info",
            Duration::from_millis(300),
        )
        .await;
        let info: Option<serde_json::Value> = r
            .get("site-b/bridge/info")
            .and_then(|p| serde_json::from_slice(p).ok());
        match info {
            Some(v) if v["mqtt"]["broker"] == cluster.url(0) => break v,
            other => assert!(Instant::now() < end, "site-b/bridge/info: {other:?}"),
        }
    };
    assert_eq!(info["counters"]["mqtt_failovers"], 1, "{info}");
    assert!(!a.log().contains("failover"), "{}", a.log());
    // The cluster fires the will of B's connection on the dead node once it notices (about
    // 1-3 s after the crash, after B is back): B answers by setting its state online again.
    tokio::task::block_in_place(|| {
        b.wait_for_log("publishing online again", Duration::from_secs(15))
    });
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = common::retained(
            cluster.port(0),
            "site-b/bridge/state",
            Duration::from_millis(300),
        )
        .await;
        if r.get("site-b/bridge/state").map(|p| &p[..]) == Some(b"online") {
            break;
        }
        assert!(Instant::now() < end, "site-b/bridge/state stays {r:?}");
    }
    let offline_seen = col
        .on("site-b/bridge/state")
        .iter()
        .any(|m| m.text() == "offline");
    assert!(offline_seen, "the cluster fired B's last will");
}
