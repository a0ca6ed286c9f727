"""The ASGI callables' types, shared by the project's small ASGI wrappers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Where a middleware leaves its ``PassThrough`` for the consumer to find.
PASS_THROUGH_KEY: Final = "realtime.connect_ticket"


class PassThrough(Protocol):
    """A middleware's wrapper of a connection's ``receive`` and ``send`` that has work to do
    only for a while (the connect gate's ticket, ``accounts.auth.TicketRelease``). The
    consumer asks it after each message, and once it is done holds the server's own
    callables instead: the wrapper then lives no longer than its work."""

    def unwrapped(self) -> tuple[Receive, Send] | None:
        """The server's own ``receive`` and ``send`` once the work is done, else ``None``."""
        ...
