"""New cameras' first detections reach a freshly started Home Assistant on a loaded machine.

Home Assistant is restarted (same configuration and registries, like a reboot or an update)
while the CPU is saturated by busy processes. Two cameras the bridge has never seen post their
first plate read and their first intrusion: one while Home Assistant is still starting (it has
said `offline` and is not back), one the moment its MQTT birth message arrives. The new devices'
event entities must fire for both posts and the intrusion binary sensors must turn on: the
bridge holds a new entity's first messages until Home Assistant has subscribed to it (its birth
plus `discovery_settle`), and loses none.

Runs last in the session (it restarts the shared Home Assistant).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

from conftest import DISCOVERY_PREFIX, TIMINGS, Stack, observe
from harness import LOOPBACK, HomeAssistant, start_home_assistant, wait_until
from viewtron import CameraLink, Device, intrusion_post, lpr_post, make_jpeg

DURING_START = Device(mac="58:5b:69:aa:00:76", name="Starting Camera", serial="E2ECAM0076")
AT_BIRTH = Device(mac="58:5b:69:aa:00:77", name="Birth Camera", serial="E2ECAM0077")
OVERVIEW = make_jpeg(320, 180, seed=77, label="fresh overview")
PERSON = make_jpeg(64, 128, seed=79, label="fresh person")


def _burn() -> None:
    while True:
        pass


def _uid(dev: Device, key: str) -> str:
    return f"camqtt_{dev.hw_key}_{key}"


def _first_posts(port: int, dev: Device, plate: str) -> None:
    crop = make_jpeg(128, 64, seed=len(plate), label=plate)
    cam = CameraLink(LOOPBACK, port)
    try:
        lpr = cam.post(lpr_post(dev, plate, OVERVIEW, crop, "whiteList", vehicle_id=3,
                                size=(320, 180), crop_size=(128, 64)))
        intrusion = cam.post(intrusion_post(dev, OVERVIEW, PERSON, target_id=4,
                                            size=(320, 180), crop_size=(64, 128)))
    finally:
        cam.close()
    assert lpr.status == 200 and intrusion.status == 200


def _check_fired(stack: Stack, dev: Device, plate: str, since: float) -> float:
    """The device's lpr and intrusion event entities fired, its binary sensor turned on;
    returns when the plate read fired."""
    def entity(key: str) -> str:
        return wait_until(f"entity {_uid(dev, key)}",
                          lambda: stack.ha.entity_by_unique_id(_uid(dev, key)), 90,
                          interval=0.1)["entity_id"]

    def fired(entity_id: str, event_type: str) -> dict[str, Any] | None:
        st = stack.ha.state(entity_id) or {}
        return st if st.get("attributes", {}).get("event_type") == event_type else None

    lpr_event = entity("lpr_event")
    st = wait_until(f"{lpr_event} to fire for {dev.name}'s first plate read",
                    lambda: fired(lpr_event, "plate_read"), 90, interval=0.1,
                    on_timeout=lambda: f"state: {stack.ha.state(lpr_event)}")
    assert st["attributes"]["plate"] == plate
    intrusion_event = entity("intrusion_event")
    wait_until(f"{intrusion_event} to fire for {dev.name}'s first intrusion",
               lambda: fired(intrusion_event, "intrusion"), 90, interval=0.1,
               on_timeout=lambda: f"state: {stack.ha.state(intrusion_event)}")
    sensor = entity("intrusion")
    wait_until(f"{sensor} to turn on",
               lambda: any(s == "on" for _t, s in stack.ha.state_history(sensor, since)), 90,
               interval=0.1,
               on_timeout=lambda: f"history: {stack.ha.state_history(sensor, since)}")
    return min(t for t, ev in stack.ha.events_of("state_changed", since)
               if ev["data"].get("entity_id") == lpr_event
               and (ev["data"].get("new_state") or {}).get("attributes", {})
               .get("event_type") == "plate_read")


def test_first_detections_of_new_cameras_while_ha_starts_under_load(stack: Stack,
                                                                   bridge: Any) -> None:
    burners = [multiprocessing.Process(target=_burn, daemon=True)
               for _ in range(2 * (os.cpu_count() or 2))]
    for b in burners:
        b.start()
    try:
        token = stack.ha.token  # signed by HA's stored key: still valid after the restart
        stack.ha.close()
        stack.hass.stop()
        t_launch = time.monotonic()
        stack.hass = start_home_assistant(stack.run_dir, stack.ha_port)
        # Home Assistant is starting (not connected to the broker yet): first camera.
        _first_posts(bridge.port, DURING_START, "START76")
        stack.ha = HomeAssistant(stack.ha_port)
        stack.ha.token = token
        wait_until("HA to answer HTTP again",
                   lambda: stack.hass.check_alive() or stack.ha.http_up(), 300, interval=0.2,
                   on_timeout=stack.hass.tail)
        wait_until("HA core state RUNNING", lambda: stack.ha.core_state() == "RUNNING", 300,
                   interval=0.2, on_timeout=stack.hass.tail)
        stack.ha.ws_connect()
        stack.ha.subscribe("state_changed")
        wait_until("HA's MQTT birth message after the restart",
                   lambda: any(m.payload == b"online" for m in
                               stack.mqtt.find(f"{DISCOVERY_PREFIX}/status", t_launch)),
                   300, interval=0.02, on_timeout=stack.hass.tail)
        t_birth = time.monotonic()
        TIMINGS["fresh_start_birth_s"] = t_birth - t_launch
        # The moment HA is back: second camera.
        _first_posts(bridge.port, AT_BIRTH, "BIRTH77")
        fired_start = _check_fired(stack, DURING_START, "START76", t_launch)
        fired_birth = _check_fired(stack, AT_BIRTH, "BIRTH77", t_birth)
        observe(f"fresh HA under load: birth {t_birth - t_launch:.1f}s after launch; a new "
                f"camera's first plate read posted during the start fired "
                f"{fired_start - t_birth:.2f}s after the birth, one posted at the birth "
                f"{fired_birth - t_birth:.2f}s after it")
    finally:
        for b in burners:
            b.terminate()
