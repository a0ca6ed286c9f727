"""Structured log lines: instance id on every line, fields as key=value, no token ever."""

from __future__ import annotations

import json
import logging

from realtime_project.runtime.logging import (
    InstanceFilter,
    JsonFormatter,
    KeyValueFormatter,
    log_event,
)


def _record(msg: str, *args: object, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("chat.consumers", logging.INFO, __file__, 1, msg, args, None)
    record.fields = fields
    InstanceFilter().filter(record)
    return record


def test_key_value_line_carries_instance_and_connection(settings) -> None:
    settings.REALTIME = {**settings.REALTIME, "INSTANCE_ID": "instance-7"}
    line = KeyValueFormatter().format(
        _record(
            "socket closed",
            event="ws_disconnect",
            connection_id="c-1",
            user_id="42",
            close_code=1012,
        )
    )
    assert "instance_id=instance-7" in line
    assert "level=INFO" in line
    assert 'msg="socket closed"' in line
    assert "event=ws_disconnect connection_id=c-1 user_id=42 close_code=1012" in line
    assert "\n" not in line


def test_json_line_is_one_object(settings) -> None:
    settings.REALTIME = {**settings.REALTIME, "INSTANCE_ID": "instance-7"}
    payload = json.loads(JsonFormatter().format(_record("reaped", event="reap", users=3)))
    assert payload["instance_id"] == "instance-7"
    assert payload["event"] == "reap"
    assert payload["users"] == 3


def test_tokens_are_scrubbed_whoever_logs_them() -> None:
    secret = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
    for formatter in (KeyValueFormatter(), JsonFormatter()):
        for message in (
            f"GET /ws/?token={secret}&user_id=3",
            f"GET /ws/?user_id=3&token={secret}",
            f"headers: Authorization: Token {secret}",
            f'body {{"token": "{secret}"}}',
        ):
            line = formatter.format(_record("%s", message))
            assert secret not in line, line
            assert "[redacted]" in line


def test_log_event_helper(caplog, settings) -> None:
    logger = logging.getLogger("health.test")
    with caplog.at_level(logging.INFO, logger="health.test"):
        log_event(logger, "presence_offline", user_id="7")
    record = caplog.records[-1]
    assert record.fields == {"event": "presence_offline", "user_id": "7"}
    assert "user_id=7" in KeyValueFormatter().format(record)
