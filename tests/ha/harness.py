"""Process and client plumbing for the Home Assistant end-to-end test.

Everything talks to 127.0.0.1 only. State, configs and logs of a run live in
``tests/ha/run/`` (wiped at the start of the next run, kept afterwards for
post-mortems). Processes are started here and stopped here, by their own
``Popen`` handle, never by name.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import paho.mqtt.client as paho

HERE = Path(__file__).resolve().parent
RUN_DIR = HERE / "run"
VENV = HERE / "venv"
LOOPBACK = "127.0.0.1"

T = TypeVar("T")


class HarnessError(RuntimeError):
    """Something in the test environment (not the code under test) went wrong."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    interval: float = 0.05,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy; raise after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}{extra}")
        time.sleep(interval)


# --------------------------------------------------------------------------- processes

_PR_SET_PDEATHSIG = 1
try:  # resolved once here: the pre-exec hook runs in a forked child and must stay tiny
    _prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent() -> None:
    # Linux only: the child gets SIGKILL if the pytest process dies abruptly, so a
    # crashed run never leaves a broker, HA or bridge behind.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Process:
    """A child process with its output in a log file under run/."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self._logfh = open(log, "ab")
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._logfh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            preexec_fn=_die_with_parent,
        )
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if not self.alive():
            raise HarnessError(
                f"{self.name} exited with status {self.popen.returncode}; last lines of "
                f"{self.log}:\n{self.tail()}"
            )

    def stop(self, grace: float = 15.0) -> float:
        """SIGTERM, then SIGKILL after ``grace`` seconds. Returns the seconds it took."""
        t0 = time.monotonic()
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._logfh.close()
        return time.monotonic() - t0


def start_mosquitto(run_dir: Path, port: int) -> Process:
    lines = [
        "# written by tests/ha/harness.py",
        f"listener {port} {LOOPBACK}",
        "allow_anonymous true",
        "persistence false",
        # stderr: unbuffered, and no log file to open after a privilege drop.
        "log_dest stderr",
        "log_type error", "log_type warning", "log_type notice", "log_type information",
        "connection_messages true",
    ]
    if os.getuid() == 0:
        # Started as root, mosquitto switches to user "mosquitto" by default, which also
        # clears the die-with-parent signal; stay root instead.
        lines.append("user root")
    conf = run_dir / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    binary = "mosquitto"
    for candidate in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto"):
        if os.access(candidate, os.X_OK):
            binary = candidate
            break
    proc = Process("mosquitto", [binary, "-c", str(conf)], run_dir / "mosquitto.log")
    wait_until("mosquitto to listen", lambda: proc.check_alive() or port_open(port), 10,
               on_timeout=proc.tail)
    return proc


# --------------------------------------------------------------------------- MQTT recorder


class Message:
    __slots__ = ("t", "topic", "payload", "retain")

    def __init__(self, t: float, topic: str, payload: bytes, retain: bool) -> None:
        self.t, self.topic, self.payload, self.retain = t, topic, payload, retain

    def text(self) -> str:
        return self.payload.decode("utf-8", errors="replace")


class MqttRecorder:
    """Subscribes to ``#`` and keeps every message with its arrival time.

    Used to catch HA's birth message and, when a check fails, to tell whether the
    bridge published something that HA then ignored.
    """

    def __init__(self, port: int) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="camqtt-e2e-recorder")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(LOOPBACK, port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise HarnessError("MQTT recorder could not subscribe to #")

    def _on_connect(self, client: paho.Client, _userdata: Any, _flags: Any, rc: Any, _props: Any) -> None:
        client.subscribe("#", qos=1)

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Message(time.monotonic(), msg.topic, bytes(msg.payload), bool(msg.retain)))

    def find(self, topic: str, since: float = 0.0) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic and m.t >= since]

    def topics(self, prefix: str = "") -> list[str]:
        with self._lock:
            return sorted({m.topic for m in self.messages if m.topic.startswith(prefix)})

    def dump(self, path: Path) -> None:
        """One line per message: time, retain flag, topic, size and a text preview."""
        with self._lock:
            msgs = list(self.messages)
        t0 = msgs[0].t if msgs else 0.0
        with open(path, "w", encoding="utf-8") as fh:
            for m in msgs:
                if m.payload[:2] == b"\xff\xd8":
                    preview = "<jpeg>"
                else:
                    preview = m.text()[:400].replace("\n", " ")
                fh.write(f"{m.t - t0:8.3f} {'R' if m.retain else '-'} {m.topic} "
                         f"[{len(m.payload)}] {preview}\n")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# --------------------------------------------------------------------------- Home Assistant

HA_USER = "e2e"
HA_PASSWORD = "e2e-password-not-secret"


def write_ha_config(config_dir: Path, http_port: int) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "configuration.yaml").write_text(
        f"""# written by tests/ha/harness.py: the smallest HA that can host the bridge's entities
homeassistant:
  name: camqtt-e2e
  latitude: 0
  longitude: 0
  elevation: 0
  unit_system: metric
  time_zone: UTC
  country: US
  currency: USD
  language: en
http:
  server_host: {LOOPBACK}
  server_port: {http_port}
api:
config:
onboarding:
websocket_api:
device_automation:
mqtt:
automation: !include automations.yaml
input_boolean:
  camqtt_e2e_fired:
    name: camqtt e2e fired
  camqtt_bp_gate:
    name: camqtt blueprint gate
  camqtt_bp_lamp:
    name: camqtt blueprint lamp relay
# For the blueprint test: a light (what the lights blueprint targets) backed by a helper,
# and the notify integration, whose notify.persistent_notification action takes the same
# title/message/data as a phone's notify.mobile_app_* action.
light:
  - platform: template
    lights:
      camqtt_bp_porch:
        friendly_name: camqtt blueprint porch
        value_template: "{{{{ is_state('input_boolean.camqtt_bp_lamp', 'on') }}}}"
        turn_on:
          action: input_boolean.turn_on
          target:
            entity_id: input_boolean.camqtt_bp_lamp
        turn_off:
          action: input_boolean.turn_off
          target:
            entity_id: input_boolean.camqtt_bp_lamp
notify:
# sun.sun, which the person-at-night blueprint's condition reads (test_detection.py moves
# the sun with homeassistant.set_location).
sun:
binary_sensor:
sensor:
image:
event:
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: info
    homeassistant.components.automation: info
"""
    )
    (config_dir / "automations.yaml").write_text("[]\n")
    # /local/ is only served when www/ exists at start-up (the notify blueprint saves
    # plate crops there).
    (config_dir / "www").mkdir(exist_ok=True)


def start_home_assistant(run_dir: Path, http_port: int) -> Process:
    config_dir = run_dir / "ha-config"
    write_ha_config(config_dir, http_port)
    hass = VENV / "bin" / "hass"
    if not os.access(hass, os.X_OK):
        raise HarnessError(f"{hass} missing: run tests/ha/setup.sh")
    # --skip-pip: everything is installed by setup.sh; HA must not fetch anything.
    return Process(
        "home-assistant",
        [str(hass), "-c", str(config_dir), "--skip-pip", "--log-no-color",
         "--log-file", str(run_dir / "ha.log")],
        run_dir / "ha.console.log",
    )


class HomeAssistant:
    """Synchronous facade over an aiohttp session that runs in its own thread.

    The websocket connection stays open for the whole run; ``state_changed`` and
    other subscribed events are stored with arrival times so that tests can look
    at history (e.g. on → off of a binary_sensor) after the fact.
    """

    def __init__(self, http_port: int) -> None:
        self.url = f"http://{LOOPBACK}:{http_port}"
        self.client_id = self.url + "/"
        self.token: str | None = None
        self.ha_version: str | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="ha-client", daemon=True)
        self._thread.start()
        self.session: aiohttp.ClientSession = self._run(self._make_session())
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ws_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._events_lock = threading.Lock()
        self.events: list[tuple[float, dict[str, Any]]] = []

    # -- plumbing
    def _run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _make_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def _request(self, method: str, path: str, json_body: Any = None, data: Any = None,
                       auth: bool = True) -> tuple[int, str, bytes]:
        async with self.session.request(method, self.url + path, json=json_body, data=data,
                                        headers=self._headers() if auth else {}) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.read()

    def request(self, method: str, path: str, json_body: Any = None, data: Any = None,
                auth: bool = True) -> tuple[int, str, bytes]:
        """Raw HTTP: (status, content type, body)."""
        return self._run(self._request(method, path, json_body, data, auth))

    def rest(self, method: str, path: str, json_body: Any = None) -> Any:
        """JSON REST call that must succeed."""
        status, _ctype, body = self.request(method, path, json_body)
        if status >= 300:
            raise HarnessError(f"{method} {path} -> HTTP {status}: {body[:300]!r}")
        return json.loads(body) if body else None

    # -- bring-up
    def http_up(self) -> bool:
        # /auth/providers answers without credentials and logs no failed-login warning.
        try:
            status, _, _ = self.request("GET", "/auth/providers", auth=False)
        except (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, OSError):
            return False
        return status in (200, 400)

    def onboard(self) -> None:
        """Create the owner through onboarding and keep its access token (valid 30 min)."""
        steps = self.rest("GET", "/api/onboarding")
        if not any(s["step"] == "user" and not s["done"] for s in steps):
            raise HarnessError(f"HA is already onboarded (stale config?): {steps}")
        user = self.rest("POST", "/api/onboarding/users", {
            "client_id": self.client_id, "name": "camqtt e2e", "username": HA_USER,
            "password": HA_PASSWORD, "language": "en",
        })
        status, _, body = self.request("POST", "/auth/token", data={
            "grant_type": "authorization_code", "code": user["auth_code"],
            "client_id": self.client_id,
        }, auth=False)
        if status != 200:
            raise HarnessError(f"token exchange failed: HTTP {status} {body[:200]!r}")
        self.token = json.loads(body)["access_token"]
        # The core_config step is left open on purpose: finishing it sets up
        # integrations that want the internet (weather, radio, TTS).

    def core_state(self) -> str | None:
        try:
            return self.rest("GET", "/api/config").get("state")
        except (HarnessError, aiohttp.ClientError, TimeoutError, OSError):
            return None

    # -- websocket
    def ws_connect(self) -> None:
        self._run(self._ws_connect())

    async def _ws_connect(self) -> None:
        ws = await self.session.ws_connect(self.url + "/api/websocket", max_msg_size=0, heartbeat=None)
        hello = await ws.receive_json()
        if hello.get("type") != "auth_required":
            raise HarnessError(f"unexpected websocket greeting {hello}")
        await ws.send_json({"type": "auth", "access_token": self.token})
        answer = await ws.receive_json()
        if answer.get("type") != "auth_ok":
            raise HarnessError(f"websocket auth failed: {answer}")
        self.ha_version = answer.get("ha_version")
        self._ws = ws
        self._reader = asyncio.create_task(self._ws_reader())

    async def _ws_reader(self) -> None:
        assert self._ws is not None
        async for frame in self._ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            msg = json.loads(frame.data)
            for item in msg if isinstance(msg, list) else [msg]:
                if item.get("type") == "event":
                    with self._events_lock:
                        self.events.append((time.monotonic(), item["event"]))
                    continue
                fut = self._pending.pop(item.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(item)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(HarnessError("websocket closed"))

    async def _ws_call(self, msg_type: str, payload: dict[str, Any]) -> Any:
        if self._ws is None:
            raise HarnessError("websocket not connected")
        self._ws_id += 1
        msg_id = self._ws_id
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._pending[msg_id] = fut
        await self._ws.send_json({"id": msg_id, "type": msg_type, **payload})
        answer = await asyncio.wait_for(fut, 20)
        if not answer.get("success"):
            raise HarnessError(f"websocket {msg_type} failed: {answer.get('error')}")
        return answer.get("result")

    def ws(self, msg_type: str, **payload: Any) -> Any:
        """One websocket command; returns its ``result``."""
        return self._run(self._ws_call(msg_type, payload))

    def subscribe(self, event_type: str) -> None:
        self.ws("subscribe_events", event_type=event_type)

    def events_of(self, event_type: str, since: float = 0.0) -> list[tuple[float, dict[str, Any]]]:
        with self._events_lock:
            return [(t, e) for t, e in self.events if e.get("event_type") == event_type and t >= since]

    def state_history(self, entity_id: str, since: float = 0.0) -> list[tuple[float, str]]:
        """(arrival time, new state) for every recorded change of ``entity_id``."""
        out = []
        for t, e in self.events_of("state_changed", since):
            data = e.get("data", {})
            if data.get("entity_id") == entity_id and data.get("new_state") is not None:
                out.append((t, data["new_state"]["state"]))
        return out

    # -- MQTT entry
    def add_mqtt_entry(self, broker_port: int) -> dict[str, Any]:
        flow = self.rest("POST", "/api/config/config_entries/flow", {"handler": "mqtt"})
        if flow.get("type") != "form" or flow.get("step_id") != "broker":
            raise HarnessError(f"unexpected first MQTT flow step: {flow}")
        done = self.rest("POST", f"/api/config/config_entries/flow/{flow['flow_id']}",
                         {"broker": LOOPBACK, "port": broker_port})
        if done.get("type") != "create_entry":
            raise HarnessError(f"MQTT flow did not create an entry: {done}")
        return done

    def mqtt_entry_loaded(self) -> bool:
        entries = self.rest("GET", "/api/config/config_entries/entry?domain=mqtt")
        return any(e.get("state") == "loaded" for e in entries)

    # -- queries
    def state(self, entity_id: str) -> dict[str, Any] | None:
        status, _, body = self.request("GET", f"/api/states/{entity_id}")
        if status == 404:
            return None
        if status != 200:
            raise HarnessError(f"GET state {entity_id}: HTTP {status}")
        return json.loads(body)

    def entities(self) -> list[dict[str, Any]]:
        return self.ws("config/entity_registry/list")

    def devices(self) -> list[dict[str, Any]]:
        return self.ws("config/device_registry/list")

    def entity_by_unique_id(self, unique_id: str, platform: str = "mqtt") -> dict[str, Any] | None:
        for entry in self.entities():
            if entry.get("platform") == platform and entry.get("unique_id") == unique_id:
                return entry
        return None

    def device_by_identifier(self, identifier: str, domain: str = "mqtt") -> dict[str, Any] | None:
        for dev in self.devices():
            if [domain, identifier] in dev.get("identifiers", []):
                return dev
        return None

    def image(self, entity_id: str) -> tuple[int, str, bytes]:
        return self.request("GET", f"/api/image_proxy/{entity_id}")

    def close(self) -> None:
        async def _close() -> None:
            if self._ws is not None:
                await self._ws.close()
            if self._reader is not None:
                try:
                    await asyncio.wait_for(self._reader, 5)
                except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - best effort at teardown
                    pass
            await self.session.close()

        try:
            self._run(_close(), timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
