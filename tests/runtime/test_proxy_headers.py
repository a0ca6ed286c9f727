"""Which address a request gets behind a proxy (realtime_project/runtime/proxy_headers.py)."""

from __future__ import annotations

from typing import Any

import pytest

from realtime_project.runtime.asgi_types import Receive, Scope, Send
from realtime_project.runtime.proxy_headers import proxy_headers


async def _seen(scope: Scope) -> Scope:
    seen: list[Scope] = []

    async def app(inner: Scope, receive: Receive, send: Send) -> None:
        seen.append(inner)

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: Any) -> None:
        return None

    await proxy_headers(app)(scope, receive, send)
    return seen[0]


def _scope(peer: str, *headers: tuple[str, str], kind: str = "websocket") -> Scope:
    return {
        "type": kind,
        "client": [peer, 50000],
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
    }


@pytest.fixture(autouse=True)
def _trusted(settings: Any) -> None:
    settings.REALTIME = {**settings.REALTIME, "TRUSTED_PROXIES": ["127.0.0.1", "10.1.0.0/16"]}


async def test_a_trusted_proxy_gives_the_address_it_appended_not_the_clients_claim() -> None:
    # HAProxy's option forwardfor adds its own header line after the client's.
    scope = _scope(
        "127.0.0.1", ("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "198.51.100.4")
    )
    assert (await _seen(scope))["client"] == ("198.51.100.4", 0)


async def test_trusted_hops_are_skipped_from_the_right() -> None:
    scope = _scope("127.0.0.1", ("X-Forwarded-For", "203.0.113.7, 198.51.100.4, 10.1.2.3"))
    assert (await _seen(scope))["client"] == ("198.51.100.4", 0)


async def test_an_untrusted_peer_keeps_its_own_address_whatever_it_sends() -> None:
    scope = _scope("192.0.2.9", ("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https"))
    seen = await _seen(scope)
    assert seen["client"] == ["192.0.2.9", 50000]
    assert "scheme" not in seen


async def test_no_header_from_a_trusted_proxy_keeps_the_peer() -> None:
    assert (await _seen(_scope("127.0.0.1")))["client"] == ["127.0.0.1", 50000]


async def test_forwarded_proto_sets_the_scheme_from_a_trusted_proxy() -> None:
    http = _scope("10.1.0.5", ("X-Forwarded-Proto", "https"), kind="http")
    ws = _scope("10.1.0.5", ("X-Forwarded-Proto", "https"))
    assert (await _seen(http))["scheme"] == "https"
    assert (await _seen(ws))["scheme"] == "wss"
