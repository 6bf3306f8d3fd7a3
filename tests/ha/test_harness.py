"""Self-check of the harness without the bridge.

A hand-written device-based discovery is published with mosquitto_pub; Home
Assistant must create the device and its entities, show the retained state and
serve the retained JPEG byte for byte, and drop everything again when the config
is cleared. If this fails, the problem is the environment, not camqtt.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from conftest import DISCOVERY_PREFIX, Stack
from harness import LOOPBACK, wait_until
from viewtron import make_jpeg

SMOKE_ID = "camqtt_e2e_smoke"


def _pub(stack: Stack, topic: str, payload: bytes, retain: bool = True) -> None:
    argv = [shutil.which("mosquitto_pub") or "mosquitto_pub", "-h", LOOPBACK,
            "-p", str(stack.mqtt_port), "-q", "1", "-t", topic, "-s"]
    if retain:
        argv.append("-r")
    if not payload:
        argv = [a for a in argv if a != "-s"] + ["-n"]
    subprocess.run(argv, input=payload, check=True, timeout=10)


def test_hand_written_discovery_round_trip(stack: Stack) -> None:
    ha = stack.ha
    jpeg = make_jpeg(64, 48, seed=99, label="smoke")
    config = {
        "dev": {"ids": [SMOKE_ID], "name": "E2E Smoke", "mf": "camqtt tests", "mdl": "smoke"},
        "o": {"name": "camqtt-e2e"},
        "cmps": {
            "reading": {"p": "sensor", "name": "Reading", "unique_id": f"{SMOKE_ID}_reading",
                        "state_topic": f"{SMOKE_ID}/reading"},
            "snap": {"p": "image", "name": "Snapshot", "unique_id": f"{SMOKE_ID}_snap",
                     "image_topic": f"{SMOKE_ID}/snap", "content_type": "image/jpeg"},
        },
    }
    _pub(stack, f"{SMOKE_ID}/reading", b"42.5")
    _pub(stack, f"{SMOKE_ID}/snap", jpeg)
    _pub(stack, f"{DISCOVERY_PREFIX}/device/{SMOKE_ID}/config", json.dumps(config).encode())
    try:
        device = wait_until("the smoke device", lambda: ha.device_by_identifier(SMOKE_ID), 10)
        assert device["manufacturer"] == "camqtt tests"
        sensor = wait_until("the smoke sensor", lambda: ha.entity_by_unique_id(f"{SMOKE_ID}_reading"), 10)
        image = wait_until("the smoke image", lambda: ha.entity_by_unique_id(f"{SMOKE_ID}_snap"), 10)
        assert sensor["device_id"] == image["device_id"] == device["id"]
        wait_until("the retained sensor state",
                   lambda: (ha.state(sensor["entity_id"]) or {}).get("state") == "42.5", 10)

        def served() -> bytes | None:
            status, _ctype, body = ha.image(image["entity_id"])
            return body if status == 200 else None

        assert wait_until("the smoke image bytes", served, 10) == jpeg
    finally:
        _pub(stack, f"{DISCOVERY_PREFIX}/device/{SMOKE_ID}/config", b"")
        _pub(stack, f"{SMOKE_ID}/reading", b"")
        _pub(stack, f"{SMOKE_ID}/snap", b"")
    wait_until("the smoke device to be removed", lambda: ha.device_by_identifier(SMOKE_ID) is None, 10)
