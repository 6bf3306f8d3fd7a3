"""Object detection on camera pictures, seen from a real Home Assistant (issue 12).

A bridge of its own (base topic ``camdetect``, client id ``camqtt-detect``) runs with a
``[detector]`` that points at a DeepStack stand-in (``deepstack_detector.py``: the real
``POST /v1/vision/detection`` API, multipart ``image`` field, ``predictions`` answer). A
simulated Viewtron camera posts a perimeter intrusion with a real JPEG overview; the bridge
hands the overview to the detector, draws the boxes on a copy and publishes both. Home
Assistant must then show, on the camera's device:

* "Person detected" (``binary_sensor.…_person_detected``, occupancy) turning on, and off
  again after ``[detector] off_delay``;
* "Person count" (``sensor.…_person_count``) at the number of people in the picture, back
  to 0 when the sensor turns off;
* "Intrusion annotated" (``image.…_intrusion_annotated``) serving a JPEG of the overview's
  size with the box drawn on it;

and the blueprint ``person_at_night.yaml`` must run its actions for a person while the sun
is below the horizon and not while it is up (the sun is moved with
``homeassistant.set_location``: a longitude where it is solar midnight, then one where it is
solar noon, at the equator).

Entities are found by unique_id (``camqtt_<hw_key>_<key>``).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest
from deepstack_detector import DeepStackDetector, Prediction
from PIL import Image

from conftest import ENTITY_IDS, REPO, Stack, extra_bridge, observe
from harness import LOOPBACK, Process, wait_until
from test_blueprints import (
    assert_acted,
    assert_rejected,
    create_automation,
    delete_automation,
    run_for_next_post,
)
from viewtron import SUCCESS_REPLY, CameraLink, Device, intrusion_post, make_jpeg

BASE = "camdetect"
CLIENT_ID = "camqtt-detect"
OBJECT_OFF_DELAY = 3  # seconds: [detector] off_delay of this bridge
GATE = Device(mac="58:5b:69:dd:00:01", name="Det Gate", serial="DETGATE01")
NIGHT = Device(mac="58:5b:69:dd:00:02", name="Det Night", serial="DETNIGHT02")
SIZE, PERSON_SIZE = (320, 180), (64, 128)
OVERVIEW = make_jpeg(*SIZE, seed=61, label="detection overview")
PERSON_BOX = (120, 30, 180, 170)
CAR_BOX = (200, 90, 300, 160)
ENTITY_TIMEOUT = 20.0
BLUEPRINT = "person_at_night.yaml"
EVENT = "camqtt_bp_person_night"


@dataclass
class DetectBridge:
    port: int
    proc: Process
    detector: DeepStackDetector


@pytest.fixture(scope="module")
def detect_bridge(stack: Stack) -> Iterator[DetectBridge]:
    detector = DeepStackDetector()
    config = (
        "# written by tests/ha/test_detection.py\n"
        "[detector]\n"
        f'url = "{detector.url}"\n'
        'labels = ["person", "car"]\n'
        "min_confidence = 0.5\n"
        f"off_delay = {OBJECT_OFF_DELAY}\n"
    )
    try:
        with extra_bridge(stack, "camqtt-detect", BASE, CLIENT_ID, config) as (port, proc):
            yield DetectBridge(port, proc, detector)
    finally:
        detector.close()


def uid(dev: Device, key: str) -> str:
    return f"camqtt_{dev.hw_key}_{key}"


def entity(stack: Stack, dev: Device, key: str) -> str:
    """The entity id of ``dev``'s entity ``key``, once HA has it (noted for the report)."""
    unique_id = uid(dev, key)
    entry = wait_until(f"entity with unique_id {unique_id}",
                       lambda: stack.ha.entity_by_unique_id(unique_id), ENTITY_TIMEOUT,
                       interval=0.1,
                       on_timeout=lambda: "\n".join(
                           f"  {e['entity_id']} {e['unique_id']}" for e in stack.ha.entities()
                           if e.get("platform") == "mqtt" and dev.hw_key in e["unique_id"]))
    domain = entry["entity_id"].split(".", 1)[0]
    ENTITY_IDS[f"{domain}.{dev.device_id}_{key}"] = entry["entity_id"]
    return entry["entity_id"]


def state(stack: Stack, entity_id: str, predicate: Any, what: str,
          timeout: float = 15.0) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        nonlocal last
        last = stack.ha.state(entity_id) or {}
        return last if last and predicate(last) else None

    return wait_until(f"{entity_id}: {what}", probe, timeout, interval=0.05,
                      on_timeout=lambda: f"last state: {last}")


def person_post(dev: Device) -> bytes:
    crop = make_jpeg(*PERSON_SIZE, seed=62, label="p")
    return intrusion_post(dev, OVERVIEW, crop, target_id=int(time.time() * 1000) % 100_000,
                          size=SIZE, crop_size=PERSON_SIZE, target_type=1)


def post(bridge: DetectBridge, body: bytes) -> None:
    cam = CameraLink(LOOPBACK, bridge.port)
    try:
        reply = cam.post(body)
    finally:
        cam.close()
    assert reply.status == 200 and reply.body == SUCCESS_REPLY, reply


def person(box: tuple[int, int, int, int] = PERSON_BOX, confidence: float = 0.92) -> Prediction:
    return Prediction("person", confidence, *box)


def last_mqtt(stack: Stack, topic: str) -> bytes:
    found = wait_until(f"a message on {topic}", lambda: stack.mqtt.find(topic), 15, interval=0.1)
    return found[-1].payload


def box_outline_difference(annotated: bytes, overview: bytes,
                           box: tuple[int, int, int, int]) -> tuple[float, float]:
    """Mean absolute RGB difference between the two pictures on the box's outline and on
    pixels far from it (JPEG noise)."""
    a = Image.open(io.BytesIO(annotated)).convert("RGB")
    o = Image.open(io.BytesIO(overview)).convert("RGB")
    assert a.size == o.size, f"annotated {a.size} vs overview {o.size}"
    x0, y0, x1, y1 = box

    def diff(points: list[tuple[int, int]]) -> float:
        total = 0
        for p in points:
            pa, po = a.getpixel(p), o.getpixel(p)
            total += sum(abs(int(u) - int(v)) for u, v in zip(pa, po))
        return total / (3 * len(points))

    outline = ([(x, y) for x in range(x0 + 2, x1 - 2) for y in (y0, y1 - 1)]
               + [(x, y) for y in range(y0 + 2, y1 - 2) for x in (x0, x1 - 1)])
    far = [(x, y) for x in range(4, 60, 3) for y in range(100, 170, 3)]
    return diff(outline), diff(far)


def test_person_detected_count_and_annotated_picture(stack: Stack,
                                                     detect_bridge: DetectBridge) -> None:
    ha = stack.ha
    detector = detect_bridge.detector
    detector.answer([person()])
    t0 = time.monotonic()
    post(detect_bridge, person_post(GATE))

    wait_until("the bridge to ask the detector", lambda: detector.images, 15, interval=0.05)
    assert detector.images[0] == OVERVIEW, "the detector did not get the overview as posted"
    event = json.loads(last_mqtt(stack, f"{BASE}/{GATE.device_id}/intrusion/event"))
    assert event["detection"] == "ok", event
    assert [o["label"] for o in event["objects"]] == ["person"], event["objects"]
    assert event["objects"][0]["box"] == dict(zip(("x_min", "y_min", "x_max", "y_max"),
                                                  PERSON_BOX)), event["objects"]

    detected = entity(stack, GATE, "person_detected")
    count = entity(stack, GATE, "person_count")
    annotated = entity(stack, GATE, "intrusion_annotated")
    assert detected.startswith("binary_sensor.") and detected.endswith("_person_detected")
    assert count.startswith("sensor.") and count.endswith("_person_count")
    dev = ha.device_by_identifier(f"camqtt_{GATE.hw_key}")
    assert dev is not None and dev["name"] == GATE.name
    for eid in (detected, count, annotated):
        entry = next(e for e in ha.entities() if e["entity_id"] == eid)
        assert entry["device_id"] == dev["id"], f"{eid} is not on the camera's device"

    # The binary sensor turns on with the count at 1, then off (count 0) after the delay.
    st = state(stack, detected, lambda s: s["state"] == "on", "on")
    assert st["attributes"].get("device_class") == "occupancy", st
    assert st["attributes"].get("friendly_name", "").endswith("Person detected"), st
    st = state(stack, count, lambda s: s["state"] == "1", "1 person")
    assert st["attributes"].get("state_class") == "measurement", st
    assert st["attributes"].get("friendly_name", "").endswith("Person count"), st

    def on_then_off() -> tuple[float, float] | None:
        t_on = None
        for t, s in ha.state_history(detected, t0):
            if s == "on" and t_on is None:
                t_on = t
            elif s == "off" and t_on is not None:
                return t_on, t
        return None

    t_on, t_off = wait_until(f"{detected} to turn off", on_then_off, OBJECT_OFF_DELAY + 15,
                             interval=0.1,
                             on_timeout=lambda: f"history: {ha.state_history(detected, t0)}")
    assert t_off - t_on >= OBJECT_OFF_DELAY - 1, f"off after {t_off - t_on:.2f}s"
    state(stack, count, lambda s: s["state"] == "0", "back to 0")
    observe(f"detection: person on {t_on - t0:.2f}s after the post, off {t_off - t_on:.2f}s later")

    # The annotated picture: what the bridge published, a JPEG of the overview's size with
    # the box drawn (its outline differs from the overview far more than JPEG noise does).
    published = last_mqtt(stack, f"{BASE}/{GATE.device_id}/intrusion/annotated")
    got = b""

    def served() -> bool:
        nonlocal got
        status, ctype, body = ha.image(annotated)
        if status == 200:
            assert ctype.startswith("image/jpeg"), ctype
            got = body
        return got == published

    wait_until(f"{annotated} to serve the annotated picture", served, 15, interval=0.1,
               on_timeout=lambda: f"served {len(got)} bytes, published {len(published)}")
    assert got[:2] == b"\xff\xd8" and got != OVERVIEW
    on_box, elsewhere = box_outline_difference(got, OVERVIEW, PERSON_BOX)
    assert on_box > 40 and elsewhere < 12, (on_box, elsewhere)
    observe(f"annotated picture: box outline differs by {on_box:.0f}, elsewhere {elsewhere:.1f}")


def test_two_people_and_a_car(stack: Stack, detect_bridge: DetectBridge) -> None:
    detector = detect_bridge.detector
    detector.answer([person(), person((20, 20, 80, 170), 0.81),
                     Prediction("car", 0.77, *CAR_BOX),
                     Prediction("car", 0.3, 10, 10, 20, 20),    # below min_confidence
                     Prediction("dog", 0.95, 5, 5, 50, 50)])    # not a wanted label
    count = entity(stack, GATE, "person_count")
    state(stack, count, lambda s: s["state"] == "0", "0 before the post", OBJECT_OFF_DELAY + 15)
    post(detect_bridge, person_post(GATE))
    state(stack, count, lambda s: s["state"] == "2", "2 people")
    car = entity(stack, GATE, "car_detected")
    car_count = entity(stack, GATE, "car_count")
    state(stack, car_count, lambda s: s["state"] == "1", "1 car")
    state(stack, car, lambda s: s["state"] in ("on", "off"), "known")
    history = [s for _t, s in stack.ha.state_history(car)]
    assert "on" in history, history
    assert stack.ha.entity_by_unique_id(uid(GATE, "dog_detected")) is None
    state(stack, count, lambda s: s["state"] == "0", "back to 0", OBJECT_OFF_DELAY + 15)


# --------------------------------------------------------------------------- blueprint


def solar_longitude(solar_hour: float) -> float:
    """The longitude where the mean solar time is ``solar_hour`` now (-180 to 180)."""
    now = datetime.now(timezone.utc)
    utc_hour = now.hour + now.minute / 60 + now.second / 3600
    return round(((solar_hour - utc_hour) * 15 + 180) % 360 - 180, 3)


def move_sun(stack: Stack, longitude: float, expected: str) -> None:
    """Put Home Assistant at the equator at ``longitude`` and wait for ``sun.sun``."""
    stack.ha.rest("POST", "/api/services/homeassistant/set_location",
                  {"latitude": 0, "longitude": longitude})
    state(stack, "sun.sun", lambda s: s["state"] == expected, f"{expected} at {longitude}")


@pytest.fixture
def at_home(stack: Stack) -> Iterator[None]:
    """Put Home Assistant back at its configured location (0, 0) afterwards."""
    try:
        yield
    finally:
        stack.ha.rest("POST", "/api/services/homeassistant/set_location",
                      {"latitude": 0, "longitude": 0})


def test_person_at_night_blueprint(stack: Stack, detect_bridge: DetectBridge,
                                   at_home: None) -> None:
    ha = stack.ha
    dest = stack.run_dir / "ha-config" / "blueprints" / "automation" / "camqtt"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "blueprints" / "automation" / "camqtt" / BLUEPRINT, dest / BLUEPRINT)
    state(stack, "sun.sun", lambda s: s["state"] in ("above_horizon", "below_horizon"), "up")

    detect_bridge.detector.answer([person()])
    post(detect_bridge, person_post(NIGHT))  # announces the camera's person sensor
    sensor = entity(stack, NIGHT, "person_detected")
    state(stack, sensor, lambda s: s["state"] == "off", "off again", OBJECT_OFF_DELAY + 15)

    ha.subscribe(EVENT)
    auto = create_automation(stack, "camqtt_bp_person_night", BLUEPRINT, {
        "person_sensor": [sensor],
        "actions": [{"event": EVENT,
                     "event_data": {"camera": "{{ camera }}", "sensor": "{{ sensor }}"}}],
    })
    t0 = time.monotonic()

    night, day = solar_longitude(0.0), solar_longitude(12.0)
    move_sun(stack, night, "below_horizon")
    tr = run_for_next_post(stack, auto, detect_bridge, person_post(NIGHT),
                           timeout=OBJECT_OFF_DELAY + 15)
    assert_acted(tr, f"person at solar midnight (longitude {night})")
    fired = [e["data"] for _t, e in ha.events_of(EVENT, t0)]
    assert fired == [{"camera": NIGHT.name, "sensor": sensor}], fired
    state(stack, sensor, lambda s: s["state"] == "off", "off again", OBJECT_OFF_DELAY + 15)

    move_sun(stack, day, "above_horizon")
    tr = run_for_next_post(stack, auto, detect_bridge, person_post(NIGHT),
                           timeout=OBJECT_OFF_DELAY + 15)
    assert_rejected(tr, f"person at solar noon (longitude {day})")
    assert len(ha.events_of(EVENT, t0)) == 1, ha.events_of(EVENT, t0)
    observe(f"person_at_night blueprint: fired at longitude {night}, not at {day}")
    delete_automation(stack, auto)


def test_ha_log_has_no_detection_complaints(stack: Stack, detect_bridge: DetectBridge) -> None:
    """HA logs discovery payloads it rejects and blueprints or templates that fail."""
    pattern = re.compile(r" (WARNING|ERROR|CRITICAL) \([^)]*\) \[homeassistant\.(components\.("
                         r"mqtt|binary_sensor|sensor|image|automation|blueprint|sun)|"
                         r"helpers\.(template|script|condition))\b")
    lines = (stack.run_dir / "ha.log").read_text(errors="replace").splitlines()
    complaints = [line for line in lines if pattern.search(line)
                  and (BASE in line or "person" in line or BLUEPRINT in line)]
    assert not complaints, "HA complained:\n" + "\n".join(c[:400] for c in complaints)
