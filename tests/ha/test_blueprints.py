"""The blueprints in ``blueprints/automation/camqtt/`` inside a real Home Assistant.

For each blueprint: copy it into HA's ``blueprints/automation/camqtt/``, create an
automation from it through the automation config API (``use_blueprint``), let camqtt
receive camera posts that should and should not trigger it, and look at what happened
in HA: the action's effect (a custom event, a helper, a light, a persistent
notification) and, for every post, the automation's trace (``finished`` when it acted,
``failed_conditions`` when a blueprint condition rejected the post). Traces make the
negative cases exact: a post is judged once HA has run the automation for it, without
sleeping and hoping.

Every blueprint gets its own simulated camera, so the automations never see each
other's posts. Entities are found by unique_id (``camqtt_<hw_key>_<key>``).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, Stack, observe
from harness import LOOPBACK, wait_until
from viewtron import SUCCESS_REPLY, CameraLink, Device, intrusion_post, lpr_post, make_jpeg, passline_post

BLUEPRINT_SRC = REPO / "blueprints" / "automation" / "camqtt"
BLUEPRINTS = ("gate_open_for_known_plate.yaml", "notify_unknown_plate.yaml",
              "lights_on_person_at_night.yaml", "counter_threshold.yaml",
              "person_at_night.yaml")

GATE_CAM = Device(mac="58:5b:69:bb:00:01", name="BP Gate", serial="BPGATE01")
NOTIFY_CAM = Device(mac="58:5b:69:bb:00:02", name="BP Driveway", serial="BPDRIVE02")
YARD_CAM = Device(mac="58:5b:69:bb:00:03", name="BP Yard", serial="BPYARD03")
COUNT_CAM = Device(mac="58:5b:69:bb:00:04", name="BP Door", serial="BPDOOR04")

OVERVIEW = make_jpeg(160, 90, seed=21, label="bp overview")
SIZE, PLATE_SIZE, PERSON_SIZE = (160, 90), (128, 64), (64, 128)
ENTITY_TIMEOUT = 15.0
RUN_TIMEOUT = 10.0
LIGHT = "light.camqtt_bp_porch"
ON_FOR_S = 3


def uid(dev: Device, key: str) -> str:
    return f"camqtt_{dev.hw_key}_{key}"


def post(bridge: Any, body: bytes) -> None:
    cam = CameraLink(LOOPBACK, bridge.port)
    try:
        reply = cam.post(body)
    finally:
        cam.close()
    assert reply.status == 200 and reply.body == SUCCESS_REPLY, reply


_vid = iter(range(100, 10_000))


def plate_post(dev: Device, plate: str, *, direction: str | None = "approach",
               confidence: float = 96.5, list_type: str | None = None,
               crop: bytes | None = None) -> bytes:
    crop = crop or make_jpeg(*PLATE_SIZE, seed=len(plate) + 40, label=plate)
    return lpr_post(dev, plate, OVERVIEW, crop, list_type, vehicle_id=next(_vid), size=SIZE,
                    crop_size=PLATE_SIZE, direction=direction, confidence=confidence)


def entity_id(stack: Stack, dev: Device, key: str) -> str:
    entry = wait_until(f"entity {uid(dev, key)}", lambda: stack.ha.entity_by_unique_id(uid(dev, key)),
                       ENTITY_TIMEOUT, interval=0.1)
    return entry["entity_id"]


def wait_state(stack: Stack, eid: str, predicate: Any, what: str, timeout: float = RUN_TIMEOUT) -> dict:
    last: dict[str, Any] = {}

    def probe() -> dict | None:
        nonlocal last
        last = stack.ha.state(eid) or {}
        return last if last and predicate(last) else None

    return wait_until(f"{eid}: {what}", probe, timeout, interval=0.05,
                      on_timeout=lambda: f"last state: {last}")


def event_fired_after(stack: Stack, eid: str, before: dict | None) -> Any:
    """Predicate: the event entity has a newer event than ``before`` (its state is a time)."""
    old = (before or {}).get("state")
    return lambda st: st["state"] not in ("unknown", "unavailable", old)


# --------------------------------------------------------------------------- automations


@dataclass
class Automation:
    item_id: str
    entity_id: str


def install_blueprints(stack: Stack) -> Path:
    dest = stack.run_dir / "ha-config" / "blueprints" / "automation" / "camqtt"
    dest.mkdir(parents=True, exist_ok=True)
    for name in BLUEPRINTS:
        shutil.copyfile(BLUEPRINT_SRC / name, dest / name)
    return dest


def create_automation(stack: Stack, item_id: str, blueprint: str, inputs: dict[str, Any]) -> Automation:
    ha = stack.ha
    ha.rest("POST", f"/api/config/automation/config/{item_id}", {
        "alias": f"camqtt blueprint test {item_id}",
        "description": "written by tests/ha/test_blueprints.py",
        "use_blueprint": {"path": f"camqtt/{blueprint}", "input": inputs},
        "trace": {"stored_traces": 40},
    })
    entry = wait_until(f"automation {item_id}",
                       lambda: ha.entity_by_unique_id(item_id, platform="automation"), 15,
                       interval=0.1)
    st = wait_state(stack, entry["entity_id"], lambda s: s["state"] in ("on", "unavailable"),
                    "loaded")
    assert st["state"] == "on", (
        f"automation {item_id} from {blueprint} did not load: {st}\n{ha_log_tail(stack)}")
    return Automation(item_id, entry["entity_id"])


def delete_automation(stack: Stack, auto: Automation) -> None:
    stack.ha.rest("DELETE", f"/api/config/automation/config/{auto.item_id}")
    wait_until(f"{auto.entity_id} to go away", lambda: stack.ha.state(auto.entity_id) is None, 15,
               interval=0.1)


def traces(stack: Stack, auto: Automation) -> list[dict[str, Any]]:
    got = stack.ha.ws("trace/list", domain="automation", item_id=auto.item_id)
    return sorted(got, key=lambda t: t["timestamp"]["start"])


def run_for_next_post(stack: Stack, auto: Automation, bridge: Any, body: bytes,
                      timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
    """Post ``body`` and return the automation's trace for it (once it has stopped)."""
    seen = len(traces(stack, auto))
    post(bridge, body)

    def done() -> dict[str, Any] | None:
        ts = traces(stack, auto)
        if len(ts) > seen and ts[seen].get("state") == "stopped":
            return ts[seen]
        return None

    return wait_until(f"a trace of {auto.entity_id} for the post", done, timeout, interval=0.05,
                      on_timeout=lambda: f"traces: {traces(stack, auto)[seen:]}\n{ha_log_tail(stack)}")


def ha_log_tail(stack: Stack, lines: int = 15) -> str:
    try:
        text = (stack.run_dir / "ha.log").read_text(errors="replace")
    except OSError:
        return ""
    return "ha.log:\n" + "\n".join(text.splitlines()[-lines:])


def assert_rejected(trace: dict[str, Any], why: str) -> None:
    assert trace.get("script_execution") == "failed_conditions", f"{why}: trace {trace}"


def assert_acted(trace: dict[str, Any], why: str) -> None:
    assert trace.get("script_execution") == "finished" and not trace.get("error"), \
        f"{why}: trace {trace}"


@pytest.fixture(scope="module")
def installed(stack: Stack, bridge: Any) -> Path:
    dest = install_blueprints(stack)
    # One first post per camera: camqtt announces the device and its entities; the
    # automations need their entity ids. Enter person starts at 5.
    post(bridge, plate_post(GATE_CAM, "WARM0"))
    post(bridge, plate_post(NOTIFY_CAM, "WARM1", list_type="whiteList"))
    post(bridge, intrusion_post(YARD_CAM, OVERVIEW, make_jpeg(*PERSON_SIZE, 30, "p"), 1, SIZE,
                                PERSON_SIZE))
    post(bridge, passline_post(COUNT_CAM, {"enter_person": 5, "leave_person": 1}, OVERVIEW,
                               make_jpeg(*PERSON_SIZE, 31, "c"), 1, SIZE, PERSON_SIZE))
    return dest


# --------------------------------------------------------------------------- tests


def test_blueprints_are_valid_in_ha(stack: Stack, installed: Path) -> None:
    listed = stack.ha.ws("blueprint/list", domain="automation")
    for name in BLUEPRINTS:
        entry = listed.get(f"camqtt/{name}")
        assert entry is not None, f"HA does not list camqtt/{name}: {sorted(listed)}"
        assert "error" not in entry, f"camqtt/{name}: {entry['error']}"
        meta = entry["metadata"]
        assert meta["domain"] == "automation"
        assert meta.get("description"), f"{name} has no description"
        for key, spec in meta["input"].items():
            assert spec.get("name") and spec.get("selector"), f"{name}: input {key} undocumented"


def test_gate_opens_for_allow_listed_approaching_plate(stack: Stack, bridge: Any,
                                                       installed: Path) -> None:
    ha = stack.ha
    ev = entity_id(stack, GATE_CAM, "lpr_event")
    wait_state(stack, ev, lambda s: s["attributes"].get("plate") == "WARM0", "warm-up plate read")
    attrs = ha.state(ev)["attributes"]
    observe("event entity attributes (LPR): " + ", ".join(sorted(attrs)))
    for key in ("event_type", "plate", "direction", "confidence", "list"):
        assert key in attrs, f"{ev} lacks attribute {key}: {attrs}"
    assert attrs["direction"] == "approach" and attrs["confidence"] == 96.5, attrs

    ha.subscribe("camqtt_bp_gate")
    flag = "input_boolean.camqtt_bp_gate"
    actions = [
        {"event": "camqtt_bp_gate",
         "event_data": {"plate": "{{ plate }}", "direction": "{{ direction }}",
                        "confidence": "{{ confidence }}", "camera": "{{ camera }}"}},
        {"action": "input_boolean.turn_on", "target": {"entity_id": flag}},
    ]
    auto = create_automation(stack, "camqtt_bp_gate", "gate_open_for_known_plate.yaml", {
        "lpr_event": [ev], "allowed_plates": ["ab-123", "XY 789"], "actions": actions,
    })
    assert ha.state(flag)["state"] == "off"
    t0 = time.monotonic()

    # Matching: allow-listed (other spelling), approaching, 96.5 % >= 90 % (default).
    tr = run_for_next_post(stack, auto, bridge, plate_post(GATE_CAM, "AB 123", confidence=96.5))
    assert_acted(tr, "AB 123 approaching at 96.5 %")
    wait_state(stack, flag, lambda s: s["state"] == "on", "gate helper turned on")
    ha.rest("POST", "/api/services/input_boolean/turn_off", {"entity_id": flag})
    wait_state(stack, flag, lambda s: s["state"] == "off", "reset")

    for plate, kwargs, why in (
        ("AB123", {"confidence": 80.0}, "low confidence"),
        ("ZZ999", {"confidence": 99.0}, "plate not on the list"),
        ("XY-789", {"direction": "away", "confidence": 99.0}, "wrong direction"),
        ("XY789", {"direction": None, "confidence": 99.0}, "no direction, 'unknown' not allowed"),
    ):
        assert_rejected(run_for_next_post(stack, auto, bridge, plate_post(GATE_CAM, plate, **kwargs)),
                        f"{plate}: {why}")
    assert ha.state(flag)["state"] == "off", "a non-matching plate opened the gate"

    fired = [e["data"] for _t, e in ha.events_of("camqtt_bp_gate", t0)]
    assert fired == [{"plate": "AB 123", "direction": "approach", "confidence": 96.5,
                      "camera": GATE_CAM.name}], fired
    delete_automation(stack, auto)

    # Cameras without a direction: allow "unknown", lower the bar to 85 %.
    auto = create_automation(stack, "camqtt_bp_gate_unknown", "gate_open_for_known_plate.yaml", {
        "lpr_event": [ev], "allowed_plates": ["XY789"], "allowed_directions": ["approach", "unknown"],
        "min_confidence": 85, "actions": actions,
    })
    t1 = time.monotonic()
    assert_rejected(run_for_next_post(stack, auto, bridge,
                                      plate_post(GATE_CAM, "xy789", direction=None, confidence=84.5)),
                    "84.5 % < 85 %")
    assert_acted(run_for_next_post(stack, auto, bridge,
                                   plate_post(GATE_CAM, "xy789", direction=None, confidence=88.0)),
                 "no direction, 'unknown' allowed, 88 %")
    wait_state(stack, flag, lambda s: s["state"] == "on", "gate helper turned on")
    fired = [e["data"]["plate"] for _t, e in ha.events_of("camqtt_bp_gate", t1)]
    assert fired == ["xy789"], fired

    # The camera going offline and coming back restores the event entity's last state
    # (that very matching plate read): not a new read, so no gate.
    last = ha.state(ev)["state"]
    seen = len(traces(stack, auto))
    topic = f"camera/{GATE_CAM.device_id}/availability"
    stack.mqtt.client.publish(topic, "offline", qos=1, retain=True).wait_for_publish(5)
    wait_state(stack, ev, lambda s: s["state"] == "unavailable", "camera offline")
    stack.mqtt.client.publish(topic, "online", qos=1, retain=True).wait_for_publish(5)
    wait_state(stack, ev, lambda s: s["state"] == last, "camera back with the restored read")
    runs = wait_until("traces of the availability flap",
                      lambda: (ts := traces(stack, auto)[seen:]) and len(ts) >= 2
                      and all(t.get("state") == "stopped" for t in ts) and ts, RUN_TIMEOUT, 0.05)
    assert [t.get("script_execution") for t in runs] == ["failed_conditions"] * 2, runs
    assert [e["data"]["plate"] for _t, e in ha.events_of("camqtt_bp_gate", t1)] == ["xy789"]
    delete_automation(stack, auto)


def notifications(stack: Stack) -> list[dict[str, Any]]:
    return stack.ha.ws("persistent_notification/get")


def test_notify_unknown_plate_with_crop(stack: Stack, bridge: Any, installed: Path) -> None:
    ha = stack.ha
    ev = entity_id(stack, NOTIFY_CAM, "lpr_event")
    img = entity_id(stack, NOTIFY_CAM, "lpr_target")
    wait_state(stack, ev, lambda s: s["attributes"].get("plate") == "WARM1", "warm-up plate read")
    www = stack.run_dir / "ha-config" / "www"
    before = {n["notification_id"] for n in notifications(stack)}

    auto = create_automation(stack, "camqtt_bp_notify", "notify_unknown_plate.yaml", {
        "lpr_event": ev, "plate_image": img, "known_plates": ["known-1"],
        # notify.persistent_notification takes what notify.mobile_app_* takes.
        "notify_service": "notify.persistent_notification",
        "message": "{{ camera }}: unknown plate {{ plate }} [{{ plate_list }}] {{ image_url }}",
        "snapshot_dir": str(www / "camqtt"),
    })
    assert_rejected(run_for_next_post(stack, auto, bridge, plate_post(NOTIFY_CAM, "KNOWN 1")),
                    "plate on the known list")
    assert_rejected(run_for_next_post(stack, auto, bridge,
                                      plate_post(NOTIFY_CAM, "FRIEND9", list_type="whiteList")),
                    "plate on the camera's white list")
    crop = make_jpeg(*PLATE_SIZE, seed=77, label="STRANGER7")
    tr = run_for_next_post(stack, auto, bridge,
                           plate_post(NOTIFY_CAM, "STRANGER7", list_type="blackList", crop=crop))
    assert_acted(tr, "unknown plate (camera black list)")

    new = [n for n in notifications(stack) if n["notification_id"] not in before]
    assert len(new) == 1, new
    note = new[0]
    assert note["title"] == "Unknown plate STRANGER7", note
    assert f"{NOTIFY_CAM.name}: unknown plate STRANGER7 [blackList] /local/camqtt/" in note["message"], note
    url = note["message"].rsplit(" ", 1)[1]
    assert url.endswith(".jpg"), url
    saved = www / url.removeprefix("/local/")
    assert saved.read_bytes() == crop, f"{saved} is not the posted plate crop"
    status, ctype, body = ha.request("GET", url)
    assert status == 200 and body == crop, (status, ctype, len(body))
    observe(f"notify blueprint: crop saved as {url} and served by HA")
    delete_automation(stack, auto)

    # No snapshot folder: the picture is the image entity's URL; the user's own action
    # (an action selector input) creates the notification.
    before = {n["notification_id"] for n in notifications(stack)}
    auto = create_automation(stack, "camqtt_bp_notify_proxy", "notify_unknown_plate.yaml", {
        "lpr_event": ev, "plate_image": img, "snapshot_dir": "", "min_confidence": 90,
        "actions": [{"action": "persistent_notification.create",
                     "data": {"title": "plate {{ plate }}", "message": "{{ image_url }}",
                              "notification_id": "camqtt_bp_plate"}}],
    })
    assert_rejected(run_for_next_post(stack, auto, bridge,
                                      plate_post(NOTIFY_CAM, "BLURRY1", confidence=70.0)),
                    "below the confidence floor")
    crop2 = make_jpeg(*PLATE_SIZE, seed=78, label="STRANGER8")
    assert_acted(run_for_next_post(stack, auto, bridge,
                                   plate_post(NOTIFY_CAM, "STRANGER8", crop=crop2)),
                 "unknown plate (not listed)")
    new = [n for n in notifications(stack) if n["notification_id"] not in before]
    assert [n["title"] for n in new] == ["plate STRANGER8"], new
    url = new[0]["message"]
    assert url.startswith(f"/api/image_proxy/{img}"), url
    status, _ctype, body = ha.request("GET", url)
    assert status == 200 and body == crop2, (status, len(body))
    delete_automation(stack, auto)


def utc_window(contains_now: bool) -> tuple[str, str]:
    now = datetime.now(timezone.utc)
    start, end = ((now - timedelta(hours=1), now + timedelta(hours=1)) if contains_now
                  else (now + timedelta(hours=1), now + timedelta(hours=2)))
    return start.strftime("%H:%M:%S"), end.strftime("%H:%M:%S")


def sun_is_down_at_null_island() -> bool | None:
    """Night per astral at HA's configured location (0, 0); None near sunrise/sunset."""
    from astral import LocationInfo
    from astral.location import Location

    loc = Location(LocationInfo("e2e", "e2e", "UTC", 0.0, 0.0))
    now = datetime.now(timezone.utc)
    rise, sset = loc.sunrise(now.date(), local=False), loc.sunset(now.date(), local=False)
    if min(abs(now - rise), abs(now - sset)) < timedelta(minutes=10):
        return None
    return now < rise or now > sset


def person_post(target_type: int) -> bytes:
    return intrusion_post(YARD_CAM, OVERVIEW, make_jpeg(*PERSON_SIZE, 32, "t"), next(_vid), SIZE,
                          PERSON_SIZE, target_type=target_type)


def test_lights_on_for_person_at_night(stack: Stack, bridge: Any, installed: Path) -> None:
    ha = stack.ha
    ev = entity_id(stack, YARD_CAM, "intrusion_event")
    wait_state(stack, ev, lambda s: s["attributes"].get("event_type") == "intrusion", "warm-up")
    observe("event entity attributes (intrusion): " + ", ".join(sorted(ha.state(ev)["attributes"])))
    wait_state(stack, LIGHT, lambda s: s["state"] == "off", "light off")
    inputs = {"detectors": [ev], "lights": {"entity_id": LIGHT}, "on_for": {"seconds": ON_FOR_S},
              "night": "times"}

    after, before = utc_window(contains_now=False)
    auto = create_automation(stack, "camqtt_bp_lights_day", "lights_on_person_at_night.yaml",
                             {**inputs, "after_time": after, "before_time": before})
    assert_rejected(run_for_next_post(stack, auto, bridge, person_post(1)),
                    f"person outside the window {after}-{before} UTC")
    assert ha.state(LIGHT)["state"] == "off"
    delete_automation(stack, auto)

    after, before = utc_window(contains_now=True)
    auto = create_automation(stack, "camqtt_bp_lights_night", "lights_on_person_at_night.yaml",
                             {**inputs, "after_time": after, "before_time": before})
    assert_rejected(run_for_next_post(stack, auto, bridge, person_post(2)),
                    "a car in the zone is not a person")
    assert ha.state(LIGHT)["state"] == "off"
    t0 = time.monotonic()
    tr = run_for_next_post(stack, auto, bridge, person_post(1), timeout=RUN_TIMEOUT + ON_FOR_S)
    assert_acted(tr, f"person inside the window {after}-{before} UTC")
    history = [s for t, s in ha.state_history(LIGHT, t0)]
    assert history[:2] == ["on", "off"], history
    on_t = next(t for t, s in ha.state_history(LIGHT, t0) if s == "on")
    off_t = next(t for t, s in ha.state_history(LIGHT, t0) if s == "off")
    assert ON_FOR_S - 0.3 <= off_t - on_t <= ON_FOR_S + 2, off_t - on_t
    observe(f"lights blueprint: light on {on_t - t0:.2f}s after the post, off {off_t - on_t:.2f}s later")
    delete_automation(stack, auto)

    # Default "sun" mode: acts exactly when the sun is down at HA's location.
    night = sun_is_down_at_null_island()
    if night is None:
        observe("lights blueprint: sun mode not checked (within 10 min of sunrise/sunset)")
        return
    auto = create_automation(stack, "camqtt_bp_lights_sun", "lights_on_person_at_night.yaml",
                             {"detectors": [ev], "lights": {"entity_id": LIGHT},
                              "on_for": {"seconds": 1}})
    tr = run_for_next_post(stack, auto, bridge, person_post(1), timeout=RUN_TIMEOUT + 1)
    if night:
        assert_acted(tr, "sun below the horizon")
    else:
        assert_rejected(tr, "sun above the horizon")
    delete_automation(stack, auto)


def test_counter_threshold(stack: Stack, bridge: Any, installed: Path) -> None:
    ha = stack.ha
    sensor = entity_id(stack, COUNT_CAM, "counting_enter_person")
    wait_state(stack, sensor, lambda s: s["state"] == "5", "warm-up count 5")
    attrs = ha.state(sensor)["attributes"]
    assert attrs.get("state_class") == "total_increasing", attrs
    ha.subscribe("camqtt_bp_counter")
    auto = create_automation(stack, "camqtt_bp_counter", "counter_threshold.yaml", {
        "counter": [sensor], "threshold": 10,
        "actions": [{"event": "camqtt_bp_counter",
                     "event_data": {"count": "{{ count }}", "previous": "{{ previous }}",
                                    "camera": "{{ camera }}"}}],
    })
    t0 = time.monotonic()

    def count_post(n: int) -> None:
        post(bridge, passline_post(COUNT_CAM, {"enter_person": n, "leave_person": 1}, OVERVIEW,
                                   make_jpeg(*PERSON_SIZE, 33, "c"), next(_vid), SIZE, PERSON_SIZE))
        wait_state(stack, sensor, lambda s: s["state"] == str(n), f"count {n}")

    def fired() -> list[dict[str, Any]]:
        return [e["data"] for _t, e in ha.events_of("camqtt_bp_counter", t0)]

    count_post(8)      # below: nothing
    count_post(12)     # crosses 10: fires
    wait_until("the counter automation to fire", lambda: len(fired()) >= 1, RUN_TIMEOUT, 0.05)
    count_post(15)     # still above: no new crossing
    count_post(0)      # the camera reset its counters
    count_post(11)     # crosses again: fires
    wait_until("the counter automation to fire again", lambda: len(fired()) >= 2, RUN_TIMEOUT, 0.05)
    assert fired() == [{"count": 12, "previous": 8, "camera": COUNT_CAM.name},
                       {"count": 11, "previous": 0, "camera": COUNT_CAM.name}], fired()
    ts = traces(stack, auto)
    assert [t.get("script_execution") for t in ts] == ["finished", "finished"], ts
    delete_automation(stack, auto)


def test_ha_log_has_no_blueprint_complaints(stack: Stack, installed: Path) -> None:
    import re

    pattern = re.compile(r" (WARNING|ERROR|CRITICAL) \([^)]*\) \[homeassistant\.(components\.("
                         r"automation|blueprint|script|template|light|notify|image|"
                         r"persistent_notification|mqtt)|helpers\.(template|script|condition))\b")
    lines = (stack.run_dir / "ha.log").read_text(errors="replace").splitlines()
    complaints = [line for line in lines if pattern.search(line)]
    assert not complaints, "HA complained:\n" + "\n".join(c[:400] for c in complaints)
