"""Structured log lines: ``key=value`` (or JSON), each carrying the instance id. See
docs/operations.md.

Code logs an event as ``logger.info("socket closed", extra={"fields": {"event":
"ws_disconnect", "connection_id": cid, "user_id": uid, "close_code": code}})`` (or
``log_event(logger, "ws_disconnect", ...)``). The formatter also scrubs anything shaped like a
credential (``token=...``) from every line, whoever wrote it, so a query string that reaches a
log by accident does not carry its token with it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

# ``token=<value>`` in a query string, a header or a repr; also ``Token <key>`` headers.
_SECRETS = re.compile(
    r"(?i)(token=|token%3d|authorization:\s*token\s+|\"token\":\s*\")[^&\s\"',;]+"
)
_REDACTED = "[redacted]"
_BARE = re.compile(r"^[A-Za-z0-9_.:/@+-]+$")
# Attributes every LogRecord has; anything else was passed through ``extra``.
_RECORD_KEYS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "instance_id"}


def redact(text: str) -> str:
    return _SECRETS.sub(lambda m: m.group(1) + _REDACTED, text)


def _instance_id() -> str:
    try:
        from realtime_project.conf import realtime_settings

        return realtime_settings.INSTANCE_ID
    except Exception:  # settings not configured yet (early start-up)
        return "-"


class InstanceFilter(logging.Filter):
    """Adds ``instance_id`` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "instance_id"):
            record.instance_id = _instance_id()
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    given = getattr(record, "fields", None)
    if isinstance(given, dict):
        fields.update(given)
    for key, value in vars(record).items():
        if key not in _RECORD_KEYS and key != "fields":
            fields.setdefault(key, value)
    return fields


def _kv_value(value: Any) -> str:
    text = "" if value is None else redact(str(value))
    if text and _BARE.match(text):
        return text
    return json.dumps(text)


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=... logger=... instance_id=... msg="..." key=value ...`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        parts = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "instance_id": getattr(record, "instance_id", None) or _instance_id(),
            "msg": redact(record.getMessage()),
        }
        line = " ".join(f"{k}={_kv_value(v)}" for k, v in parts.items())
        extra = " ".join(f"{k}={_kv_value(v)}" for k, v in _fields(record).items())
        if extra:
            line = f"{line} {extra}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines that parse JSON."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "instance_id": getattr(record, "instance_id", None) or _instance_id(),
            "msg": redact(record.getMessage()),
        }
        for key, value in _fields(record).items():
            payload.setdefault(key, redact(value) if isinstance(value, str) else value)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(payload, default=str))


def log_event(
    logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields: Any
) -> None:
    """Log one structured event: ``log_event(logger, "ws_connect", connection_id=..., ...)``."""
    logger.log(level, event.replace("_", " "), extra={"fields": {"event": event, **fields}})
