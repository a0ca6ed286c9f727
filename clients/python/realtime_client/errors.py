"""Exceptions: the contract's error codes, and what the client itself can report."""

from __future__ import annotations

from typing import Any, Final

# The ``code`` of a server ``error`` frame (docs/protocol.md, "WebSocket frames").
INVALID_JSON: Final = "invalid_json"
UNKNOWN_TYPE: Final = "unknown_type"
INVALID_PAYLOAD: Final = "invalid_payload"
NOT_PARTICIPANT: Final = "not_participant"
NOT_FOUND: Final = "not_found"
RATE_LIMITED: Final = "rate_limited"
SERVER_ERROR_CODES: Final = frozenset(
    {INVALID_JSON, UNKNOWN_TYPE, INVALID_PAYLOAD, NOT_PARTICIPANT, NOT_FOUND, RATE_LIMITED}
)


class RealtimeError(Exception):
    """Base of every error this package raises; ``code`` names what went wrong."""

    code: str = "error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or (code or self.code))
        if code is not None:
            self.code = code


class ServerError(RealtimeError):
    """The server answered a frame with ``error``; ``code`` is one of the contract's codes."""

    def __init__(self, code: str, message: str, *, ref: str | None = None) -> None:
        super().__init__(message, code=code)
        self.ref = ref


class HttpError(RealtimeError):
    """A REST call answered with a non-2xx status."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body!r}", code=f"http_{status}")
        self.status = status
        self.body = body


class NotConnected(RealtimeError):
    """A frame was sent while no socket was open (only messages wait in the outbox)."""

    code = "not_connected"


class ConnectionLost(RealtimeError):
    """The socket closed before the reply came: the frame may or may not have been applied."""

    code = "connection_lost"


class RequestTimeout(RealtimeError):
    code = "timeout"


class ClientClosed(RealtimeError):
    """``Client.close()`` was called (or the client stopped for good) first."""

    code = "closed"


class Unauthorized(ClientClosed):
    """Closed with 4401 and no fresh token could be had: the client stopped."""

    code = "unauthorized"


class Forbidden(ClientClosed):
    """Closed with 4403 (``user_id`` does not match the token): the client stopped."""

    code = "forbidden"


class ProtocolError(RealtimeError):
    """The server sent something the contract does not allow (e.g. no ``connected`` first)."""

    code = "protocol"
