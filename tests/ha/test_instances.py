"""Two bridge instances on one broker, seen from a real Home Assistant (issue 14).

Beside the session's bridge (base topic ``camera``, client id ``camqtt-e2e``) a second
instance runs with base topic ``camera/south`` and client id ``camqtt-south``, each with a
camera of its own. Home Assistant must show one bridge device per instance, "camqtt bridge"
and "camqtt camera/south bridge", with each camera under its own instance's bridge
(``via_device``); when the south instance stops, its camera's entities become unavailable
and the other instance's camera stays available.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from conftest import BRIDGE_CLIENT_ID, Bridge, Stack, extra_bridge, observe
from harness import LOOPBACK, Process, wait_until
from viewtron import SUCCESS_REPLY, CameraLink, Device, intrusion_post, make_jpeg

SOUTH_BASE = "camera/south"
SOUTH_CLIENT_ID = "camqtt-south"
NORTH_CAM = Device(mac="58:5b:69:ee:00:01", name="North Yard", serial="NORTHYARD01")
SOUTH_CAM = Device(mac="58:5b:69:ee:00:02", name="South Yard", serial="SOUTHYARD02")
OVERVIEW = make_jpeg(320, 180, seed=71, label="instances overview")
CROP = make_jpeg(64, 128, seed=72, label="instances crop")
TIMEOUT = 20.0


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower())


@pytest.fixture(scope="module")
def south(stack: Stack) -> Iterator[tuple[int, Process]]:
    with extra_bridge(stack, "camqtt-south", SOUTH_BASE, SOUTH_CLIENT_ID) as bridge:
        yield bridge


def post(port: int, dev: Device) -> None:
    cam = CameraLink(LOOPBACK, port)
    try:
        body = intrusion_post(dev, OVERVIEW, CROP, target_id=int(time.time()) % 100_000,
                              size=(320, 180), crop_size=(64, 128), target_type=1)
        reply = cam.post(body)
    finally:
        cam.close()
    assert reply.status == 200 and reply.body == SUCCESS_REPLY, reply


def test_one_bridge_device_per_instance_with_its_cameras(stack: Stack, bridge: Bridge,
                                                         south: tuple[int, Process]) -> None:
    ha = stack.ha
    south_port, south_proc = south
    post(bridge.port, NORTH_CAM)
    post(south_port, SOUTH_CAM)

    def device(identifier: str) -> dict:
        return wait_until(f"HA device {identifier}",
                          lambda: ha.device_by_identifier(identifier), TIMEOUT, interval=0.1,
                          on_timeout=lambda: "\n".join(
                              f"  {d.get('name')} {d.get('identifiers')}"
                              for d in ha.devices()))

    north_bridge = device(f"camqtt_bridge_{slug(BRIDGE_CLIENT_ID)}")
    south_bridge = device(f"camqtt_bridge_{slug(SOUTH_CLIENT_ID)}")
    assert north_bridge["id"] != south_bridge["id"]
    assert north_bridge["name"] == "camqtt bridge", north_bridge
    assert south_bridge["name"] == f"camqtt {SOUTH_BASE} bridge", south_bridge
    north_cam = device(f"camqtt_{NORTH_CAM.hw_key}")
    south_cam = device(f"camqtt_{SOUTH_CAM.hw_key}")
    assert north_cam["via_device_id"] == north_bridge["id"], north_cam
    assert south_cam["via_device_id"] == south_bridge["id"], south_cam
    # Every camera under the south bridge is the south instance's.
    under_south = [d["name"] for d in ha.devices() if d.get("via_device_id") == south_bridge["id"]]
    assert under_south == [SOUTH_CAM.name], under_south

    def entity_of(dev: Device) -> str:
        uid = f"camqtt_{dev.hw_key}_intrusion"
        entry = wait_until(f"entity {uid}", lambda: ha.entity_by_unique_id(uid), TIMEOUT,
                           interval=0.1)
        return entry["entity_id"]

    north_entity, south_entity = entity_of(NORTH_CAM), entity_of(SOUTH_CAM)
    for eid in (north_entity, south_entity):
        wait_until(f"{eid} available", lambda eid=eid: (ha.state(eid) or {}).get("state")
                   not in (None, "unavailable"), TIMEOUT, interval=0.1)

    # The south instance stops: its camera goes unavailable, the north one does not.
    t0 = time.monotonic()
    south_proc.stop(grace=10)
    wait_until(f"{south_entity} unavailable",
               lambda: (ha.state(south_entity) or {}).get("state") == "unavailable", TIMEOUT,
               interval=0.1)
    observe(f"instances: south camera unavailable {time.monotonic() - t0:.2f}s after its "
            "bridge stopped")
    assert (ha.state(north_entity) or {}).get("state") != "unavailable"
    north_state = stack.mqtt.find("camera/bridge/state")[-1].payload
    assert north_state == b"online", north_state
