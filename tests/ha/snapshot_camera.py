"""A camera's snapshot URL behind HTTP Digest authentication, for the poll source's HA test.

Stands in for what cannot run here (a Hikvision camera's
``/ISAPI/Streaming/channels/101/picture``) and follows the real protocol: RFC 7616 Digest
with ``algorithm=MD5``, ``qop="auth"``, a server nonce, and the client's ``nc``/``cnonce``
checked on every request. The picture can be replaced while the test runs
(:meth:`SnapshotCamera.show`), and every answered request is counted.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REALM = "IP Camera(test)"
PATH = "/ISAPI/Streaming/channels/101/picture"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _params(header: str) -> dict[str, str]:
    """The ``key=value`` / ``key="value"`` pairs of a Digest ``Authorization`` header."""
    return {k: v1 or v2 for k, v1, v2 in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]*))', header)}


class SnapshotCamera:
    """Serve ``jpeg`` at :data:`PATH` to ``username``/``password`` (Digest MD5, qop=auth)."""

    def __init__(self, port: int, username: str, password: str, jpeg: bytes) -> None:
        self.username, self.password = username, password
        self.nonce = os.urandom(16).hex()
        self.jpeg = jpeg
        self.served = 0
        self.challenged = 0
        self.rejected = 0
        self._lock = threading.Lock()
        camera = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                camera._answer(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def show(self, jpeg: bytes) -> None:
        """Serve another picture from now on."""
        with self._lock:
            self.jpeg = jpeg

    def _authorised(self, header: str, method: str) -> bool:
        if not header.startswith("Digest "):
            return False
        p = _params(header[len("Digest "):])
        if p.get("username") != self.username or p.get("nonce") != self.nonce:
            return False
        if p.get("realm") != REALM or p.get("qop") != "auth":
            return False
        ha1 = _md5(f"{self.username}:{REALM}:{self.password}")
        ha2 = _md5(f"{method}:{p.get('uri', '')}")
        expected = _md5(f"{ha1}:{self.nonce}:{p.get('nc', '')}:{p.get('cnonce', '')}:auth:{ha2}")
        return p.get("response") == expected

    def _answer(self, req: BaseHTTPRequestHandler) -> None:
        if req.path != PATH:
            req.send_response(404)
            req.send_header("Content-Length", "0")
            req.end_headers()
            return
        if not self._authorised(req.headers.get("Authorization", ""), "GET"):
            with self._lock:
                if req.headers.get("Authorization"):
                    self.rejected += 1
                self.challenged += 1
            req.send_response(401)
            req.send_header(
                "WWW-Authenticate",
                f'Digest realm="{REALM}", qop="auth", nonce="{self.nonce}", algorithm=MD5',
            )
            req.send_header("Content-Length", "0")
            req.end_headers()
            return
        with self._lock:
            body = self.jpeg
            self.served += 1
        req.send_response(200)
        req.send_header("Content-Type", "image/jpeg")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
