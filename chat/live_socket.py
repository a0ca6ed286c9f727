"""What every live socket of a user does, whatever carries its frames (docs/sse.md).

A WebSocket (``chat.consumers``) and an event stream (``chat.stream``) are the same thing to
the rest of the system: a connection in the registry that makes its user online, counts
toward ``MAX_SOCKETS_PER_USER``, follows the user's conversations through its delivery
cursors (``chat.delivery``), is healed, obeys membership control and revocation, and is
closed by a drain or a rebalance. ``LiveSocketMixin`` is that common part; a transport
provides four things: how to accept, how to refuse with a code, how to send one frame, and
how to end the connection from the server side.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine
from typing import Any

from channels.consumer import get_handler_name

from accounts.authority import SocketAuthorityMixin
from chat import events, metrics, selectors
from chat.dedup import SeenIds, socket_seen_ids
from chat.delivery import DeliveryMixin, Positions
from chat.event_types import ConnectedEvent, event_frame
from chat.healing import healing_register, healing_unregister
from chat.layer_messages import SOCKET_VERSIONS, RealtimeJoin
from connections import metrics as connections_metrics
from connections.control import control_audible, user_group
from connections.instance import instance_id, instance_start
from connections.layer_messages import ChannelOverflow, ConnectionClose, layer_message_readable
from connections.lifecycle import drain_is_active
from connections.registry import SocketLimitReached
from connections.sockets import local_sockets
from presence.services import presence_admit, presence_disconnect, presence_mark_online_soon
from realtime_layer import RealtimeChannelLayer
from realtime_project.close_codes import (
    WS_1000_NORMAL_CLOSURE,
    WS_1011_INTERNAL_ERROR,
    WS_1012_SERVICE_RESTART,
    WS_4008_SLOW_CONSUMER,
    WS_4401_UNAUTHORIZED,
    WS_4429_TOO_MANY,
)
from realtime_project.conf import realtime_settings
from realtime_project.database import database_async
from realtime_project.runtime.logging import log_event

logger = logging.getLogger(__name__)

# How long a database confirmation of membership lets typing through to a socket while the
# layer is degraded (``LiveSocketMixin.typing_receivable``).
MEMBERSHIP_CONFIRM_SECONDS = 1.0

# Clean-ups of connects cut short, referenced until they finish.
_background: set[asyncio.Future[None]] = set()


def _in_background(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(work)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def connection_metadata(scope: dict[str, Any]) -> dict[str, str]:
    client = scope.get("client") or ("", 0)
    return {"user_agent": _header(scope, b"user-agent")[:256], "address": str(client[0] or "")}


class LiveSocketMixin(DeliveryMixin, SocketAuthorityMixin):
    """One live connection of a user; see the module docstring.

    The consumer calls ``live_init()`` from ``__init__``, ``live_connect()`` when the client
    arrives and ``live_disconnect(code)`` when it is gone; layer messages reach the handlers
    below (and ``DeliveryMixin.realtime_event``) through ``dispatch``, each read through its
    declared type (``chat.layer_messages``, ``connections.layer_messages``).
    """

    scope: Any
    channel_layer: Any
    channel_name: str
    user_id: str
    connection_id: str
    # The name of this transport in logs ("ws", "sse").
    transport_name = "ws"

    def live_init(self) -> None:
        # Known at connect; set here so that every consumer's attributes stay in its class's
        # shared table (realtime_project.runtime.dispatch.LeanDispatchMixin.__init__).
        self.user_id = ""
        self.connection_id = ""
        self.authority_init()
        self.registered = False
        self.closing = False
        # The conversations this socket follows, each with its delivery cursor: the socket's
        # authority too (frames and events of any other conversation are refused).
        self.positions = Positions()
        self.removed_at: dict[str, int] = {}
        # Set at connect (chat.dedup says when a socket needs a memory of its own).
        self.seen: SeenIds | None = None
        # While the layer is degraded: when the database last confirmed this socket's
        # participation in a conversation (monotonic), for the typing it receives. ``None``
        # the rest of the time, so an idle socket carries no dict.
        self.confirmed_at: dict[str, float] | None = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Run the handler for ``message`` without Channels' per-message thread hop.

        Channels awaits ``aclose_old_connections()`` (a ``sync_to_async`` call) before every
        handler, so every frame and every delivered event of every socket queued for the one
        thread-sensitive executor thread: measured, it capped an instance at a few hundred
        deliveries a second with the CPU half idle (docs/benchmarks.md). Every database call
        of a live socket goes through ``realtime_project.database.database_async``, which
        closes stale connections around itself on its own thread, so the hop bought nothing.

        A layer message of a version newer than this release reads (``chat.layer_messages``)
        is counted, logged and dropped here: the socket stays open and reads what follows.
        """
        if not layer_message_readable(message, SOCKET_VERSIONS):
            return
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # -- what a transport provides -----------------------------------------------------------

    async def transport_accept(self) -> None:
        raise NotImplementedError

    async def transport_refuse(self, code: int) -> None:
        """Tell the client it may not connect, and why (``code``: a WebSocket close code)."""
        raise NotImplementedError

    async def transport_send(self, frame: dict[str, Any]) -> None:
        raise NotImplementedError

    async def transport_close(self, code: int) -> None:
        raise NotImplementedError

    async def live_before_accept(self) -> None:
        """The socket follows its conversations and nothing was sent yet (a transport's hook)."""

    # -- lifecycle -------------------------------------------------------------------------

    async def live_connect(self) -> bool:
        """Set up the socket, then send ``connected``; False if it was refused. Admission
        (``accounts.admission``) already happened in front of the application."""
        try:
            return await self._live_connect()
        except asyncio.CancelledError:
            # Daphne kills an application that outlived its client by 10 s, connects still
            # queued included; no disconnect handler runs then, so what this connect
            # registered is undone here (presence undoes a registration cut short itself).
            if self.registered:
                _in_background(self.live_disconnect(WS_1011_INTERNAL_ERROR))
            raise

    async def _live_connect(self) -> bool:
        user = self.scope.get("user")
        code = self.scope.get("auth_close_code")
        if code is None and (user is None or not user.is_authenticated):
            code = WS_4401_UNAUTHORIZED
        if code is not None:
            await self.refuse(code)
            return False
        self.user_id = str(user.pk)
        self.connection_id = uuid.uuid4().hex
        self.seen = socket_seen_ids(self.channel_layer)
        if drain_is_active():
            # The load balancer has not noticed the drain yet: send the client elsewhere.
            await self.refuse(WS_1012_SERVICE_RESTART)
            return False
        await instance_start()
        metadata = connection_metadata(self.scope)
        try:
            # The limit is checked and the socket registered in one atomic step across every
            # instance (docs/registry.md): 40 sockets racing with a limit of 20 admit 20.
            await presence_admit(
                user_id=self.user_id,
                connection_id=self.connection_id,
                # A stream says so; a WebSocket's entry stays as it always was.
                metadata=metadata
                if self.transport_name == "ws"
                else {**metadata, "transport": self.transport_name},
                max_sockets=realtime_settings.MAX_SOCKETS_PER_USER,
            )
        except SocketLimitReached:
            await self.refuse(WS_4429_TOO_MANY)
            return False
        except Exception:
            # The registry degrades on its own when Redis fails; a bug there must still not
            # cost the user their socket.
            logger.exception("presence_admit failed for user=%s", self.user_id)
        self.registered = True

        positions = await selectors.conversation_positions_for_user_async(user_id=self.user_id)
        if isinstance(self.channel_layer, RealtimeChannelLayer):
            # Overflow closes this socket (4008) instead of dropping a durable event from it.
            self.channel_layer.set_overflow_policy(self.channel_name, "close")
        await self.channel_layer.group_add(user_group(self.user_id), self.channel_name)
        # From here a revocation reaches this socket; its token's expiry closes it too.
        self.authority_start()
        for conversation_id, seq in positions.items():
            await self._join(conversation_id, seq)
        healing_register(self)
        await self.live_before_accept()
        await self.transport_accept()
        # Off the connect's path (a storm's connects would each wait on the store); presence
        # degrades on its own when Firestore fails.
        presence_mark_online_soon(user_id=self.user_id)
        local_sockets.add(self)
        connections_metrics.connection_opened()
        log_event(
            logger,
            f"{self.transport_name}_connect",
            connection_id=self.connection_id,
            user_id=self.user_id,
            address=metadata["address"],
        )
        await self.send_frame(
            event_frame(
                ConnectedEvent(
                    connection_id=self.connection_id,
                    instance_id=instance_id(),
                    user_id=self.user_id,
                    heartbeat_interval=realtime_settings.HEARTBEAT_INTERVAL_SECONDS,
                )
            )
        )
        return True

    async def refuse(self, code: int) -> None:
        connections_metrics.connection_rejected(code)
        log_event(
            logger,
            f"{self.transport_name}_refused",
            close_code=code,
            user_id=getattr(self, "user_id", None),
        )
        await self.transport_refuse(code)

    async def live_disconnect(self, code: int) -> None:
        """Undo everything connect did; safe to call more than once."""
        self.authority_stop()
        if not self.registered:
            return
        self.registered = False
        local_sockets.discard(self)
        connections_metrics.connection_closed(code)
        log_event(
            logger,
            f"{self.transport_name}_disconnect",
            connection_id=self.connection_id,
            user_id=self.user_id,
            close_code=code,
        )
        await self.live_before_leave()
        healing_unregister(self)
        layer = self.channel_layer
        await layer.group_discard(user_group(self.user_id), self.channel_name)
        for conversation_id in list(self.positions.cursors):
            await layer.group_discard(events.conversation_group(conversation_id), self.channel_name)
        try:
            await presence_disconnect(user_id=self.user_id, connection_id=self.connection_id)
        except Exception:
            logger.exception("presence_disconnect failed for user=%s", self.user_id)

    async def live_before_leave(self) -> None:
        """The socket is going; it still follows its conversations (a transport's hook)."""

    async def server_close(self, *, code: int) -> None:
        """Close from the server side (drain, flood, limits, revocation)."""
        if self.closing:
            return
        self.closing = True
        await self.transport_close(code)

    async def send_frame(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "error":
            metrics.frame_error(str(frame.get("code")))
        if not self.closing:
            await self.transport_send(frame)

    async def _join(self, conversation_id: str, seq: int) -> None:
        """Follow a conversation from ``seq`` on (what came before is not owed to this socket)."""
        if self.positions.join(conversation_id, seq):
            await self.channel_layer.group_add(
                events.conversation_group(conversation_id), self.channel_name
            )

    async def _leave(self, conversation_id: str) -> None:
        """Stop following a conversation: no event of it reaches the socket any more."""
        if self.positions.leave(conversation_id):
            await self.channel_layer.group_discard(
                events.conversation_group(conversation_id), self.channel_name
            )

    async def typing_receivable(self, conversation_id: str) -> bool:
        """Typing reaches a socket through its conversation groups. While this instance
        cannot hear membership changes made elsewhere (Redis down), a removed participant
        would go on seeing it until healing delivers the removal: the database decides, at
        most once per ``MEMBERSHIP_CONFIRM_SECONDS`` per conversation (typing arrives in
        bursts, and each is otherwise a query per receiving socket)."""
        if control_audible(self.channel_layer):
            self.confirmed_at = None
            return True
        confirmed = self.confirmed_at if self.confirmed_at is not None else {}
        now = time.monotonic()
        if now - confirmed.get(conversation_id, -MEMBERSHIP_CONFIRM_SECONDS) < (
            MEMBERSHIP_CONFIRM_SECONDS
        ):
            return True
        seq = await database_async(selectors.participant_conversation_seq)(
            conversation_id=conversation_id, user_id=self.user_id
        )
        if seq is None:
            return False  # the removal itself arrives with healing, in seq order
        confirmed[conversation_id] = now
        self.confirmed_at = confirmed
        return True

    # -- channel layer messages --------------------------------------------------------------

    async def realtime_join(self, message: RealtimeJoin) -> None:
        conversation_id = message.get("conversation_id")
        if (
            self.registered
            and isinstance(conversation_id, str)
            and conversation_id
            and conversation_id not in self.removed_at
        ):
            await self._join(conversation_id, int(message.get("seq", 0)))

    async def channel_overflow(self, message: ChannelOverflow) -> None:
        """The layer could not queue an event for this socket: the client reads too slowly.

        Nothing durable is dropped from a socket that stays open, so it does not stay open:
        the client reconnects and resumes from its last ``seq``.
        """
        # The same line as a send that stalled (realtime_project.runtime.daphne): operators
        # (and the stalled-reader tests) see one kind of slow consumer whichever bound hit first.
        log_event(
            logger,
            f"{self.transport_name}_slow_consumer",
            level=logging.WARNING,
            cause="queue_overflow",
            connection_id=getattr(self, "connection_id", None),
        )
        await self.server_close(code=WS_4008_SLOW_CONSUMER)

    async def connection_close(self, message: ConnectionClose) -> None:
        await self.server_close(code=int(message.get("code", WS_1000_NORMAL_CLOSURE)))
