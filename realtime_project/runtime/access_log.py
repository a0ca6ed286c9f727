"""Daphne's access log without secrets (docs/operations.md#logs).

Browsers cannot set headers on a WebSocket, so the token travels as ``?token=`` and Daphne's
access log (on at its default verbosity) would print it with every ``WSCONNECTING`` line.
The log itself is worth keeping, so its request field is passed through the same redaction as
the project's own log lines, whatever command line started Daphne.
"""

from __future__ import annotations

from typing import Any

from realtime_project.runtime.logging import redact


def daphne_access_log_scrub() -> bool:
    """Redact tokens in Daphne's access log entries; idempotent. False without Daphne."""
    try:
        from daphne.access import AccessLogGenerator
    except ImportError:
        return False
    original = AccessLogGenerator.write_entry
    if getattr(original, "redacts_tokens", False):
        return True

    def write_entry(self: Any, host: Any, date: Any, request: str, *args: Any, **kw: Any) -> Any:
        return original(self, host, date, redact(str(request)), *args, **kw)

    write_entry.redacts_tokens = True  # type: ignore[attr-defined]
    AccessLogGenerator.write_entry = write_entry
    return True
