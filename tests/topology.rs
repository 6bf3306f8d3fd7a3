//! The topology's promises with real parts (a real Mosquitto, curl): a component that fails
//! at run time ends the bridge with an error naming it, and a bridge that cannot take its
//! spool directory's lock writes nothing into that directory (the lock holder's device
//! registry stays intact) and reports itself degraded.

mod common;

use std::time::Duration;

use camqtt::config::{self, Config};
use camqtt::sources::{Source, SourceContext, SourceHandle, Starting};
use common::Mosquitto;
use common::camera::curl_fixture;
use tokio_util::sync::CancellationToken;

/// A source that starts fine and panics 200 ms later.
struct Doomed;

impl Source for Doomed {
    fn name(&self) -> &'static str {
        "doomed"
    }

    fn start(self: Box<Self>, ctx: SourceContext) -> Starting {
        Box::pin(async move {
            let task = tokio::spawn(async move {
                let _keep = ctx;
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!("doomed source fails at run time");
            });
            Ok(SourceHandle {
                name: "doomed",
                addr: None,
                task,
            })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_panics_at_run_time_ends_the_bridge_with_an_error() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let toml = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"topology-doomed-{}\"\n[viewtron]\nlisten = \"127.0.0.1:0\"\n\
         [spool]\ndir = \"{}\"\n",
        broker.url(),
        broker.port,
        state.path().display()
    );
    let config = config::load_str(&toml).unwrap();
    let shutdown = CancellationToken::new();
    let running = camqtt::topology::start_with(config, vec![Box::new(Doomed)], shutdown.clone())
        .await
        .expect("starts");
    match tokio::time::timeout(Duration::from_secs(5), running.wait()).await {
        Ok(Err(e)) => assert!(e.to_string().contains("doomed"), "names the source: {e}"),
        Ok(Ok(())) => panic!("a panicked source ended the bridge with Ok"),
        Err(_) => {
            shutdown.cancel();
            panic!(
                "5 s after the source panicked the bridge is still running as if nothing happened"
            );
        }
    }
}

async fn start(
    broker: &Mosquitto,
    dir: &std::path::Path,
    name: &str,
) -> (camqtt::Running, CancellationToken) {
    let mut cfg: Config = config::load_str("[homeassistant]\nenabled = false\n").unwrap();
    cfg.apply(&config::Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        mqtt_url: Some(vec![broker.url()]),
        client_id: Some(format!("two-{name}-{}", broker.port)),
        ..Default::default()
    });
    cfg.spool.dir = dir.to_path_buf();
    let shutdown = CancellationToken::new();
    let running = camqtt::start(cfg, shutdown.clone()).await.expect("starts");
    (running, shutdown)
}

fn ids(dir: &std::path::Path) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("devices.json")).unwrap()).unwrap();
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_bridge_on_a_locked_spool_dir_writes_nothing_there_and_says_so() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, stop_a) = start(&broker, dir.path(), "a").await;
    // The second one cannot take the lock (waits 3 s, then runs from memory).
    let (b, stop_b) = start(&broker, dir.path(), "b").await;
    let (addr_a, addr_b) = (a.viewtron_addr.unwrap(), b.viewtron_addr.unwrap());
    // It says so: counted, and its health is degraded (still 200: a restart would not help).
    assert_eq!(a.telemetry.spool_unavailable.get(), 0);
    assert_eq!(b.telemetry.spool_unavailable.get(), 1);
    let (_, health) = camqtt::health::report(&b.telemetry, 1);
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["spool_unavailable"], true);

    tokio::task::block_in_place(|| curl_fixture(addr_a, "ipc-lpr-test123.xml"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        ids(dir.path()).contains(&"02_00_5e_10_30_01".to_owned()),
        "the lock holder saved its camera"
    );
    tokio::task::block_in_place(|| curl_fixture(addr_b, "nvr-counting-by-line.xml"));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    stop_b.cancel();
    b.wait().await.unwrap();
    stop_a.cancel();
    a.wait().await.unwrap();
    let saved = ids(dir.path());
    assert!(
        saved.contains(&"02_00_5e_10_30_01".to_owned()),
        "the lock holder's camera is gone from devices.json, overwritten by the bridge that \
         does not hold the spool lock: {saved:?}"
    );
}
