"""The FTP, SMTP and snapshot-polling sources seen from a real Home Assistant (issue 10).

Real clients that nobody here wrote drive the sources: ``curl -T`` uploads a JPEG over FTP
into a Dahua-style date tree, ``curl`` sends a mail with ``AUTH LOGIN`` over SMTP, and the
bridge polls a Digest-protected snapshot URL (``snapshot_camera.py``, the camera stand-in).
Home Assistant must then show each camera as a device whose image entity serves exactly the
uploaded / mailed / polled bytes, and the "Take snapshot" button must take a new picture.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    BASE_TOPIC,
    FIRST_SNAPSHOT,
    POLL_ID,
    POLL_NAME,
    Sources,
    Stack,
)
from harness import LOOPBACK, wait_until
from test_e2e import device, entity, served_image, wait_state
from viewtron import make_jpeg

FTP_USER = "porchcam"
FTP_JPEG = make_jpeg(320, 180, seed=31, label="ftp upload")
# A Dahua camera's snapshot path (date tree, brackets and @ in the name).
FTP_DIR = "2025-12-01/001/jpg/13/20"
FTP_NAME = "07[M][0@0][0].jpg"

SMTP_USER = "mailcam"
MAIL_JPEG = make_jpeg(320, 180, seed=32, label="mailed snapshot")
MAIL_SUBJECT = "Motion Detection alarm · Porch · CH1"

SECOND_SNAPSHOT = make_jpeg(320, 180, seed=22, label="snapshot 2")

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(["curl", "--silent", "--show-error", "--max-time", "30", *args],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, f"curl {' '.join(args)}: {done.returncode} {done.stderr!r}"
    return done


def last_event(stack: Stack, topic: str) -> dict[str, Any]:
    found = wait_until(f"an event on {topic}", lambda: stack.mqtt.find(topic), 15, interval=0.1)
    return json.loads(found[-1].payload)


def device_serving(stack: Stack, hw_key: str, image_key: str, jpeg: bytes) -> dict[str, Any]:
    """The HA device ``camqtt_<hw_key>``, once its image entity serves exactly ``jpeg``."""
    dev = device(stack, f"camqtt_{hw_key}")
    img = entity(stack, f"camqtt_{hw_key}_{image_key}")
    assert img["device_id"] == dev["id"]
    got = served_image(stack, img["entity_id"], jpeg)
    assert got == jpeg, f"{img['entity_id']} served {len(got)} bytes, the camera sent {len(jpeg)}"
    return dev


def test_ftp_upload_is_a_device_with_the_uploaded_picture(stack: Stack, bridge: Any,
                                                          sources: Sources, tmp_path: Path) -> None:
    upload = tmp_path / "snapshot.jpg"
    upload.write_bytes(FTP_JPEG)
    curl("--globoff", "--ftp-create-dirs", "-T", str(upload), "--user", f"{FTP_USER}:anything",
         f"ftp://{LOOPBACK}:{sources.ftp_port}/{FTP_DIR}/{FTP_NAME}")
    ev = last_event(stack, f"{BASE_TOPIC}/{FTP_USER}/motion/event")
    assert ev["provenance"]["via"] == "ftp", ev
    assert ev["provenance"]["name"] == FTP_NAME, ev

    dev = device_serving(stack, f"ftp_user_{FTP_USER}", "motion_image", FTP_JPEG)
    assert dev["name"] == FTP_USER
    motion = entity(stack, f"camqtt_ftp_user_{FTP_USER}_motion")
    assert motion["device_id"] == dev["id"]
    wait_state(stack, motion["entity_id"], "on")


def test_mailed_snapshot_is_a_device_with_the_attached_picture(stack: Stack, bridge: Any,
                                                               sources: Sources,
                                                               tmp_path: Path) -> None:
    mail = EmailMessage()
    mail["From"] = "porch-camera@example.com"
    mail["To"] = "alarms@example.com"
    mail["Subject"] = MAIL_SUBJECT
    mail.set_content("Alarm Event: Motion Detection\nAlarm Input Channel: 1\n"
                     "Alarm Device Name: Porch\n")
    mail.add_attachment(MAIL_JPEG, maintype="image", subtype="jpeg",
                        filename="CH1_20251201132003.jpg")
    eml = tmp_path / "mail.eml"
    eml.write_bytes(mail.as_bytes())
    curl(f"smtp://{LOOPBACK}:{sources.smtp_port}", "--mail-from", "porch-camera@example.com",
         "--mail-rcpt", "alarms@example.com", "--upload-file", str(eml),
         "--user", f"{SMTP_USER}:secret", "--login-options", "AUTH=LOGIN")
    ev = last_event(stack, f"{BASE_TOPIC}/{SMTP_USER}/motion/event")
    assert ev["provenance"]["via"] == "smtp", ev
    assert ev["provenance"]["name"] == MAIL_SUBJECT, ev

    device_serving(stack, f"smtp_user_{SMTP_USER}", "motion_image", MAIL_JPEG)


def test_polled_snapshot_and_the_take_snapshot_button(stack: Stack, bridge: Any,
                                                      sources: Sources) -> None:
    dev = device_serving(stack, f"poll_{POLL_ID}", "snapshot_image", FIRST_SNAPSHOT)
    assert dev["name"] == POLL_NAME
    # A polled picture is not a detection: no on/off sensor for it (it would stay on).
    assert stack.ha.entity_by_unique_id(f"camqtt_poll_{POLL_ID}_snapshot") is None
    img = entity(stack, f"camqtt_poll_{POLL_ID}_snapshot_image")
    assert sources.camera.rejected == 0, "the bridge sent a wrong Digest response"

    buttons = [e for e in stack.ha.entities()
               if e.get("platform") == "mqtt" and e["entity_id"].startswith("button.")
               and e.get("device_id") == dev["id"]]
    assert len(buttons) == 1, f"buttons of {dev['name']}: {buttons}"
    served_before = sources.camera.served
    sources.camera.show(SECOND_SNAPSHOT)
    stack.ha.rest("POST", "/api/services/button/press", {"entity_id": buttons[0]["entity_id"]})
    got = served_image(stack, img["entity_id"], SECOND_SNAPSHOT, timeout=15)
    assert got == SECOND_SNAPSHOT, "the button did not take a new snapshot"
    assert sources.camera.served > served_before
    ev = last_event(stack, f"{BASE_TOPIC}/{POLL_ID}/snapshot/event")
    assert ev["provenance"]["via"] == "on_demand", ev
