"""WebSocket close codes of the wire contract (docs/protocol.md)."""

from __future__ import annotations

from typing import Final

WS_1000_NORMAL_CLOSURE: Final = 1000
WS_1001_GOING_AWAY: Final = 1001  # the client went away
WS_1009_MESSAGE_TOO_BIG: Final = 1009
WS_1011_INTERNAL_ERROR: Final = 1011
WS_1012_SERVICE_RESTART: Final = 1012  # the instance is draining: reconnect elsewhere
WS_1013_TRY_AGAIN_LATER: Final = 1013  # too many connects at once: retry after a backoff
WS_4008_SLOW_CONSUMER: Final = 4008  # its queue overflowed: reconnect and resume
WS_4401_UNAUTHORIZED: Final = 4401  # missing or invalid token
WS_4403_FORBIDDEN: Final = 4403  # user_id does not match the token
WS_4429_TOO_MANY: Final = 4429  # too many sockets for this user, or sustained flooding
