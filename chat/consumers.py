"""The WebSocket consumer: one socket's lifecycle (docs/protocol.md, docs/events.md).

Connect: authenticate, register the connection (registry + presence), join ``user.<id>`` and
one ``conv.<id>`` per conversation, send ``connected``. Client frames are parsed, rate
limited, validated with the REST serializers, authorized, and handed to a service; the socket
gets an ``ack`` or an ``error``, and the service emits the event to everyone else. Events
reach the socket as ``realtime.event`` layer messages; durable ones go through the socket's
cursors (``chat.delivery.DeliveryMixin``: once, in ``seq`` order, gaps filled from the log,
``resume``; docs/delivery.md). Disconnect undoes everything connect did and ends the
socket's typing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from rest_framework import serializers as drf_serializers
from rest_framework.exceptions import ValidationError

from chat import events, selectors, services
from chat.dedup import SeenIds, socket_seen_ids
from chat.delivery import DeliveryMixin, Positions
from chat.event_types import ConnectedEvent, event_frame
from chat.frames import (
    ENVELOPE_KEYS,
    INVALID_JSON,
    INVALID_PAYLOAD,
    NOT_FOUND,
    NOT_PARTICIPANT,
    RATE_LIMITED,
    UNKNOWN_TYPE,
    ClientFrame,
    FrameError,
    ack_frame,
    error_frame,
    frame_parse,
    pong_frame,
)
from chat.healing import healing_register, healing_unregister
from chat.ratelimit import TokenBucket, Verdict
from chat.serializers import (
    MessageFrameSerializer,
    ReadInputSerializer,
    ResumeFrameSerializer,
    TypingFrameSerializer,
)
from chat.typing_state import TypingTimers
from connections.authority import SocketAuthorityMixin, TokenRejected
from connections.close_codes import (
    WS_1000_NORMAL_CLOSURE,
    WS_1009_MESSAGE_TOO_BIG,
    WS_1011_INTERNAL_ERROR,
    WS_1012_SERVICE_RESTART,
    WS_4008_SLOW_CONSUMER,
    WS_4401_UNAUTHORIZED,
    WS_4429_TOO_MANY,
)
from connections.control import control_audible, user_group
from connections.database import database_async
from connections.instance import instance_id, instance_start
from connections.lifecycle import drain_is_active
from connections.registry import SocketLimitReached, get_registry
from connections.sockets import local_sockets
from health import metrics
from presence.serializers import StatusInputSerializer, status_to_dict
from presence.services import (
    presence_admit,
    presence_disconnect,
    presence_mark_online_soon,
    presence_set,
)
from realtime_layer import RealtimeChannelLayer
from realtime_project.conf import realtime_settings
from realtime_project.inputs import input_validate
from realtime_project.runtime.logging import log_event

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "internal_error"
# How long a database confirmation of membership lets typing through to a socket while the
# layer is degraded (``ChatConsumer.typing_receivable``).
MEMBERSHIP_CONFIRM_SECONDS = 1.0

Handler = Callable[[ClientFrame], Awaitable[dict[str, Any]]]
# Client frame type -> handler method; one table for every socket (a per-socket dict of
# bound methods cost each idle socket about 1 KiB).
FRAME_HANDLERS: dict[str, str] = {
    "ping": "on_ping",
    "typing": "on_typing",
    "read": "on_read",
    "status": "on_status",
    "message": "on_message",
    "auth": "on_auth",
    "resume": "on_resume",
}


def _validated(serializer_class: type[drf_serializers.Serializer[Any]], frame: ClientFrame) -> Any:
    """A frame's fields, validated exactly as the REST twin's body (unknown keys refused)."""
    try:
        return input_validate(serializer_class, frame.data, envelope=ENVELOPE_KEYS)
    except ValidationError as exc:
        raise FrameError(INVALID_PAYLOAD, ref=frame.ref, details=exc.detail) from None


def _conversation_for(*, conversation_id: object, user_id: str, ref: str | None) -> Any:
    """The conversation, or the ``error`` a non-participant gets (as REST's 404/403)."""
    try:
        return selectors.conversation_get_for_participant(
            conversation_id=conversation_id, user_id=user_id
        )
    except selectors.ConversationNotFound:
        raise FrameError(NOT_FOUND, ref=ref) from None
    except selectors.NotParticipant:
        raise FrameError(NOT_PARTICIPANT, ref=ref) from None


def _service_call(ref: str | None, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except ValidationError as exc:
        raise FrameError(INVALID_PAYLOAD, ref=ref, details=exc.detail) from None
    except selectors.NotParticipant:  # removed between the check and the write
        raise FrameError(NOT_PARTICIPANT, ref=ref) from None


@database_async
def _participant_seq(*, conversation_id: str, user_id: str, ref: str | None) -> int:
    """The conversation's ``last_seq`` for a participant; the ``error`` for anyone else."""
    seq = selectors.participant_conversation_seq(conversation_id=conversation_id, user_id=user_id)
    if seq is None:
        _conversation_for(conversation_id=conversation_id, user_id=user_id, ref=ref)
        raise FrameError(NOT_PARTICIPANT, ref=ref)  # it joined and left in between
    return seq


@database_async
def _read_mark(
    *, user_id: str, data: dict[str, Any], origin_channel: str, ref: str | None
) -> dict[str, Any]:
    conversation = _conversation_for(
        conversation_id=data["conversation_id"], user_id=user_id, ref=ref
    )
    result: dict[str, Any] = _service_call(
        ref,
        lambda: services.receipt_mark_read(
            conversation=conversation,
            user_id=user_id,
            message_ids=data["message_ids"],
            origin_channel=origin_channel,
        ),
    )
    return result


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


# Clean-ups of connects cut short, referenced until they finish.
_background: set[asyncio.Future[None]] = set()


def _in_background(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(work)
    _background.add(task)
    task.add_done_callback(_background.discard)


def connection_metadata(scope: dict[str, Any]) -> dict[str, str]:
    client = scope.get("client") or ("", 0)
    return {"user_agent": _header(scope, b"user-agent")[:256], "address": str(client[0] or "")}


class ChatConsumer(DeliveryMixin, SocketAuthorityMixin, AsyncWebsocketConsumer):
    user_id: str
    connection_id: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.registered = False
        self.closing = False
        # The conversations this socket follows, each with its delivery cursor: the socket's
        # authority too (frames and events of any other conversation are refused).
        self.positions = Positions()
        # The seq of each removal this socket applied: an older "added" that healing or a
        # late delivery brings afterwards must not bring the conversation back.
        self.removed_at: dict[str, int] = {}
        # Set at connect (chat.dedup says when a socket needs a memory of its own).
        self.seen: SeenIds | None = None
        self.bucket = TokenBucket(
            rate=realtime_settings.RATE_LIMIT_FRAMES_PER_SECOND,
            burst=realtime_settings.RATE_LIMIT_BURST,
            max_strikes=realtime_settings.RATE_LIMIT_MAX_STRIKES,
        )
        self.typing = TypingTimers(
            timeout_seconds=realtime_settings.TYPING_TIMEOUT_SECONDS,
            on_expire=self._typing_expired,
        )
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
        of this consumer goes through ``connections.database.database_async``, which closes
        stale connections around itself on its own thread, so the hop bought nothing here.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Channels' own, without its ``aclose_old_connections()`` hop (see ``dispatch``).

        This consumer joins no ``groups`` of Channels' kind, and a reconnect storm's shed
        sockets each queued for the one thread-sensitive thread on the way out.
        """
        await self.disconnect(message["code"])
        raise StopConsumer()

    # -- lifecycle -------------------------------------------------------------------------

    async def connect(self) -> None:
        # Admission (connections.admission) already happened in the shedding middleware.
        try:
            await self._connect()
        except asyncio.CancelledError:
            # Daphne kills an application that outlived its client by 10 s, connects still
            # queued included; no disconnect handler runs then, so what this connect
            # registered is undone here (presence undoes a registration cut short itself).
            if self.registered:
                _in_background(self.disconnect(WS_1011_INTERNAL_ERROR))
            raise

    async def _connect(self) -> None:
        user = self.scope.get("user")
        code = self.scope.get("auth_close_code")
        if code is None and (user is None or not user.is_authenticated):
            code = WS_4401_UNAUTHORIZED
        if code is not None:
            # Accept first: a refused handshake looks like "server down" to a browser.
            await self.refuse(code)
            return
        self.user_id = str(user.pk)
        self.connection_id = uuid.uuid4().hex
        self.seen = socket_seen_ids(self.channel_layer)
        if drain_is_active():
            # The load balancer has not noticed the drain yet: send the client elsewhere.
            await self.refuse(WS_1012_SERVICE_RESTART)
            return
        await instance_start()
        metadata = connection_metadata(self.scope)
        try:
            # The limit is checked and the socket registered in one atomic step across every
            # instance (docs/registry.md): 40 sockets racing with a limit of 20 admit 20.
            await presence_admit(
                user_id=self.user_id,
                connection_id=self.connection_id,
                metadata=metadata,
                max_sockets=realtime_settings.MAX_SOCKETS_PER_USER,
            )
        except SocketLimitReached:
            await self.refuse(WS_4429_TOO_MANY)
            return
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
        await self.accept()
        # Off the connect's path (a storm's connects would each wait on the store); presence
        # degrades on its own when Firestore fails.
        presence_mark_online_soon(user_id=self.user_id)
        local_sockets.add(self)
        metrics.connection_opened()
        log_event(
            logger,
            "ws_connect",
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

    async def refuse(self, code: int) -> None:
        metrics.connection_rejected(code)
        log_event(logger, "ws_refused", close_code=code, user_id=getattr(self, "user_id", None))
        await self.accept()
        await self.server_close(code=code)

    async def disconnect(self, code: int) -> None:
        self.authority_stop()
        if not self.registered:
            return
        self.registered = False
        local_sockets.discard(self)
        metrics.connection_closed(code)
        log_event(
            logger,
            "ws_disconnect",
            connection_id=self.connection_id,
            user_id=self.user_id,
            close_code=code,
        )
        for conversation_id in self.typing.stop_all():
            await self._typing_emit(conversation_id, is_typing=False)
        healing_unregister(self)
        layer = self.channel_layer
        await layer.group_discard(user_group(self.user_id), self.channel_name)
        for conversation_id in list(self.positions.cursors):
            await layer.group_discard(events.conversation_group(conversation_id), self.channel_name)
        try:
            await presence_disconnect(user_id=self.user_id, connection_id=self.connection_id)
        except Exception:
            logger.exception("presence_disconnect failed for user=%s", self.user_id)

    async def server_close(self, *, code: int) -> None:
        """Close from the server side (drain, flood, limits); cleanup follows on disconnect."""
        if self.closing:
            return
        self.closing = True
        await self.close(code=code)

    async def send_frame(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "error":
            metrics.frame_error(str(frame.get("code")))
        if not self.closing:
            await self.send(text_data=json.dumps(frame, separators=(",", ":")))

    async def _join(self, conversation_id: str, seq: int) -> None:
        """Follow a conversation from ``seq`` on (what came before is not owed to this socket)."""
        if self.positions.join(conversation_id, seq):
            await self.channel_layer.group_add(
                events.conversation_group(conversation_id), self.channel_name
            )

    async def _leave(self, conversation_id: str) -> None:
        """Stop following a conversation: no event of it reaches the socket any more."""
        if self.positions.leave(conversation_id):
            if self.typing.stopped(conversation_id):
                await self._typing_emit(conversation_id, is_typing=False)
            await self.channel_layer.group_discard(
                events.conversation_group(conversation_id), self.channel_name
            )

    # -- client frames -----------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing or not self.registered:
            return
        size = len(text_data.encode("utf-8")) if text_data is not None else len(bytes_data or b"")
        if size > realtime_settings.WS_MAX_FRAME_BYTES:
            await self.server_close(code=WS_1009_MESSAGE_TOO_BIG)
            return
        verdict = self.bucket.take()
        if verdict is Verdict.CLOSE:
            await self.server_close(code=WS_4429_TOO_MANY)
            return
        if verdict is Verdict.REFUSE:
            await self.send_frame(error_frame(RATE_LIMITED))
            return
        try:
            text = text_data if text_data is not None else (bytes_data or b"").decode("utf-8")
        except UnicodeDecodeError:
            await self.send_frame(error_frame(INVALID_JSON))
            return
        await self.handle_text(text)

    async def handle_text(self, text: str) -> None:
        ref: str | None = None
        try:
            frame = frame_parse(text)
            ref = frame.ref
            name = FRAME_HANDLERS.get(frame.type)
            if name is None:
                raise FrameError(UNKNOWN_TYPE, ref=ref)
            handler: Handler = getattr(self, name)
            reply = await handler(frame)
        except FrameError as exc:
            reply = exc.to_frame()
        except Exception:
            # A bug handling one frame must not take the socket (or anyone else's) down.
            logger.exception("frame handling failed for user=%s", self.user_id)
            reply = error_frame(INTERNAL_ERROR, ref=ref, message="Internal error.")
        await self.send_frame(reply)

    async def on_ping(self, frame: ClientFrame) -> dict[str, Any]:
        try:
            await get_registry().touch(connection_id=self.connection_id)
        except Exception:
            logger.exception("registry touch failed for connection=%s", self.connection_id)
        return pong_frame(ref=frame.ref)

    async def on_typing(self, frame: ClientFrame) -> dict[str, Any]:
        data = _validated(TypingFrameSerializer, frame)
        conversation_id = str(data["conversation_id"])
        is_typing = bool(data["is_typing"])
        # Typing is the hottest frame: the groups joined at connect (and on join) already
        # say where the user takes part, so only a stranger costs a database query. While
        # this instance cannot hear membership changes made elsewhere (Redis down), that
        # knowledge may be stale and the database decides.
        if conversation_id not in self.positions:
            seq = await _participant_seq(
                conversation_id=conversation_id, user_id=self.user_id, ref=frame.ref
            )
            await self._join(conversation_id, seq)
        elif not control_audible(self.channel_layer):
            await _participant_seq(
                conversation_id=conversation_id, user_id=self.user_id, ref=frame.ref
            )
        if is_typing:
            self.typing.started(conversation_id)
        else:
            self.typing.stopped(conversation_id)
        result = await self._typing_emit(conversation_id, is_typing=is_typing)
        return ack_frame(ref=frame.ref, result=result)

    async def on_read(self, frame: ClientFrame) -> dict[str, Any]:
        data = _validated(ReadInputSerializer, frame)
        result = await _read_mark(
            user_id=self.user_id, data=data, origin_channel=self.channel_name, ref=frame.ref
        )
        return ack_frame(ref=frame.ref, result=result)

    async def on_status(self, frame: ClientFrame) -> dict[str, Any]:
        data = _validated(StatusInputSerializer, frame)
        state = await presence_set(user_id=self.user_id, status=data["status"])
        return ack_frame(ref=frame.ref, result=status_to_dict(state))

    async def on_message(self, frame: ClientFrame) -> dict[str, Any]:
        data = _validated(MessageFrameSerializer, frame)
        try:
            message = await services.message_send_async(
                conversation_id=data["conversation_id"],
                sender_id=self.user_id,
                body=data["body"],
                client_id=data.get("client_id"),
                origin_channel=self.channel_name,
            )
        except selectors.ConversationNotFound:
            raise FrameError(NOT_FOUND, ref=frame.ref) from None
        except selectors.NotParticipant:
            raise FrameError(NOT_PARTICIPANT, ref=frame.ref) from None
        except selectors.ClientIdInUse:
            raise FrameError(
                INVALID_PAYLOAD, ref=frame.ref, message=selectors.ClientIdInUse.MESSAGE
            ) from None
        return ack_frame(ref=frame.ref, result={"message": message})

    async def on_auth(self, frame: ClientFrame) -> dict[str, Any]:
        try:
            result = await self.authority_swap(frame.data.get("token"))
        except TokenRejected as exc:
            raise FrameError(INVALID_PAYLOAD, ref=frame.ref, message=str(exc)) from None
        return ack_frame(ref=frame.ref, result=result)

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

    async def _typing_emit(self, conversation_id: str, *, is_typing: bool) -> dict[str, Any]:
        return await services.typing_notify_async(
            conversation_id=conversation_id,
            user_id=self.user_id,
            is_typing=is_typing,
            origin_channel=self.channel_name,
        )

    async def _typing_expired(self, conversation_id: str) -> None:
        await self._typing_emit(conversation_id, is_typing=False)

    # -- channel layer messages --------------------------------------------------------------

    async def on_resume(self, frame: ClientFrame) -> dict[str, Any]:
        data = _validated(ResumeFrameSerializer, frame)
        answers = await self.resume(data["positions"])
        return ack_frame(ref=frame.ref, result={"conversations": answers})

    async def realtime_join(self, message: dict[str, Any]) -> None:
        conversation_id = message.get("conversation_id")
        if (
            self.registered
            and isinstance(conversation_id, str)
            and conversation_id
            and conversation_id not in self.removed_at
        ):
            await self._join(conversation_id, int(message.get("seq", 0)))

    async def channel_overflow(self, message: dict[str, Any]) -> None:
        """The layer could not queue an event for this socket: the client reads too slowly.

        Nothing durable is dropped from a socket that stays open, so it does not stay open:
        the client reconnects and resumes from its last ``seq``.
        """
        await self.server_close(code=WS_4008_SLOW_CONSUMER)

    async def connection_close(self, message: dict[str, Any]) -> None:
        await self.server_close(code=int(message.get("code", WS_1000_NORMAL_CLOSURE)))
