"""Session fixtures: Mosquitto + Home Assistant (``stack``) and the bridge (``bridge``)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from snapshot_camera import SnapshotCamera
from viewtron import make_jpeg

from harness import (
    LOOPBACK,
    RUN_DIR,
    HarnessError,
    HomeAssistant,
    MqttRecorder,
    Process,
    free_port,
    port_open,
    start_home_assistant,
    start_mosquitto,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
BASE_TOPIC = "camera"
DISCOVERY_PREFIX = "homeassistant"
BRIDGE_CLIENT_ID = "camqtt-e2e"
OFF_DELAY = 3  # seconds, for intrusion and face (see the bridge config below)

# Filled by the fixtures and tests, printed at the end of the run and saved in run/.
TIMINGS: dict[str, float] = {}
OBSERVATIONS: list[str] = []
# default_entity_id the bridge asked for -> entity_id HA actually gave the entity.
ENTITY_IDS: dict[str, str] = {}


def observe(text: str) -> None:
    """Record something noteworthy about HA's or the bridge's behaviour."""
    if text not in OBSERVATIONS:
        OBSERVATIONS.append(text)


@dataclass
class Stack:
    run_dir: Path
    mqtt_port: int
    ha_port: int
    mosquitto: Process
    hass: Process
    ha: HomeAssistant
    mqtt: MqttRecorder
    started: float = field(default_factory=time.monotonic)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    t0 = time.monotonic()
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir(parents=True)
    mqtt_port, ha_port = free_port(), free_port()
    procs: list[Process] = []
    recorder: MqttRecorder | None = None
    ha: HomeAssistant | None = None
    try:
        mosquitto = start_mosquitto(RUN_DIR, mqtt_port)
        procs.append(mosquitto)
        # Listening before HA starts, so its birth message cannot be missed.
        recorder = MqttRecorder(mqtt_port)
        t_launch = time.monotonic()
        hass = start_home_assistant(RUN_DIR, ha_port)
        procs.append(hass)
        ha = HomeAssistant(ha_port)
        wait_until("HA to answer HTTP", lambda: hass.check_alive() or ha.http_up(), 120,
                   interval=0.2, on_timeout=hass.tail)
        TIMINGS["ha_http_up_s"] = time.monotonic() - t_launch
        ha.onboard()
        wait_until("HA core state RUNNING", lambda: hass.check_alive() or ha.core_state() == "RUNNING",
                   120, interval=0.2, on_timeout=hass.tail)
        TIMINGS["ha_running_s"] = time.monotonic() - t_launch
        ha.ws_connect()
        ha.subscribe("state_changed")
        ha.add_mqtt_entry(mqtt_port)
        wait_until("the MQTT config entry to load", ha.mqtt_entry_loaded, 30, interval=0.1,
                   on_timeout=hass.tail)
        TIMINGS["ha_mqtt_entry_s"] = time.monotonic() - t_launch
        # HA debounces MQTT subscriptions (0.5 s until its birth message, 0.1 s after);
        # wait for the birth so that the bridge meets a settled HA.
        wait_until("HA's MQTT birth message (homeassistant/status = online)",
                   lambda: any(m.payload == b"online"
                               for m in recorder.find(f"{DISCOVERY_PREFIX}/status")),
                   60, interval=0.1, on_timeout=hass.tail)
        TIMINGS["ha_birth_s"] = time.monotonic() - t_launch
        TIMINGS["stack_ready_s"] = time.monotonic() - t0
        st = Stack(RUN_DIR, mqtt_port, ha_port, mosquitto, hass, ha, recorder)
        yield st
        # A test may have restarted Home Assistant: stop the one running now.
        procs[procs.index(hass)] = st.hass
        ha = st.ha
    finally:
        t_stop = time.monotonic()
        if ha is not None:
            ha.close()
        for proc in reversed(procs):
            proc.stop()
        if recorder is not None:
            recorder.dump(RUN_DIR / "mqtt-messages.log")
            recorder.close()
        TIMINGS["stack_stop_s"] = time.monotonic() - t_stop


@dataclass
class Bridge:
    port: int
    proc: Process
    config: Path

    @property
    def address(self) -> tuple[str, int]:
        return (LOOPBACK, self.port)


def bridge_binary() -> Path:
    return Path(os.environ.get("CAMQTT_BIN") or REPO / "target" / "debug" / "camqtt")


def bridge_argv(stack: Stack, port: int, base: str, client_id: str,
                config: Path | None) -> list[str]:
    """``camqtt run`` on ``LOOPBACK:port`` against the stack's Mosquitto, with base topic
    ``base``, the stack's discovery prefix and client id ``client_id``."""
    binary = bridge_binary()
    if not os.access(binary, os.X_OK):
        pytest.fail(f"bridge binary {binary} not found; run `cargo build` or set CAMQTT_BIN")
    argv = [str(binary), "run"]
    if config is not None:
        argv += ["--config", str(config)]
    return argv + [
        "--listen", f"{LOOPBACK}:{port}",
        "--mqtt-url", f"mqtt://{LOOPBACK}:{stack.mqtt_port}",
        "--base-topic", base,
        "--discovery-prefix", DISCOVERY_PREFIX,
        "--client-id", client_id,
    ]


def bridge_env() -> dict[str, str]:
    return {"CAMQTT_LOG": os.environ.get("CAMQTT_LOG", "info,camqtt=debug"), "NO_COLOR": "1"}


def wait_bridge_up(stack: Stack, proc: Process, port: int, base: str, argv: list[str]) -> None:
    """Wait until the bridge listens on ``port`` and published ``<base>/bridge/state =
    online``; fails the test with the command and the log's tail otherwise."""
    try:
        wait_until(f"{proc.name} to listen on {LOOPBACK}:{port}",
                   lambda: proc.check_alive() or port_open(port), 20, interval=0.05,
                   on_timeout=proc.tail)
        wait_until(f"{proc.name} to publish {base}/bridge/state = online",
                   lambda: proc.check_alive() or any(
                       m.payload == b"online" for m in stack.mqtt.find(f"{base}/bridge/state")),
                   20, interval=0.05, on_timeout=proc.tail)
    except (HarnessError, TimeoutError) as err:
        pytest.fail(f"{proc.name} did not start: {err}\ncommand: {' '.join(argv)}")


@contextmanager
def extra_bridge(stack: Stack, name: str, base: str, client_id: str,
                 config: str | None = None) -> Iterator[tuple[int, Process]]:
    """Another bridge instance beside the session's: ``camqtt run`` on a free port with base
    topic ``base`` and client id ``client_id`` (and ``config`` as its TOML file, if given), in
    its own working directory (its spool is its own), log ``<name>.log``. Yields (port,
    process) once it published ``<base>/bridge/state = online``; stops it afterwards."""
    workdir = stack.run_dir / name
    workdir.mkdir(exist_ok=True)
    config_path = None
    if config is not None:
        config_path = workdir / "camqtt.toml"
        config_path.write_text(config)
    port = free_port()
    argv = bridge_argv(stack, port, base, client_id, config_path)
    proc = Process(name, argv, stack.run_dir / f"{name}.log", env=bridge_env(), cwd=workdir)
    try:
        wait_bridge_up(stack, proc, port, base, argv)
        yield port, proc
    finally:
        proc.stop(grace=10)


@dataclass
class Sources:
    """The bridge's other inputs: its FTP and SMTP ports and the polled snapshot camera."""

    ftp_port: int
    smtp_port: int
    camera: SnapshotCamera


# The `[[poll]]` camera of the bridge under test (see `bridge` below).
POLL_ID = "drive"
POLL_NAME = "Driveway snapshot"
POLL_USER, POLL_PASSWORD = "admin", "digest-secret"
FIRST_SNAPSHOT = make_jpeg(320, 180, seed=21, label="snapshot 1")


@pytest.fixture(scope="session")
def sources(stack: Stack) -> Iterator[Sources]:
    camera = SnapshotCamera(free_port(), POLL_USER, POLL_PASSWORD, FIRST_SNAPSHOT)
    try:
        yield Sources(free_port(), free_port(), camera)
    finally:
        camera.close()


@pytest.fixture(scope="session")
def bridge(stack: Stack, sources: Sources) -> Iterator[Bridge]:
    config = stack.run_dir / "camqtt.toml"
    config.write_text(
        "# written by tests/ha/conftest.py\n"
        f"[categories.intrusion]\noff_delay = {OFF_DELAY}\n\n"
        f"[categories.face]\noff_delay = {OFF_DELAY}\n\n"
        # The snapshot camera is polled once at start and then on demand (button, command).
        f"[[poll]]\nid = \"{POLL_ID}\"\nname = \"{POLL_NAME}\"\nurl = \"{sources.camera.url}\"\n"
        f"username = \"{POLL_USER}\"\npassword = \"{POLL_PASSWORD}\"\ninterval = \"1h\"\n"
    )
    port = free_port()
    argv = bridge_argv(stack, port, BASE_TOPIC, BRIDGE_CLIENT_ID, config) + [
        "--ftp-listen", f"{LOOPBACK}:{sources.ftp_port}",
        "--smtp-listen", f"{LOOPBACK}:{sources.smtp_port}",
    ]
    t0 = time.monotonic()
    # cwd = run/: anything the bridge writes relative to its working directory (the
    # default spool directory `camqtt-spool`) stays in the run and is wiped with it, so no
    # spooled message of one run can be replayed into the next.
    proc = Process("camqtt", argv, stack.run_dir / "camqtt.log", env=bridge_env(),
                   cwd=stack.run_dir)
    try:
        wait_bridge_up(stack, proc, port, BASE_TOPIC, argv)
        TIMINGS["bridge_ready_s"] = time.monotonic() - t0
        yield Bridge(port, proc, config)
    finally:
        TIMINGS["bridge_stop_s"] = proc.stop(grace=10)
        if proc.popen.returncode not in (0, None, -15):
            observe(f"camqtt exited with status {proc.popen.returncode} on SIGTERM")


def _entity_id_summary() -> list[str]:
    if not ENTITY_IDS:
        return []
    honoured = [w for w, got in ENTITY_IDS.items() if w == got]
    ignored = {w: got for w, got in ENTITY_IDS.items() if w != got}
    lines = [f"default_entity_id honoured for {len(honoured)} of {len(ENTITY_IDS)} entities checked"]
    lines += [f"  wanted {w} -> HA made {got}" for w, got in ignored.items()]
    return lines


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TIMINGS and not OBSERVATIONS:
        return
    tr = terminalreporter
    tr.section("camqtt e2e: timings and observations")
    for key, value in TIMINGS.items():
        tr.write_line(f"{key:>22}: {value:6.2f}")
    for text in OBSERVATIONS + _entity_id_summary():
        tr.write_line(f"- {text}")
    tr.write_line(f"logs: {RUN_DIR}/ (ha.log, camqtt.log, mosquitto.log, mqtt-messages.log)")
    if RUN_DIR.is_dir():
        (RUN_DIR / "report.json").write_text(
            json.dumps({"timings": TIMINGS, "observations": OBSERVATIONS,
                        "entity_ids": ENTITY_IDS}, indent=2) + "\n")
