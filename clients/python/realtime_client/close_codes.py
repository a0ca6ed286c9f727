"""WebSocket close codes of the wire contract (docs/protocol.md), as named constants."""

from __future__ import annotations

from typing import Final

WS_1000_NORMAL_CLOSURE: Final = 1000
WS_1006_ABNORMAL_CLOSURE: Final = 1006  # the TCP connection ended without a close frame
WS_1009_MESSAGE_TOO_BIG: Final = 1009
WS_1011_INTERNAL_ERROR: Final = 1011
WS_1012_SERVICE_RESTART: Final = 1012  # the instance is draining: reconnect elsewhere at once
WS_1013_TRY_AGAIN_LATER: Final = 1013  # connects shed: reason ``retry_after_ms=<N>`` when given
WS_4008_SLOW_CONSUMER: Final = 4008  # the client read too slowly: reconnect and resume
WS_4401_UNAUTHORIZED: Final = 4401  # missing, invalid, revoked or expired token
WS_4403_FORBIDDEN: Final = 4403  # ``user_id`` does not match the token: never retried
WS_4429_TOO_MANY: Final = 4429  # too many sockets for this user, or sustained flooding
