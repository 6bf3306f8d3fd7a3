"""An object detector speaking the DeepStack / CodeProject.AI API, for the detection HA test.

Stands in for what cannot run here (a DeepStack or CodeProject.AI Server with a COCO model)
and follows the real API: ``POST /v1/vision/detection`` with a ``multipart/form-data`` body
whose ``image`` field is the picture (and optionally ``min_confidence``, ``api_key``),
answered with ``{"success": true, "predictions": [{"label", "confidence", "x_min",
"y_min", "x_max", "y_max"}, ...], "duration": 0}``. Any other path gets 404, a request
without an ``image`` field ``{"success": false, "error": ...}`` with status 400, as
DeepStack does.

What it "sees" is set by the test (:meth:`DeepStackDetector.answer`); every picture it was
sent is kept (:attr:`DeepStackDetector.images`), so the test can tell what the bridge asked.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATH = "/v1/vision/detection"


@dataclass(frozen=True)
class Prediction:
    """One object in DeepStack's answer: a label, a confidence 0..1 and a box in pixels."""

    label: str
    confidence: float
    x_min: int
    y_min: int
    x_max: int
    y_max: int

    def json(self) -> dict[str, object]:
        return {"label": self.label, "confidence": self.confidence, "x_min": self.x_min,
                "y_min": self.y_min, "x_max": self.x_max, "y_max": self.y_max}


def form_fields(content_type: str, body: bytes) -> dict[str, bytes]:
    """The fields of a ``multipart/form-data`` body (name -> raw bytes)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    msg = BytesParser(policy=HTTP).parsebytes(head + body)
    if not msg.is_multipart():
        return {}
    fields: dict[str, bytes] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = part.get_payload(decode=True) or b""
    return fields


def read_body(req: BaseHTTPRequestHandler) -> bytes:
    """The request body, by ``Content-Length`` or chunked (http.server decodes neither)."""
    if "chunked" in req.headers.get("Transfer-Encoding", "").lower():
        out = bytearray()
        while True:
            size = int(req.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while req.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += req.rfile.read(size)
            req.rfile.readline()
    return req.rfile.read(int(req.headers.get("Content-Length") or 0))


class DeepStackDetector:
    """Serve DeepStack's detection API on ``127.0.0.1:<port>`` (0: any free port)."""

    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Lock()
        self._predictions: list[Prediction] = []
        self.images: list[bytes] = []
        self.requests = 0
        self.refused = 0
        detector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                detector._answer(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """Base URL, as `[detector] url` takes it (the API path is added by the client)."""
        return f"http://127.0.0.1:{self.port}"

    def answer(self, predictions: list[Prediction]) -> None:
        """Find these objects in every picture from now on."""
        with self._lock:
            self._predictions = list(predictions)

    def _reply(self, req: BaseHTTPRequestHandler, status: int, doc: dict[str, object]) -> None:
        body = json.dumps(doc).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    def _answer(self, req: BaseHTTPRequestHandler) -> None:
        body = read_body(req)
        if req.path.split("?")[0] != PATH:
            self._reply(req, 404, {"success": False, "error": "not found"})
            return
        fields = form_fields(req.headers.get("Content-Type", ""), body)
        image = fields.get("image", b"")
        with self._lock:
            self.requests += 1
            if not image.startswith(b"\xff\xd8"):
                self.refused += 1
                predictions = None
            else:
                self.images.append(image)
                predictions = [p.json() for p in self._predictions]
        if predictions is None:
            self._reply(req, 400, {"success": False, "error": "No valid image file was found"})
            return
        self._reply(req, 200, {"success": True, "predictions": predictions, "duration": 0})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
