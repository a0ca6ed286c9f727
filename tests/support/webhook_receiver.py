"""A webhook receiver for tests: a small HTTP server on 127.0.0.1 that checks signatures.

It records every call it answered and every event id it accepted, counts duplicates, and
can be told to answer an error status, to hold calls unanswered (``hang``), or to be down
(its port closed, then opened again on the same port).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from webhooks.signing import SIGNATURE_HEADER, signature_valid


@dataclass
class Call:
    batch: dict[str, Any]
    status: int
    client_port: int


@dataclass
class WebhookReceiver:
    secret: str
    status: int = 200
    hang: bool = False
    calls: list[Call] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                header = self.headers.get(SIGNATURE_HEADER, "")
                status = receiver._answer(body, header, self.headers, self.client_address[1])
                if status is None:
                    return  # hung up without an answer
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def _answer(self, body: bytes, header: str, headers: Any, port: int) -> int | None:
        if not signature_valid(body=body, secret=self.secret, header=header):
            with self._lock:
                self.bad_signatures += 1
            return 401
        assert headers.get("Content-Type") == "application/json"
        batch = json.loads(body)
        if self.hang:
            with self._lock:
                self.calls.append(Call(batch, 0, port))
            self._release.wait(30)
            return None
        with self._lock:
            status = self.status
            self.calls.append(Call(batch, status, port))
            if 200 <= status < 300:
                self.accepted.extend(batch["events"])
        return status

    def stop(self) -> None:
        """Down: the port is closed (connection refused) until ``start()`` again."""
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._release = threading.Event()

    def unhang(self) -> None:
        self.hang = False
        self._release.set()

    # -- what arrived ---------------------------------------------------------------------

    def accepted_ids(self) -> set[str]:
        with self._lock:
            return {event["id"] for event in self.accepted}

    def duplicates(self) -> int:
        with self._lock:
            return sum(n - 1 for n in Counter(e["id"] for e in self.accepted).values())

    def accepted_events(self, name: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.accepted if name is None or e["name"] == name]
