//! Two bridge instances on one broker (README "Scaling out"): each with its own client id and
//! base topic, its own cameras. They must never disturb each other: each has its own
//! `bridge/state` (and last will), Home Assistant sees one bridge device per instance with
//! that instance's cameras under it, and the stale-discovery cleanup of one never touches the
//! other's configs. Two instances that share a base topic by mistake are told so in the log.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::camera::{self, image};
use common::process::BridgeProcess;
use common::{Collector, Mosquitto};

/// A retained discovery config of `bridge_id` under a legacy topic this bridge never
/// publishes (an entity it had once): owned by that bridge, and stale.
fn stale_config(bridge_id: &str) -> (String, String) {
    (
        format!("homeassistant/binary_sensor/{bridge_id}/gone/config"),
        format!(
            r#"{{"name":"Gone","unique_id":"{bridge_id}_gone","state_topic":"x/gone","device":{{"identifiers":["{bridge_id}"],"name":"old"}}}}"#
        ),
    )
}

/// An instance: `camqtt-<name>` on base topic `site-<name>`, discovery on.
fn instance(broker: &Mosquitto, name: &str) -> BridgeProcess {
    let b = BridgeProcess::spawn(broker.url(), format!("camqtt-{name}"))
        .toml(&format!(
            "[mqtt]\nbase_topic = \"site-{name}\"\n[homeassistant]\ndiscovery_settle = 0\n"
        ))
        .start();
    b.wait_for_log("MQTT connected", Duration::from_secs(20));
    b
}

/// Wait until the retained value of `topic` satisfies `ok`; panics after 15 s.
async fn wait_retained(port: u16, topic: &str, ok: impl Fn(Option<&Bytes>) -> bool, what: &str) {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let r = common::retained(port, topic, Duration::from_millis(300)).await;
        if ok(r.get(topic)) {
            return;
        }
        assert!(
            Instant::now() < end,
            "{what}: retained {topic} is {:?}",
            r.get(topic)
        );
    }
}

/// Device-based discovery configs: object id → (device identifier, via_device, device name).
fn devices(retained: &BTreeMap<String, Bytes>) -> BTreeMap<String, (String, String, String)> {
    retained
        .iter()
        .filter(|(t, p)| t.starts_with("homeassistant/device/") && !p.is_empty())
        .map(|(t, p)| {
            let v: serde_json::Value = serde_json::from_slice(p).expect("discovery JSON");
            let d = v
                .get("device")
                .or_else(|| v.get("dev"))
                .expect("device block");
            let field = |long: &str, short: &str| {
                d.get(long)
                    .or_else(|| d.get(short))
                    .map(|x| match x {
                        serde_json::Value::Array(a) => a[0].as_str().unwrap_or("").to_owned(),
                        x => x.as_str().unwrap_or("").to_owned(),
                    })
                    .unwrap_or_default()
            };
            (
                t.clone(),
                (
                    field("identifiers", "ids"),
                    field("via_device", "via_dev"),
                    field("name", "name"),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_broker_keep_to_their_own_state_devices_and_cleanup() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let (stale_a, stale_b) = (
        stale_config("camqtt_bridge_camqtt_a"),
        stale_config("camqtt_bridge_camqtt_b"),
    );
    let planter = Collector::start(broker.port, "nothing/here").await;
    for (t, p) in [&stale_a, &stale_b] {
        planter.publish(t, p.clone(), true).await;
    }
    wait_retained(broker.port, &stale_a.0, |v| v.is_some(), "planted").await;

    // B first: its scan clears B's stale config and nothing of A's.
    let b = instance(&broker, "b");
    camera::post_ok(b.addr, camera::intrusion("58:5b:69:fd:0b:01").as_bytes()).await;
    wait_retained(broker.port, &stale_b.0, |v| v.is_none(), "B clears its own").await;
    let r = common::retained(broker.port, "homeassistant/#", Duration::from_millis(500)).await;
    assert_eq!(
        r.get(&stale_a.0).map(|p| &p[..]),
        Some(stale_a.1.as_bytes()),
        "B's cleanup left A's stale config alone"
    );

    // Then A: it clears its own and leaves B's discovery as it was.
    let b_before: BTreeMap<String, Bytes> = devices(&r)
        .keys()
        .map(|t| (t.clone(), r[t].clone()))
        .collect();
    let mut a = instance(&broker, "a");
    let overview = image("overview.jpg");
    let crop = image("crop.jpg");
    let lpr = camera::ipc_lpr("58:5b:69:fd:0a:01", "A1", &overview, &crop);
    camera::post_ok(a.addr, lpr.as_bytes()).await;
    wait_retained(broker.port, &stale_a.0, |v| v.is_none(), "A clears its own").await;
    let r = common::retained(broker.port, "#", Duration::from_millis(800)).await;
    for (t, p) in &b_before {
        assert_eq!(r.get(t), Some(p), "A changed B's discovery {t}");
    }

    // One bridge device per instance, each camera under its own instance's bridge.
    let devs = devices(&r);
    let find = |pred: &dyn Fn(&(String, String, String)) -> bool| {
        devs.values()
            .filter(|d| pred(d))
            .cloned()
            .collect::<Vec<_>>()
    };
    let bridges = find(&|d| d.0.starts_with("camqtt_bridge_"));
    let names: Vec<_> = bridges
        .iter()
        .map(|d| (d.0.as_str(), d.2.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("camqtt_bridge_camqtt_a", "camqtt site-a bridge"),
            ("camqtt_bridge_camqtt_b", "camqtt site-b bridge")
        ],
        "{devs:?}"
    );
    let under = |bridge: &str| find(&|d| d.1 == bridge).len();
    assert_eq!(under("camqtt_bridge_camqtt_a"), 1, "{devs:?}");
    assert_eq!(under("camqtt_bridge_camqtt_b"), 1, "{devs:?}");
    // Each instance's topics, bridge state included.
    for site in ["site-a", "site-b"] {
        let state = format!("{site}/bridge/state");
        assert_eq!(
            r.get(&state).map(|p| &p[..]),
            Some(&b"online"[..]),
            "{state}"
        );
    }
    assert!(
        r.keys()
            .any(|t| t.starts_with("site-a/") && t.ends_with("/lpr/image"))
    );

    // A dies: its will marks only A offline.
    a.kill();
    wait_retained(
        broker.port,
        "site-a/bridge/state",
        |v| v.is_some_and(|p| &p[..] == b"offline"),
        "A's will",
    )
    .await;
    let r = common::retained(
        broker.port,
        "site-b/bridge/state",
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(
        r.get("site-b/bridge/state").map(|p| &p[..]),
        Some(&b"online"[..])
    );
    for log in [a.log(), b.log()] {
        assert!(!log.contains("two instances share it"), "{log}");
    }
}

/// Two instances on the same base topic overwrite each other's bridge state: the one already
/// running says so as soon as the other publishes its `bridge/info`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_base_topic_is_reported() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let toml = "[homeassistant]\nenabled = false\n";
    let first = BridgeProcess::spawn(broker.url(), "camqtt-first")
        .toml(toml)
        .start();
    first.wait_for_log("MQTT connected", Duration::from_secs(20));
    let second = BridgeProcess::spawn(broker.url(), "camqtt-second")
        .toml(toml)
        .start();
    second.wait_for_log("MQTT connected", Duration::from_secs(20));
    first.wait_for_log("two instances share it", Duration::from_secs(10));
    let lines: Vec<String> = first
        .log()
        .lines()
        .filter(|l| l.contains("two instances share it"))
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 1, "once per other client id: {lines:?}");
    assert!(
        lines[0].contains("ERROR") && lines[0].contains("other_client_id=camqtt-second"),
        "{}",
        lines[0]
    );
}
