#!/usr/bin/env python3
"""How long after a discovery message does Home Assistant receive a new entity's topic?

A non-retained message published to a new entity's state topic before Home Assistant has
subscribed to it is lost (HA creates the entity, then batches its MQTT subscriptions). camqtt
holds the first messages of a new entity for ``homeassistant.discovery_settle``; this script
measures what that hold must cover, on this machine, with HA freshly started and the CPU
optionally loaded (``--load N`` busy processes, started before HA).

For each probe: publish a device-based discovery config with one event entity (retained),
then publish the event (non-retained) every 50 ms until HA fires it; the delay is the time from
the discovery publish to the first publish HA received.

    tests/ha/venv/bin/python tests/ha/measure_settle.py --probes 20 --load 3

Needs tests/ha/setup.sh. Prints one line per probe and a summary.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import statistics
import time
import uuid

import paho.mqtt.client as paho

from harness import (
    LOOPBACK,
    RUN_DIR,
    HomeAssistant,
    MqttRecorder,
    free_port,
    start_home_assistant,
    start_mosquitto,
    wait_until,
)


def burn() -> None:
    while True:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--probes", type=int, default=10)
    ap.add_argument("--load", type=int, default=0, help="busy processes started before HA")
    ap.add_argument("--gap", type=float, default=1.0, help="seconds between probes")
    args = ap.parse_args()

    run = RUN_DIR.parent / "run-measure"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(args.load)]
    for b in burners:
        b.start()
    mqtt_port, ha_port = free_port(), free_port()
    mosquitto = start_mosquitto(run, mqtt_port)
    recorder = MqttRecorder(mqtt_port)
    t_launch = time.monotonic()
    hass = start_home_assistant(run, ha_port)
    ha = HomeAssistant(ha_port)
    try:
        wait_until("HA HTTP", lambda: hass.check_alive() or ha.http_up(), 300, interval=0.2)
        ha.onboard()
        wait_until("HA RUNNING", lambda: ha.core_state() == "RUNNING", 300, interval=0.2)
        ha.ws_connect()
        ha.subscribe("state_changed")
        ha.add_mqtt_entry(mqtt_port)
        wait_until("MQTT entry", ha.mqtt_entry_loaded, 120, interval=0.1)
        wait_until("HA birth", lambda: any(m.payload == b"online"
                                           for m in recorder.find("homeassistant/status")),
                   120, interval=0.05)
        print(f"HA settled {time.monotonic() - t_launch:.1f} s after launch (load {args.load})")

        pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="settle-probe")
        pub.connect(LOOPBACK, mqtt_port)
        pub.loop_start()
        delays = []
        for i in range(args.probes):
            uid = "settle" + uuid.uuid4().hex[:8]
            state = f"probe/{uid}/event"
            cfg = {
                "dev": {"ids": [uid], "name": f"Probe {i}"},
                "o": {"name": "measure_settle"},
                "cmps": {"ev": {"p": "event", "unique_id": f"{uid}_ev", "name": "Ev",
                                "state_topic": state, "event_types": ["probe"]}},
            }
            since = time.monotonic()
            pub.publish(f"homeassistant/device/{uid}/config", json.dumps(cfg), qos=1,
                        retain=True).wait_for_publish()
            sent: list[float] = []
            got = None
            deadline = since + 60
            while got is None and time.monotonic() < deadline:
                sent.append(time.monotonic())
                pub.publish(state, json.dumps({"event_type": "probe", "n": len(sent) - 1}),
                            qos=1).wait_for_publish()
                t_wait = time.monotonic() + 0.05
                while time.monotonic() < t_wait and got is None:
                    for _t, ev in ha.events_of("state_changed", since):
                        data = ev.get("data", {})
                        new = data.get("new_state") or {}
                        if (data.get("entity_id") == f"event.probe_{i}_ev"
                                and new.get("attributes", {}).get("event_type") == "probe"):
                            got = new["attributes"].get("n")
                    time.sleep(0.005)
            if got is None:
                print(f"probe {i}: no event within 60 s")
                continue
            delay = sent[int(got)] - since
            delays.append(delay)
            print(f"probe {i}: first received publish {delay:.3f} s after discovery "
                  f"({int(got)} lost)")
            pub.publish(f"homeassistant/device/{uid}/config", "", qos=1, retain=True)
            time.sleep(args.gap)
        if delays:
            print(f"n={len(delays)} min={min(delays):.3f} median={statistics.median(delays):.3f} "
                  f"max={max(delays):.3f} s (load {args.load})")
    finally:
        ha.close()
        hass.stop()
        recorder.close()
        mosquitto.stop()
        for b in burners:
            b.terminate()


if __name__ == "__main__":
    main()
