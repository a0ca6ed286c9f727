"""What Daphne (autobahn, Twisted) does differently here, applied once per process. docs/health.md.

``daphne_patch()`` (called from ``realtime_project/asgi.py``) changes four things of
Daphne, whatever command line started it:

- **Protocol close codes.** Autobahn accepts only 1000 and 3000-4999 from an application
  (``sendClose``), so ``websocket.close`` with 1012 ("service restart", what a draining
  instance must send) or 1009 ("message too big") raises inside Daphne and the client sees the
  connection drop (1006) instead. RFC 6455 and the IANA registry allow servers to send these
  codes; they go through autobahn's lower-level ``sendCloseFrame``.
- **Oversized frames close with 1009.** Daphne's own cap (``--websocket-max-message-size``,
  1 MiB) makes autobahn *drop* the TCP connection (``failByDrop``), so a 2 MiB frame was
  answered with 1006. Here autobahn sends a 1009 close frame as soon as a frame's header (or a
  fragmented message's running total) exceeds the cap, and discards the rest of the payload
  as it streams in, buffering none of it. Frames between ``WS_MAX_FRAME_BYTES`` and Daphne's
  cap reach the consumer, which closes with 1009 too; the client sees 1009 either way.
- **Back-pressure, and a bound on what one socket buffers.** A client that reads slowly, or
  not at all (its TCP window full), leaves what is sent to it in Twisted's write buffer,
  without limit. Here the application's ``websocket.send`` waits while more than
  ``WS_MAX_BUFFERED_BYTES`` are buffered for that socket, until the buffer drains below the
  bound: a client that reads, however slowly, gets everything (a resume replaying megabytes
  included), and the socket's own queue in the channel layer fills meanwhile (it overflows
  into 4008 if the client stays behind). A buffer that makes no progress for
  ``WS_SEND_STALL_SECONDS`` belongs to a client that stopped reading: the server queues a 4008
  close frame, and autobahn aborts the TCP connection (dropping the buffer) when the client
  has not answered it within its close-handshake timeout (1 s, Daphne leaves autobahn's
  default); the consumer's disconnect handler cleans up either way. Anything written without
  waiting (there is nothing else today) is cut off at four times the bound.
- **No blind proxy headers.** ``--proxy-headers`` makes Daphne believe ``X-Forwarded-For``
  from any peer. That option is turned off here: ``realtime_project.runtime.proxy_headers``
  reads the header, and only from ``TRUSTED_PROXIES``.

It also keeps the running ``Server`` at hand, so that a drain can wait for the application
instances still at work (``daphne_running_applications``) before it stops the reactor: one
stopped under a thread that is about to call back into the event loop (a message's emit
after commit does) leaves that thread waiting forever, and the interpreter waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

from twisted.internet.abstract import FileDescriptor
from twisted.protocols.policies import ProtocolWrapper

from connections.close_codes import WS_1009_MESSAGE_TOO_BIG, WS_4008_SLOW_CONSUMER
from realtime_project.conf import realtime_settings
from realtime_project.runtime.logging import log_event

logger = logging.getLogger(__name__)

# Codes a server may send (RFC 6455 section 7.4.1 and the IANA registry); 1004-1006 and 1015
# are reserved and never go on the wire.
SERVER_CLOSE_CODES: Final = frozenset(
    {1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def transport_buffered_bytes(transport: Any) -> int:
    """Bytes written to ``transport`` and not yet handed to the kernel (0 if unknown)."""
    while isinstance(transport, ProtocolWrapper):
        transport = transport.transport
    if not isinstance(transport, FileDescriptor):
        return 0
    # Twisted keeps two buffers: ``dataBuffer`` (being written, from ``offset``) and the list
    # of later writes (``_tempDataLen`` bytes).
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def _keep_peer(
    headers: Any,
    address_header_name: Any = None,
    port_header_name: Any = None,
    proto_header_name: Any = None,
    original_addr: Any = None,
    original_scheme: Any = None,
) -> tuple[Any, Any]:
    """Daphne's ``parse_x_forwarded_for`` that believes no header: the TCP peer stays."""
    return original_addr, original_scheme


def _max_buffered_bytes() -> int:
    return realtime_settings.WS_MAX_BUFFERED_BYTES


# How often a waiting send looks at its socket's buffer again.
DRAIN_POLL_SECONDS: Final = 0.005
# Only writes that did not wait for the buffer (none today) ever pass the bound by this much.
HARD_LIMIT_FACTOR: Final = 4


async def send_drained(protocol: Any) -> None:
    """Return once ``protocol``'s buffer is under the bound; close 4008 if it stops draining."""
    limit = _max_buffered_bytes()
    buffered = transport_buffered_bytes(protocol.transport)
    if buffered <= limit:
        return
    stall = realtime_settings.WS_SEND_STALL_SECONDS
    lowest, progressed = buffered, time.monotonic()
    while protocol.state == protocol.STATE_OPEN:
        await asyncio.sleep(DRAIN_POLL_SECONDS)
        buffered = transport_buffered_bytes(protocol.transport)
        if buffered <= limit:
            return
        now = time.monotonic()
        if buffered < lowest:
            lowest, progressed = buffered, now
        elif now - progressed > stall:
            slow_consumer_close(protocol, buffered)
            return


_server: Any = None


def daphne_running_applications() -> list[asyncio.Future[Any]]:
    """This process's Daphne application instances that have not finished (none elsewhere)."""
    server = _server
    if server is None:
        return []
    running = []
    for details in list(server.connections.values()):
        instance = details.get("application_instance")
        if instance is not None and not instance.done():
            running.append(instance)
    return running


def daphne_patch() -> bool:
    """Apply every change above to Daphne's protocol, once; False when Daphne is not installed."""
    try:
        from daphne import http_protocol, ws_protocol
        from daphne.server import Server
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:
        return False
    if getattr(WebSocketProtocol, "_realtime_patched", False):
        return True

    http_protocol.parse_x_forwarded_for = _keep_peer
    ws_protocol.parse_x_forwarded_for = _keep_peer
    original_close = WebSocketProtocol.serverClose
    original_send = WebSocketProtocol.serverSend
    original_reply = Server.handle_reply
    original_run = Server.run

    def run(self: Any) -> None:
        global _server
        _server = self
        original_run(self)

    async def handle_reply(self: Any, protocol: Any, message: dict[str, Any]) -> None:
        await original_reply(self, protocol, message)
        if isinstance(protocol, WebSocketProtocol) and message.get("type") == "websocket.send":
            await send_drained(protocol)

    def server_close(self: Any, code: int | None = None) -> None:
        if code in SERVER_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original_close(self, code=code)

    def max_message_size_exceeded(self: Any, msg_size: int, max_msg_size: int, reason: str) -> None:
        # In place of autobahn's _fail_connection, which drops TCP under failByDrop.
        # ``failedByMe`` makes autobahn discard the rest of the frame's payload unbuffered.
        self.failedByMe = True
        self.wasMaxMessagePayloadSizeExceeded = True
        log_event(
            logger,
            "ws_frame_too_big",
            level=logging.WARNING,
            size=msg_size,
            limit=max_msg_size,
        )
        self.sendCloseFrame(code=WS_1009_MESSAGE_TOO_BIG, isReply=False)

    def server_send(self: Any, content: str | bytes, binary: bool = False) -> None:
        if self.state == self.STATE_CLOSING or self.state == self.STATE_CLOSED:
            # Closing (a 4008 queued, or any close): nothing more goes into the buffer.
            return
        original_send(self, content, binary)
        buffered = transport_buffered_bytes(self.transport)
        if buffered > HARD_LIMIT_FACTOR * _max_buffered_bytes() and self.state == self.STATE_OPEN:
            slow_consumer_close(self, buffered)

    Server.handle_reply = handle_reply
    Server.run = run
    WebSocketProtocol.serverClose = server_close
    WebSocketProtocol.serverSend = server_send
    WebSocketProtocol._max_message_size_exceeded = max_message_size_exceeded
    WebSocketProtocol._realtime_patched = True
    return True


def slow_consumer_close(protocol: Any, buffered: int) -> None:
    """Queue a 4008 close behind what is buffered; autobahn aborts TCP if it is not answered."""
    log_event(
        logger,
        "ws_slow_consumer",
        level=logging.WARNING,
        buffered_bytes=buffered,
        limit=_max_buffered_bytes(),
        client=":".join(str(p) for p in protocol.client_addr) if protocol.client_addr else None,
    )
    protocol.sendCloseFrame(code=WS_4008_SLOW_CONSUMER, isReply=False)
