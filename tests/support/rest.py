"""REST calls from tests to instances and the balancer, with a user's token."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any


def rest_call(
    base_url: str,
    method: str,
    path: str,
    *,
    token: str,
    body: Mapping[str, Any] | None = None,
    timeout: float = 5.0,
) -> tuple[int, Any]:
    """One REST call: ``(status, decoded body)``; an HTTP error status is returned, not
    raised (a refused connection raises ``OSError``)."""
    request = urllib.request.Request(
        f"{base_url}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return int(response.status), json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return int(exc.code), json.loads(raw) if raw else None
        except ValueError:
            return int(exc.code), raw.decode(errors="replace")
