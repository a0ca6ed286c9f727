"""What ``realtime_project.runtime.daphne`` changes in Daphne's and autobahn's protocol
classes, checked on the classes themselves, in process (the tripwires on the internals they
rely on are test_daphne_internals.py).

The close reason of ``websocket.close`` reaches the client's close frame (Daphne drops it; a
``1013`` carries the client's retry hint there); autobahn's debug arguments are formatted
only when a line is written.
"""

from __future__ import annotations

from typing import Any

from daphne.ws_protocol import WebSocketProtocol

from realtime_project.close_codes import WS_1013_TRY_AGAIN_LATER
from realtime_project.runtime.daphne import (
    AUTOBAHN_LOG_HELPERS,
    CLOSE_REASON_MAX_BYTES,
    LazyLogValue,
    close_reason_bytes,
    daphne_patch,
    upgrade_refusal_set,
)


class _Probe(WebSocketProtocol):  # type: ignore[misc]
    """Daphne's protocol with no connection under it: records the close frames it sends."""

    def __init__(self, state: int) -> None:
        self.state = state
        self.frames: list[tuple[int | None, bytes | None]] = []

    def sendCloseFrame(
        self,
        code: int | None = None,
        reasonUtf8: bytes | None = None,
        isReply: bool = False,
    ) -> None:
        self.frames.append((code, reasonUtf8))

    def serverReject(self) -> None:
        self.frames.append((None, b"rejected"))


def _close(probe: _Probe, message: dict[str, Any]) -> list[tuple[int | None, bytes | None]]:
    probe.handle_reply({"type": "websocket.close", **message})
    return probe.frames


def test_a_close_reason_is_sent_with_its_code() -> None:
    assert daphne_patch()
    probe = _Probe(WebSocketProtocol.STATE_OPEN)
    frames = _close(probe, {"code": WS_1013_TRY_AGAIN_LATER, "reason": "retry_after_ms=1500"})
    assert frames == [(WS_1013_TRY_AGAIN_LATER, b"retry_after_ms=1500")]


def test_a_close_before_accept_is_still_a_refused_handshake() -> None:
    assert daphne_patch()
    probe = _Probe(WebSocketProtocol.STATE_CONNECTING)
    assert _close(probe, {"code": 4401, "reason": "ignored"}) == [(None, b"rejected")]


def test_a_long_reason_is_cut_without_splitting_a_character() -> None:
    cut = close_reason_bytes("é" * 100)
    assert len(cut) <= CLOSE_REASON_MAX_BYTES
    assert cut.decode("utf-8") == "é" * (CLOSE_REASON_MAX_BYTES // 2)


def test_autobahn_debug_arguments_are_formatted_only_when_written() -> None:
    import importlib
    from pprint import pformat

    assert daphne_patch()
    for module_name, names in AUTOBAHN_LOG_HELPERS:
        module = importlib.import_module(module_name)
        for name in names:
            assert isinstance(getattr(module, name)(_Probe), LazyLogValue), (module_name, name)
    protocol = importlib.import_module("autobahn.websocket.protocol")
    config = [("openHandshakeTimeout", 5, "WebSocketServerFactory")]
    lazy = protocol.pformat(config)
    assert f"{lazy}" == str(lazy) == pformat(config)


class _UpgradeRequest:
    """What the patched ``WebRequest.process`` reads of a request, and the replies it makes."""

    def __init__(self, upgrade: bytes | None) -> None:
        from twisted.web.http_headers import Headers

        self.requestHeaders = Headers({b"upgrade": [upgrade]} if upgrade else {})
        self.replies: list[dict[str, Any]] = []

    def handle_reply(self, message: dict[str, Any]) -> None:
        self.replies.append(message)


def test_an_upgrade_the_gate_refuses_is_answered_503_before_any_handshake() -> None:
    from daphne.http_protocol import WebRequest

    assert daphne_patch()
    request = _UpgradeRequest(b"websocket")
    try:
        upgrade_refusal_set(lambda: 2500)
        assert WebRequest.process(request) is None
    finally:
        upgrade_refusal_set(None)
    start, body = request.replies
    assert start["status"] == 503
    assert dict(start["headers"])[b"Retry-After"] == b"3"
    assert dict(start["headers"])[b"X-Retry-After-Ms"] == b"2500"
    assert body == {"type": "http.response.body", "body": b""}
