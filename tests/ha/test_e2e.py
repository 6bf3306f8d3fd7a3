"""camqtt against a real Home Assistant: camera posts in, HA devices and entities out.

Simulated senders:
* an IP camera (58:5b:69:aa:00:01) on one persistent connection: a licence-plate
  post (VEHICE) and then a perimeter-intrusion post (PEA);
* an NVR (58:5B:69:AA:00:02) on a non-persistent connection: a face post
  (videoFaceDetect) for its channel 3.

Entities are found through HA's entity registry by unique_id
(``camqtt_<hw_key>_<key>``), never by a guessed entity id.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from conftest import BASE_TOPIC, BRIDGE_CLIENT_ID, ENTITY_IDS, OFF_DELAY, Stack, observe
from harness import LOOPBACK, wait_until
from viewtron import (
    SUCCESS_REPLY,
    CameraLink,
    Device,
    Reply,
    intrusion_post,
    lpr_post,
    make_jpeg,
    nvr_face_post,
)

CAMERA = Device(mac="58:5b:69:aa:00:01", name="E2E Gate Camera", serial="E2ECAM0001")
NVR = Device(mac="58:5B:69:AA:00:02", name="E2E NVR")
NVR_CHANNEL = 3
CHANNEL = Device(mac=NVR.mac, name=NVR.name, channel=NVR_CHANNEL)

OVERVIEW_SIZE = (320, 180)
PLATE_SIZE = (128, 64)
FACE_SIZE = (96, 96)
PERSON_SIZE = (64, 128)

PLATE_1, PLATE_2 = "E2E123", "E2E456"
LPR_OVERVIEW_1 = make_jpeg(*OVERVIEW_SIZE, seed=1, label="lpr overview 1")
LPR_CROP_1 = make_jpeg(*PLATE_SIZE, seed=2, label=PLATE_1)
LPR_OVERVIEW_2 = make_jpeg(*OVERVIEW_SIZE, seed=3, label="lpr overview 2")
LPR_CROP_2 = make_jpeg(*PLATE_SIZE, seed=4, label=PLATE_2)
PEA_OVERVIEW = make_jpeg(*OVERVIEW_SIZE, seed=5, label="intrusion overview")
PEA_CROP = make_jpeg(*PERSON_SIZE, seed=6, label="person")
FACE_OVERVIEW = make_jpeg(*OVERVIEW_SIZE, seed=7, label="face overview")
FACE_CROP = make_jpeg(*FACE_SIZE, seed=8, label="face")

# Slack on top of off_delay for MQTT + HA latency and timer granularity.
OFF_SLACK = 2.5
ENTITY_TIMEOUT = 15.0


def uid(dev: Device, key: str) -> str:
    return f"camqtt_{dev.hw_key}_{key}"


def ident(dev: Device) -> str:
    return f"camqtt_{dev.hw_key}"


@dataclass
class FirstPosts:
    t0: float
    lpr: Reply
    kept_alive_after_lpr: bool
    intrusion: Reply
    face: Reply


@pytest.fixture(scope="module")
def posts(stack: Stack, bridge: Any) -> FirstPosts:
    t0 = time.monotonic()
    cam = CameraLink(LOOPBACK, bridge.port)
    try:
        lpr = cam.post(lpr_post(CAMERA, PLATE_1, LPR_OVERVIEW_1, LPR_CROP_1, "whiteList",
                                vehicle_id=17, size=OVERVIEW_SIZE, crop_size=PLATE_SIZE))
        kept = cam.still_open()
        intrusion = cam.post(intrusion_post(CAMERA, PEA_OVERVIEW, PEA_CROP, target_id=41,
                                            size=OVERVIEW_SIZE, crop_size=PERSON_SIZE))
    finally:
        cam.close()
    nvr = CameraLink(LOOPBACK, bridge.port, nvr=True)
    try:
        face = nvr.post(nvr_face_post(NVR, NVR_CHANNEL, FACE_OVERVIEW, FACE_CROP, target_id=5,
                                      size=OVERVIEW_SIZE, crop_size=FACE_SIZE))
    finally:
        nvr.close()
    return FirstPosts(t0, lpr, kept, intrusion, face)


def entity(stack: Stack, unique_id: str) -> dict[str, Any]:
    """Registry entry of an MQTT entity, waiting for it to be discovered."""
    return wait_until(
        f"entity with unique_id {unique_id}",
        lambda: stack.ha.entity_by_unique_id(unique_id),
        ENTITY_TIMEOUT,
        interval=0.1,
        on_timeout=lambda: describe_mqtt_entities(stack),
    )


def device(stack: Stack, identifier: str) -> dict[str, Any]:
    return wait_until(
        f"device with identifier {identifier}",
        lambda: stack.ha.device_by_identifier(identifier),
        ENTITY_TIMEOUT,
        interval=0.1,
        on_timeout=lambda: describe_mqtt_devices(stack),
    )


def describe_mqtt_entities(stack: Stack) -> str:
    rows = [f"  {e['entity_id']}  unique_id={e['unique_id']}"
            for e in stack.ha.entities() if e.get("platform") == "mqtt"]
    topics = stack.mqtt.topics("homeassistant/")
    return ("MQTT entities in HA:\n" + ("\n".join(rows) or "  (none)")
            + "\ndiscovery topics seen on the broker:\n  " + ("\n  ".join(topics) or "(none)"))


def describe_mqtt_devices(stack: Stack) -> str:
    rows = [f"  {d['name']!r} identifiers={d['identifiers']} via={d.get('via_device_id')}"
            for d in stack.ha.devices() if any(i[0] == "mqtt" for i in d.get("identifiers", []))]
    return "MQTT devices in HA:\n" + ("\n".join(rows) or "  (none)")


def state_of(stack: Stack, entity_id: str) -> dict[str, Any]:
    st = stack.ha.state(entity_id)
    assert st is not None, f"{entity_id} has no state"
    return st


def wait_state(stack: Stack, entity_id: str, expected: str, timeout: float = 10.0) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        nonlocal last
        last = stack.ha.state(entity_id) or {}
        return last if last.get("state") == expected else None

    return wait_until(f"{entity_id} == {expected!r}", probe, timeout, interval=0.1,
                      on_timeout=lambda: f"last state: {last}")


def served_image(stack: Stack, entity_id: str, expected: bytes, timeout: float = 10.0) -> bytes:
    """Bytes from /api/image_proxy once they equal ``expected`` (or the last ones seen)."""
    last = b""

    def probe() -> bool:
        nonlocal last
        status, ctype, body = stack.ha.image(entity_id)
        if status == 200:
            assert ctype.startswith("image/jpeg"), f"{entity_id}: content type {ctype}"
            last = body
        return last == expected

    try:
        wait_until(f"{entity_id} to serve the posted JPEG", probe, timeout, interval=0.1)
    except TimeoutError:
        pass
    return last


def on_off_durations(stack: Stack, entity_id: str, since: float) -> tuple[float, float]:
    """Wait for ``on`` and the following ``off``; return (post→on, on→off) seconds."""
    def find() -> tuple[float, float] | None:
        t_on = None
        for t, state in stack.ha.state_history(entity_id, since):
            if state == "on" and t_on is None:
                t_on = t
            elif state == "off" and t_on is not None:
                return (t_on - since, t - t_on)
        return None

    return wait_until(
        f"{entity_id} to go on and then off", find, OFF_DELAY + OFF_SLACK + 10, interval=0.1,
        on_timeout=lambda: f"history: {stack.ha.state_history(entity_id, since)}")


def note_entity_id(entry: dict[str, Any], dev: Device, key: str) -> None:
    """Remember which entity id HA chose compared with the bridge's default_entity_id."""
    domain = entry["entity_id"].split(".", 1)[0]
    ENTITY_IDS[f"{domain}.{dev.device_id}_{key}"] = entry["entity_id"]


# --------------------------------------------------------------------------- tests


def test_every_post_gets_the_fixed_reply(posts: FirstPosts) -> None:
    for name, reply in (("lpr", posts.lpr), ("intrusion", posts.intrusion), ("face", posts.face)):
        assert reply.status == 200, f"{name}: HTTP {reply.status}"
        assert reply.body == SUCCESS_REPLY, f"{name}: body {reply.body!r}"
        assert reply.headers.get("content-length") == "126", f"{name}: headers {reply.headers}"
    assert posts.kept_alive_after_lpr, "bridge closed the camera's keep-alive connection"
    assert posts.intrusion.socket_id == posts.lpr.socket_id, "second post needed a new connection"


def test_devices_in_registry(stack: Stack, posts: FirstPosts) -> None:
    cam = device(stack, ident(CAMERA))
    nvr = device(stack, ident(NVR))
    chan = device(stack, ident(CHANNEL))
    bridge_dev = device(stack, "camqtt_bridge_" + BRIDGE_CLIENT_ID.replace("-", "_"))

    assert cam["manufacturer"] == "Viewtron"
    assert cam["name"] == CAMERA.name
    assert cam["serial_number"] == CAMERA.serial
    assert ["mac", CAMERA.mac] in cam["connections"]
    assert cam["via_device_id"] == bridge_dev["id"]

    assert nvr["manufacturer"] == "Viewtron"
    assert ["mac", NVR.mac.lower()] in nvr["connections"]
    assert nvr["via_device_id"] == bridge_dev["id"]

    assert chan["manufacturer"] == "Viewtron"
    assert chan["via_device_id"] == nvr["id"], describe_mqtt_devices(stack)
    assert not chan["connections"], "only the physical box should carry the MAC connection"
    observe(f"device names: camera {cam['name']!r}, NVR {nvr['name']!r}, channel {chan['name']!r}, "
            f"bridge {bridge_dev['name']!r}")


def test_plate_sensors(stack: Stack, posts: FirstPosts) -> None:
    plate = entity(stack, uid(CAMERA, "plate"))
    note_entity_id(plate, CAMERA, "plate")
    wait_state(stack, plate["entity_id"], PLATE_1)
    listed = entity(stack, uid(CAMERA, "plate_list"))
    wait_state(stack, listed["entity_id"], "whiteList")
    cam = device(stack, ident(CAMERA))
    assert plate["device_id"] == listed["device_id"] == cam["id"]


@pytest.mark.parametrize(
    ("dev", "key", "jpeg"),
    [
        (CAMERA, "lpr_image", LPR_OVERVIEW_1),
        (CAMERA, "lpr_target", LPR_CROP_1),
        (CAMERA, "intrusion_image", PEA_OVERVIEW),
        (CAMERA, "intrusion_target", PEA_CROP),
        (CHANNEL, "face_image", FACE_OVERVIEW),
        (CHANNEL, "face_target", FACE_CROP),
    ],
    ids=["lpr-overview", "lpr-plate", "intrusion-overview", "intrusion-target",
         "face-overview", "face-crop"],
)
def test_image_entity_serves_posted_jpeg(stack: Stack, posts: FirstPosts, dev: Device, key: str,
                                          jpeg: bytes) -> None:
    img = entity(stack, uid(dev, key))
    note_entity_id(img, dev, key)
    got = served_image(stack, img["entity_id"], jpeg)
    assert got == jpeg, (f"{img['entity_id']}: served {len(got)} bytes, posted {len(jpeg)} "
                         f"(state {stack.ha.state(img['entity_id'])})")


@pytest.mark.parametrize(("dev", "key"), [(CAMERA, "intrusion"), (CHANNEL, "face")],
                         ids=["intrusion", "face"])
def test_binary_sensor_on_then_off_after_off_delay(stack: Stack, posts: FirstPosts, dev: Device,
                                                   key: str) -> None:
    sensor = entity(stack, uid(dev, key))
    note_entity_id(sensor, dev, key)
    to_on, on_for = on_off_durations(stack, sensor["entity_id"], posts.t0)
    topic = f"{BASE_TOPIC}/{dev.device_id}/{key}/state"
    timeline = ", ".join(f"{m.text()} at +{m.t - posts.t0:.2f}s"
                         for m in stack.mqtt.find(topic, posts.t0))
    observe(f"{sensor['entity_id']}: on {to_on:.2f}s after the first post, off after "
            f"{on_for:.2f}s; {topic}: {timeline}")
    assert to_on < 5, f"{sensor['entity_id']} took {to_on:.2f}s to turn on"
    assert OFF_DELAY - 0.5 <= on_for <= OFF_DELAY + OFF_SLACK, (
        f"{sensor['entity_id']} stayed on {on_for:.2f}s, off_delay is {OFF_DELAY}s; "
        f"bridge published on {topic}: {timeline} (times from the first post)")


def test_lpr_event_entity(stack: Stack, posts: FirstPosts) -> None:
    ev = entity(stack, uid(CAMERA, "lpr_event"))
    note_entity_id(ev, CAMERA, "lpr_event")

    def fired() -> dict[str, Any] | None:
        st = stack.ha.state(ev["entity_id"]) or {}
        return st if st.get("attributes", {}).get("event_type") == "plate_read" else None

    st = wait_until(f"{ev['entity_id']} to record a plate_read", fired, 10, interval=0.1,
                    on_timeout=lambda: f"state: {stack.ha.state(ev['entity_id'])}")
    datetime.fromisoformat(st["state"])  # the state of an event entity is the time it fired
    attrs = st["attributes"]
    assert attrs["plate"] == PLATE_1
    assert attrs["category"] == "lpr"
    assert attrs["device"]["mac"] == CAMERA.mac


def test_face_event_entity(stack: Stack, posts: FirstPosts) -> None:
    ev = entity(stack, uid(CHANNEL, "face_event"))

    def fired() -> dict[str, Any] | None:
        st = stack.ha.state(ev["entity_id"]) or {}
        return st if st.get("attributes", {}).get("event_type") == "face_detected" else None

    st = wait_until(f"{ev['entity_id']} to record a face_detected", fired, 10, interval=0.1,
                    on_timeout=lambda: f"state: {stack.ha.state(ev['entity_id'])}")
    datetime.fromisoformat(st["state"])
    assert st["attributes"]["device"]["channel"] == NVR_CHANNEL


def test_connectivity(stack: Stack, posts: FirstPosts) -> None:
    for dev in (CAMERA, CHANNEL):
        conn = entity(stack, uid(dev, "connectivity"))
        wait_state(stack, conn["entity_id"], "on")


def _triggers(stack: Stack, dev: Device) -> list[dict[str, Any]]:
    dev_id = device(stack, ident(dev))["id"]
    return stack.ha.ws("device_automation/trigger/list", device_id=dev_id)


def _mqtt_trigger(stack: Stack, dev: Device, typ: str, subtype: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for trig in _triggers(stack, dev):
            if (trig.get("domain"), trig.get("type"), trig.get("subtype")) == ("mqtt", typ, subtype):
                return trig
        return None

    return wait_until(f"device trigger {typ}/{subtype} on {ident(dev)}", find, ENTITY_TIMEOUT,
                      interval=0.2, on_timeout=lambda: f"triggers: {_triggers(stack, dev)}")


@pytest.mark.parametrize(("dev", "typ", "subtype"),
                         [(CAMERA, "plate_read", "lpr"), (CAMERA, "intrusion", "intrusion"),
                          (CHANNEL, "face_detected", "face")],
                         ids=["lpr", "intrusion", "face"])
def test_device_trigger_listed(stack: Stack, posts: FirstPosts, dev: Device, typ: str,
                               subtype: str) -> None:
    trig = _mqtt_trigger(stack, dev, typ, subtype)
    assert trig["platform"] == "device"
    assert trig["device_id"] == device(stack, ident(dev))["id"]
    if subtype == "lpr":
        shape = {k: ("<device id>" if k == "device_id" else v) for k, v in trig.items()}
        observe(f"device trigger as listed by HA: {shape}")


def test_automation_with_device_trigger_fires(stack: Stack, posts: FirstPosts, bridge: Any) -> None:
    ha = stack.ha
    trig = _mqtt_trigger(stack, CAMERA, "plate_read", "lpr")
    flag = "input_boolean.camqtt_e2e_fired"
    wait_state(stack, flag, "off")
    ha.subscribe("camqtt_e2e_fired")
    automation_id = "camqtt_e2e_plate"
    ha.rest("POST", f"/api/config/automation/config/{automation_id}", {
        "alias": "camqtt e2e plate",
        "description": "written by tests/ha/test_e2e.py",
        "mode": "queued",
        "triggers": [trig],
        "conditions": [],
        "actions": [
            {"action": "input_boolean.turn_on", "target": {"entity_id": flag}},
            {"event": "camqtt_e2e_fired", "event_data": {"plate": "{{ trigger.payload_json.plate }}"}},
        ],
    })
    # The config API reloads automations by itself after the write.
    auto = wait_until("the automation entity",
                      lambda: ha.entity_by_unique_id(automation_id, platform="automation"), 15,
                      interval=0.1)
    wait_state(stack, auto["entity_id"], "on")
    assert ha.state(flag)["state"] == "off", "automation fired before the second plate was posted"

    t_post = time.monotonic()
    cam = CameraLink(LOOPBACK, bridge.port)
    try:
        reply = cam.post(lpr_post(CAMERA, PLATE_2, LPR_OVERVIEW_2, LPR_CROP_2, None,
                                  vehicle_id=18, size=OVERVIEW_SIZE, crop_size=PLATE_SIZE))
    finally:
        cam.close()
    assert reply.body == SUCCESS_REPLY
    wait_state(stack, flag, "on")
    fired = wait_until("the automation's camqtt_e2e_fired event",
                       lambda: ha.events_of("camqtt_e2e_fired", t_post), 10, interval=0.05)
    assert [e["data"]["plate"] for _t, e in fired] == [PLATE_2]
    observe(f"automation fired {fired[0][0] - t_post:.2f}s after the second LPR post")

    # The second post also replaces the plate and both pictures.
    wait_state(stack, entity(stack, uid(CAMERA, "plate"))["entity_id"], PLATE_2)
    wait_state(stack, entity(stack, uid(CAMERA, "plate_list"))["entity_id"], "none")
    for key, jpeg in (("lpr_image", LPR_OVERVIEW_2), ("lpr_target", LPR_CROP_2)):
        img = entity(stack, uid(CAMERA, key))
        assert served_image(stack, img["entity_id"], jpeg) == jpeg, f"{key} not replaced"


def test_ha_log_has_no_mqtt_complaints(stack: Stack, posts: FirstPosts) -> None:
    """HA logs discovery payloads it rejects or templates that fail; there must be none."""
    watched = ("mqtt", "automation", "device_automation", "binary_sensor", "sensor", "image",
               "event")
    pattern = re.compile(r" (WARNING|ERROR|CRITICAL) \([^)]*\) \[homeassistant\.components\.("
                         + "|".join(watched) + r")\b")
    log = stack.run_dir / "ha.log"
    complaints = [line for line in log.read_text(errors="replace").splitlines()
                  if pattern.search(line)]
    assert not complaints, "HA complained:\n" + "\n".join(c[:400] for c in complaints)
