"""The few REST calls the client makes (the events endpoint, messages while no socket is
open), over the standard library so the package needs nothing but ``websockets``."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from realtime_client.errors import HttpError


def http_base(ws_url: str) -> str:
    """``ws://host:port/ws/`` -> ``http://host:port``: the instance that serves the socket
    serves the API too."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def _call(
    base_url: str,
    method: str,
    path: str,
    token: str,
    body: Mapping[str, Any] | None,
    timeout: float,
    use_proxy: bool,
) -> Any:
    request = urllib.request.Request(
        f"{base_url}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    handlers = [] if use_proxy else [urllib.request.ProxyHandler({})]
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=timeout) as response:
            raw = response.read()
            return json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            detail: Any = json.loads(raw) if raw else None
        except ValueError:
            detail = raw.decode(errors="replace")
        raise HttpError(int(exc.code), detail) from None


async def rest_json(
    base_url: str,
    method: str,
    path: str,
    *,
    token: str,
    body: Mapping[str, Any] | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109 (the call runs in a thread; this bounds it)
    use_proxy: bool = True,
) -> Any:
    """The decoded JSON body of a 2xx answer; ``HttpError`` otherwise, ``OSError`` when the
    server cannot be reached."""
    return await asyncio.to_thread(_call, base_url, method, path, token, body, timeout, use_proxy)
