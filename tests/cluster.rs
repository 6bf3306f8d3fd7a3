//! The clustered broker of `tests/common/cluster.rs` is one broker, seen through a real MQTT
//! client: two Aedes nodes sharing Redis, node A (`0`) and node B (`1`).
//! * a QoS 1 message published on either node reaches a subscriber on the other;
//! * a retained message stored through B is replayed to a new subscriber on A, and an empty
//!   retained payload through B clears it for A too;
//! * megabyte payloads (camqtt's JPEGs) cross nodes byte for byte;
//! * when B crashes, A keeps serving and publishes the will of a client that was on B, within a
//!   few seconds; B restarts on its port and rejoins;
//! * a clean stop (SIGTERM) exits 0 and publishes the wills of the node's clients once; the
//!   node starts again on its port;
//! * an MQTT 5 CONNECT is refused with a 3.1.1 CONNACK, return code 1, and the connection closed:
//!   what camqtt's fallback to 3.1.1 expects.
//!
//! Every test skips (prints `skipping: ...`) without node, redis-server or
//! `tests/cluster/node_modules`, unless `CAMQTT_REQUIRE_CLUSTER=1`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Collector;
use common::cluster::Cluster;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, PublishOptions, QoS};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The longest any single wait in these tests may take; most take milliseconds.
const WAIT: Duration = Duration::from_secs(10);

/// An MQTT 3.1.1 client on one node that publishes and waits for the PUBACK.
struct Client {
    client: AsyncClient,
    connected: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Client {
    /// Connect to `127.0.0.1:<port>` as `id` (clean session) with an optional last will, and
    /// wait for the CONNACK; panics after [`WAIT`].
    async fn connect(port: u16, id: &str, will: Option<LastWill>) -> Client {
        let mut opts = MqttOptions::new(id, ("127.0.0.1".to_owned(), port));
        opts.set_max_packet_size(64 << 20, 64 << 20);
        opts.set_keep_alive(5);
        if let Some(w) = will {
            opts.set_last_will(w);
        }
        let (client, mut el) = AsyncClient::builder(opts).capacity(100).build();
        let (tx, mut connected) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = tx.send(true);
                    }
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::RequestsDone) => return,
                    Err(_) => {
                        let _ = tx.send(false);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tokio::time::timeout(WAIT, connected.wait_for(|c| *c))
            .await
            .unwrap_or_else(|_| panic!("{id}: no CONNACK from port {port}"))
            .expect("client task alive");
        Client {
            client,
            connected,
            task,
        }
    }

    /// Publish at QoS 1 and wait for the broker's PUBACK; panics after [`WAIT`].
    async fn publish(&self, topic: &str, payload: impl Into<Bytes>, retain: bool) {
        let opts = PublishOptions::at_least_once().retain(retain);
        let notice = self
            .client
            .publish_tracked(topic.to_owned(), payload.into(), opts)
            .await
            .expect("queue publish");
        tokio::time::timeout(WAIT, notice.wait_async())
            .await
            .unwrap_or_else(|_| panic!("{topic}: no PUBACK"))
            .unwrap_or_else(|e| panic!("{topic}: {e}"));
    }

    /// Wait until the connection is down (the node died or closed it); panics after [`WAIT`].
    async fn wait_disconnected(&mut self) {
        tokio::time::timeout(WAIT, self.connected.wait_for(|c| !*c))
            .await
            .expect("connection still up")
            .expect("client task alive");
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client id unique in this process (a duplicate would kick the other client off).
fn id(name: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{name}-{}-{n}", std::process::id())
}

/// `len` bytes of a simple pseudo-random sequence: no run or repeat that could hide a
/// misplaced block.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_messages_cross_nodes_both_ways() {
    let Some(cluster) = Cluster::try_start() else {
        return;
    };
    let on_a = Collector::start(cluster.port(0), "cross/#").await;
    let on_b = Collector::start(cluster.port(1), "cross/#").await;
    let pub_a = Client::connect(cluster.port(0), &id("pub-a"), None).await;
    let pub_b = Client::connect(cluster.port(1), &id("pub-b"), None).await;

    pub_b.publish("cross/b-to-a", "from B", false).await;
    let m = on_a.wait_payload("cross/b-to-a", "from B", WAIT).await;
    assert!(m.is_some(), "B -> A lost; A's log:\n{}", cluster.log(0));
    assert!(!m.unwrap().retain);

    pub_a.publish("cross/a-to-b", "from A", false).await;
    let m = on_b.wait_payload("cross/a-to-b", "from A", WAIT).await;
    assert!(m.is_some(), "A -> B lost; B's log:\n{}", cluster.log(1));

    // Each message once on each node: a node does not deliver its own publish twice (once
    // locally, once back from Redis).
    for col in [&on_a, &on_b] {
        let got = col
            .wait_count(|m| m.topic.starts_with("cross/"), 2, WAIT)
            .await;
        assert_eq!(got.len(), 2, "{got:?}");
    }
    // A later message on the same topics arrives after them, and no third copy before it.
    pub_b.publish("cross/end", "end", false).await;
    on_a.wait_payload("cross/end", "end", WAIT).await.unwrap();
    assert_eq!(on_a.all().len(), 3, "{:?}", on_a.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_from_node_b_to_a() {
    let Some(cluster) = Cluster::try_start() else {
        return;
    };
    let on_a = Collector::start(cluster.port(0), "lat/#").await;
    let pub_b = Client::connect(cluster.port(1), &id("pub-b"), None).await;
    let mut took = Vec::new();
    for n in 0..20 {
        let payload = format!("{n}");
        let sent = Instant::now();
        pub_b.publish("lat/x", payload.clone(), false).await;
        let m = on_a
            .wait_payload("lat/x", &payload, WAIT)
            .await
            .unwrap_or_else(|| panic!("message {n} lost"));
        took.push(m.at - sent);
    }
    took.sort();
    eprintln!(
        "B -> A (publish to receipt, QoS 1, 20 messages): median {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    // Loopback and a local Redis: milliseconds. A second would mean something is wrong.
    assert!(took[took.len() / 2] < Duration::from_secs(1), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_shared_and_cleared_cluster_wide() {
    let Some(cluster) = Cluster::try_start() else {
        return;
    };
    let pub_b = Client::connect(cluster.port(1), &id("pub-b"), None).await;
    // The PUBACK comes after Aedes stored the retained message in Redis.
    pub_b.publish("ret/state", "online", true).await;

    let fresh_a = Collector::start(cluster.port(0), "ret/#").await;
    let m = fresh_a
        .wait_payload("ret/state", "online", WAIT)
        .await
        .unwrap_or_else(|| panic!("retained not replayed on A; A's log:\n{}", cluster.log(0)));
    assert!(m.retain, "a replayed message carries the retain flag");
    drop(fresh_a);

    // An empty retained payload clears it, for every node.
    pub_b.publish("ret/state", Bytes::new(), true).await;
    let fresh_a = Collector::start(cluster.port(0), "ret/#").await;
    // A live message published after the SUBACK: the replay of the retained store (one Redis
    // read issued with the SUBACK) comes before it, so once it is here, nothing retained is
    // on its way.
    pub_b.publish("ret/marker", "live", false).await;
    fresh_a
        .wait_payload("ret/marker", "live", WAIT)
        .await
        .unwrap();
    let replayed: Vec<_> = fresh_a.all().into_iter().filter(|m| m.retain).collect();
    assert!(replayed.is_empty(), "still retained: {replayed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabyte_payloads_cross_nodes_intact() {
    let Some(cluster) = Cluster::try_start() else {
        return;
    };
    let on_a = Collector::start(cluster.port(0), "big/#").await;
    let pub_b = Client::connect(cluster.port(1), &id("pub-b"), None).await;
    // 1 MiB (a large camera JPEG) and 3 MiB (above the 2 MiB the nodes are sized for).
    for (topic, len) in [("big/1mib", 1 << 20), ("big/3mib", 3 << 20)] {
        let payload = noise(len, len as u64);
        let sent = Instant::now();
        pub_b.publish(topic, payload.clone(), false).await;
        let m = on_a
            .wait_for(|m| m.topic == topic, WAIT)
            .await
            .unwrap_or_else(|| panic!("{topic} lost; A's log:\n{}", cluster.log(0)));
        eprintln!("{topic}: B -> A in {:?}", m.at - sent);
        assert_eq!(m.payload.len(), len, "{topic}: length");
        assert!(
            m.payload.as_ref() == payload.as_slice(),
            "{topic}: bytes differ"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_a_survives_b_crashing_and_publishes_the_will_of_bs_client() {
    let Some(mut cluster) = Cluster::try_start() else {
        return;
    };
    let on_a = Collector::start(cluster.port(0), "fail/#").await;
    let will = LastWill::new("fail/will", "camera gone", QoS::AtLeastOnce, false);
    let mut on_b = Client::connect(cluster.port(1), &id("with-will"), Some(will)).await;
    let pub_a = Client::connect(cluster.port(0), &id("pub-a"), None).await;

    let crashed = Instant::now();
    cluster.kill(1);
    on_b.wait_disconnected().await;
    assert!(!cluster.running(1));

    // A keeps serving its own clients.
    pub_a.publish("fail/a", "still here", false).await;
    on_a.wait_payload("fail/a", "still here", WAIT)
        .await
        .expect("A stopped serving");

    // A notices B's heartbeats stopped (3 × 500 ms) at its next will check (every 2 s) and
    // publishes the will B stored in Redis.
    let m = on_a
        .wait_payload("fail/will", "camera gone", WAIT)
        .await
        .unwrap_or_else(|| panic!("no will on A; A's log:\n{}", cluster.log(0)));
    let after = m.at - crashed;
    eprintln!("will of B's client published on A {after:?} after B crashed");

    // B comes back on its port and is part of the cluster again.
    let port_b = cluster.port(1);
    cluster.restart(1);
    assert_eq!(cluster.port(1), port_b);
    let pub_b = Client::connect(cluster.port(1), &id("pub-b"), None).await;
    pub_b.publish("fail/back", "B is back", false).await;
    on_a.wait_payload("fail/back", "B is back", WAIT)
        .await
        .expect("restarted B not in the cluster");
    // The will once: neither A again nor the restarted B published it a second time.
    let wills = on_a.on("fail/will");
    assert_eq!(wills.len(), 1, "{wills:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_stop_exits_zero_and_publishes_wills() {
    let Some(mut cluster) = Cluster::try_start() else {
        return;
    };
    let on_a = Collector::start(cluster.port(0), "stop/#").await;
    let will = LastWill::new("stop/will", "bye", QoS::AtLeastOnce, false);
    let mut on_b = Client::connect(cluster.port(1), &id("with-will"), Some(will)).await;

    let status = cluster.stop(1).expect("B was running");
    assert!(status.success(), "{status:?}; B's log:\n{}", cluster.log(1));
    on_b.wait_disconnected().await;
    on_a.wait_payload("stop/will", "bye", WAIT)
        .await
        .unwrap_or_else(|| panic!("no will; B's log:\n{}", cluster.log(1)));
    assert!(
        cluster.log(1).contains("SIGTERM: closing"),
        "{}",
        cluster.log(1)
    );
    // B deleted the will from Redis before it exited: A will not publish it a second time.
    assert_eq!(redis(cluster.redis_port(), "LLEN will"), ":0\r\n");

    // Started again, B serves on its port as part of the cluster.
    let old_id = cluster.node_id(1);
    cluster.restart(1);
    assert_ne!(
        cluster.node_id(1),
        old_id,
        "each start has a fresh broker id"
    );
    let pub_b = Client::connect(cluster.port(1), &id("pub-b"), None).await;
    pub_b.publish("stop/back", "B is back", false).await;
    on_a.wait_payload("stop/back", "B is back", WAIT)
        .await
        .expect("restarted B not in the cluster");
}

/// One inline Redis command on `127.0.0.1:<port>`, and the first line of the answer.
fn redis(port: u16, command: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(format!("{command}\r\n").as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n") {
        s.read_exact(&mut byte).expect("redis answers");
        answer.push(byte[0]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// MQTT 5 CONNECT (protocol level 5, empty properties) for client id `probe`.
const CONNECT_V5: &[u8] = &[
    0x10, 18, // CONNECT, remaining length
    0, 4, b'M', b'Q', b'T', b'T', 5,    // protocol name, level 5
    0x02, // clean start
    0, 60, // keep alive
    0,  // properties: none
    0, 5, b'p', b'r', b'o', b'b', b'e', // client id
];

#[test]
fn mqtt5_connect_is_refused_with_return_code_1() {
    let Some(cluster) = Cluster::try_start() else {
        return;
    };
    let mut s = TcpStream::connect(("127.0.0.1", cluster.port(0))).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(CONNECT_V5).unwrap();
    // Everything until the broker closes the connection.
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .expect("the node closes the connection after refusing");
    // An MQTT 3.1.1 CONNACK (no properties): session present 0, return code 1 "unacceptable
    // protocol version".
    assert_eq!(answer, [0x20, 2, 0, 1], "answer to an MQTT 5 CONNECT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_client_sees_a_protocol_refusal() {
    let Some(cluster) = Cluster::try_start() else {
        return;
    };
    let opts = rumqttc5::MqttOptions::new(id("v5"), ("127.0.0.1".to_owned(), cluster.port(0)));
    let (_client, mut el) = rumqttc5::AsyncClient::builder(opts).capacity(10).build();
    let first = tokio::time::timeout(WAIT, el.poll())
        .await
        .expect("an answer to the CONNECT");
    let err = first.expect_err("an MQTT 5 CONNECT must not be accepted");
    eprintln!("rumqttc v5 client: {err:?}");
    // rumqttc's v5 decoder waits for the CONNACK's properties, which a 3.1.1 CONNACK does not
    // have, and then sees the connection close: `ConnectionAborted`, one of the answers
    // camqtt's fallback to MQTT 3.1.1 takes for "this broker does not speak MQTT 5"
    // (src/sinks/mqtt/link.rs: a refusing CONNACK, one that does not parse, or a close).
    use rumqttc5::{ConnectReturnCode as Rc, ConnectionError as E, StateError as S};
    assert!(
        matches!(
            err,
            E::MqttState(S::ConnectionAborted)
                | E::ConnectionRefused(Rc::RefusedProtocolVersion | Rc::UnsupportedProtocolVersion)
                | E::MqttState(S::Deserialization(_))
                | E::NotConnAck(_)
        ),
        "{err:?}"
    );
}
