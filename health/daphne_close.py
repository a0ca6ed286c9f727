"""Let Daphne close a WebSocket with the protocol's own codes (1012, 1009, ...).

See docs/health.md. Autobahn, under Daphne, accepts only 1000 and 3000-4999 from an
application (``sendClose``), so ``websocket.close`` with 1012 ("service restart", what a
draining instance must send) or 1009 ("message too big") raises inside Daphne and the client
sees the connection drop (1006) instead. RFC 6455 and the IANA registry allow servers to send
these codes; we send them through autobahn's lower-level ``sendCloseFrame``.
"""

from __future__ import annotations

import logging
from typing import Any, Final

logger = logging.getLogger(__name__)

# Codes a server may send (RFC 6455 section 7.4.1 and the IANA registry); 1004-1006 and 1015
# are reserved and never go on the wire.
SERVER_CLOSE_CODES: Final = frozenset(
    {1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def daphne_allow_protocol_close_codes() -> bool:
    """Patch Daphne's ``serverClose`` once; False when Daphne is not installed."""
    try:
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:
        return False
    if getattr(WebSocketProtocol.serverClose, "_realtime_patched", False):
        return True
    original = WebSocketProtocol.serverClose

    def server_close(self: Any, code: int | None = None) -> None:
        if code in SERVER_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original(self, code=code)

    server_close._realtime_patched = True  # type: ignore[attr-defined]
    WebSocketProtocol.serverClose = server_close
    return True
