//! `GET /healthz`: is the bridge doing its job? Used by the add-on's Docker `HEALTHCHECK`
//! (`camqtt healthcheck`) and by anyone monitoring the bridge.

use serde_json::json;

use crate::telemetry::Telemetry;

/// Status code and JSON body of the health check: 200 when the receiver answers (it does, or
/// this would not run) and the broker is connected, 503 otherwise. `status` is `degraded`
/// also while the configured spool could not be opened (events are then kept in memory only;
/// `spool_unavailable`), without turning the code into 503: a restart would not fix it.
pub fn report(stats: &Telemetry, uptime_s: u64) -> (u16, serde_json::Value) {
    let connected = stats.mqtt_connected.get() == 1;
    let spool_ok = stats.spool_unavailable.get() == 0;
    let body = json!({
        "status": if connected && spool_ok { "ok" } else { "degraded" },
        "spool_unavailable": !spool_ok,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": uptime_s,
        "receiver": "up",
        "mqtt_connected": connected,
        "spool_depth": stats.spool_depth.get(),
        "spool_bytes": stats.spool_bytes.get(),
        "events": stats.events.get(),
        "unparsed": stats.unparsed.get(),
    });
    (if connected { 200 } else { 503 }, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degraded_without_broker_ok_with_it() {
        let s = Telemetry::new();
        s.spool_depth.set(7);
        let (code, body) = report(&s, 3);
        assert_eq!(
            (code, body["status"].as_str(), body["spool_depth"].as_u64()),
            (503, Some("degraded"), Some(7))
        );
        s.mqtt_connected.set(1);
        let (code, body) = report(&s, 3);
        assert_eq!((code, body["mqtt_connected"].as_bool()), (200, Some(true)));
        assert_eq!(body["status"], "ok");
        s.spool_unavailable.set(1);
        let (code, body) = report(&s, 3);
        assert_eq!((code, body["status"].as_str()), (200, Some("degraded")));
        assert_eq!(body["spool_unavailable"], true);
    }
}
