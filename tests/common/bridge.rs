//! The bridge in-process: `camqtt::start` with a configuration from TOML, listening on a free
//! loopback port, with its own temporary spool directory.
//!
//! Usage:
//! ```ignore
//! let bridge = common::bridge::Bridge::start(&broker, "", "camqtt-test").await;
//! // ... post to bridge.addr ...
//! bridge.stop().await;
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use camqtt::config::{self, Config};

use super::Mosquitto;

/// A running bridge; its spool directory lives as long as it does.
pub struct Bridge {
    /// The Viewtron receiver's address.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    running: Option<camqtt::Running>,
    _spool: tempfile::TempDir,
}

impl Bridge {
    /// Start from `toml` against `broker`, as MQTT client `<client_id>-<broker port>`.
    pub async fn start(broker: &Mosquitto, toml: &str, client_id: &str) -> Bridge {
        Self::start_with(
            toml,
            Some(broker.url()),
            format!("{client_id}-{}", broker.port),
        )
        .await
    }

    /// Start from `toml`, with the broker URL `mqtt_url` (`None`: the one in `toml`) and the
    /// MQTT client id `client_id`. Panics when the bridge does not start.
    pub async fn start_with(toml: &str, mqtt_url: Option<String>, client_id: String) -> Bridge {
        let mut cfg: Config = config::load_str(toml).expect("test config");
        cfg.apply(&config::Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            mqtt_url: mqtt_url.map(|u| vec![u]),
            client_id: Some(client_id),
            ..Default::default()
        });
        let spool = tempfile::tempdir().expect("spool dir");
        cfg.spool.dir = spool.path().to_path_buf();
        let shutdown = CancellationToken::new();
        let running = camqtt::start(cfg, shutdown.clone())
            .await
            .expect("bridge starts");
        Bridge {
            addr: running.viewtron_addr.expect("viewtron on"),
            shutdown,
            running: Some(running),
            _spool: spool,
        }
    }

    /// The address component `name` listens on (`web`, `ftp`, `smtp`), if it runs.
    pub fn addr_of(&self, name: &str) -> Option<SocketAddr> {
        self.running.as_ref().and_then(|r| r.addr(name))
    }

    /// The bridge's metrics.
    pub fn telemetry(&self) -> &camqtt::telemetry::Telemetry {
        &self.running.as_ref().expect("running").telemetry
    }

    /// The bridge's spool and state directory (registry file, dead letters).
    pub fn state_dir(&self) -> &std::path::Path {
        self._spool.path()
    }

    /// Shut down and wait (20 s at most) for a clean stop.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(r) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(20), r.wait())
                .await
                .expect("stops in time")
                .expect("clean stop");
        }
    }
}
