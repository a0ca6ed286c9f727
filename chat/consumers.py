"""The WebSocket consumer: one socket's lifecycle (docs/protocol.md, docs/events.md).

Connect, delivery, membership, revocation and disconnect are every live socket's
(``chat.live_socket``, shared with the event stream of ``chat.stream``); this module is the
WebSocket transport and the client frames. Client frames are parsed, rate
limited, validated with the REST serializers, authorized, and handed to a service; the socket
gets an ``ack`` or an ``error``, and the service emits the event to everyone else. Events
reach the socket as ``realtime.event`` layer messages; durable ones go through the socket's
cursors (``chat.delivery.DeliveryMixin``: once, in ``seq`` order, gaps filled from the log,
``resume``; docs/delivery.md). Disconnect also ends the socket's typing.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from rest_framework import serializers as drf_serializers
from rest_framework.exceptions import ValidationError

from accounts.authority import TokenRejected
from chat import selectors, services
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
    frame_serialize,
    pong_frame,
)
from chat.live_socket import LiveSocketMixin
from chat.ratelimit import TokenBucket, Verdict
from chat.serializers import (
    MessageFrameSerializer,
    ReadInputSerializer,
    ResumeFrameSerializer,
    TypingFrameSerializer,
)
from chat.typing_state import TypingTimers
from connections.control import control_audible
from connections.registry import get_registry
from presence.serializers import StatusInputSerializer, status_to_dict
from presence.services import (
    presence_set,
)
from realtime_project.close_codes import (
    WS_1009_MESSAGE_TOO_BIG,
    WS_4429_TOO_MANY,
)
from realtime_project.conf import realtime_settings
from realtime_project.database import database_async
from realtime_project.inputs import input_validate
from realtime_project.runtime.dispatch import LeanDispatchMixin

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "internal_error"

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


# Distinct (conversation id, flag) pairs whose validation is remembered: the conversations
# typed in most recently on this instance.
TYPING_FIELDS_CACHED = 1024


@functools.lru_cache(maxsize=TYPING_FIELDS_CACHED, typed=True)
def _typing_fields(conversation_id: str, is_typing: bool) -> tuple[str, bool]:
    """A typing frame's fields as ``TypingFrameSerializer`` validates them, once per pair.

    A typing frame repeats its conversation and flag many times a minute, and validating
    them was the largest cost of the frame's own handling; the serializer stays the one
    definition of a valid frame (a refused pair raises here, and is not remembered)."""
    data = input_validate(
        TypingFrameSerializer, {"conversation_id": conversation_id, "is_typing": is_typing}
    )
    return str(data["conversation_id"]), bool(data["is_typing"])


def _typing_validated(frame: ClientFrame) -> tuple[str, bool]:
    data = frame.data
    conversation_id, is_typing = data.get("conversation_id"), data.get("is_typing")
    # Only the plain shape goes by the remembered pairs: a string, a boolean and no key
    # besides them and the envelope (``type`` is always there). Anything else is the
    # serializer's to judge, field errors and unknown keys alike.
    if (
        type(conversation_id) is str
        and type(is_typing) is bool
        and len(data) == 3 + ("ref" in data)
    ):
        try:
            return _typing_fields(conversation_id, is_typing)
        except ValidationError as exc:
            raise FrameError(INVALID_PAYLOAD, ref=frame.ref, details=exc.detail) from None
    validated = _validated(TypingFrameSerializer, frame)
    return str(validated["conversation_id"]), bool(validated["is_typing"])


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


class ChatConsumer(LeanDispatchMixin, LiveSocketMixin, AsyncWebsocketConsumer):
    """The WebSocket transport of a live socket (``chat.live_socket``), and its client frames."""

    user_id: str
    connection_id: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.live_init()
        self.bucket = TokenBucket(
            rate=realtime_settings.RATE_LIMIT_FRAMES_PER_SECOND,
            burst=realtime_settings.RATE_LIMIT_BURST,
            max_strikes=realtime_settings.RATE_LIMIT_MAX_STRIKES,
        )
        # Made on the first ``typing`` frame: most sockets never send one, and the timers, their
        # dict and the bound method they call back cost each idle socket about 180 B.
        self.typing: TypingTimers | None = None

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Channels' own, without its ``aclose_old_connections()`` hop (see
        ``LiveSocketMixin.dispatch``).

        This consumer joins no ``groups`` of Channels' kind, and a reconnect storm's shed
        sockets each queued for the one thread-sensitive thread on the way out.
        """
        await self.disconnect(message["code"])
        raise StopConsumer()

    # -- the transport -----------------------------------------------------------------------

    async def connect(self) -> None:
        await self.live_connect()

    async def disconnect(self, code: int) -> None:
        await self.live_disconnect(code)

    async def transport_accept(self) -> None:
        await self.accept()

    async def transport_refuse(self, code: int) -> None:
        # Accept first: a refused handshake looks like "server down" to a browser.
        await self.accept()
        await self.server_close(code=code)

    async def transport_send(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=frame_serialize(frame))

    async def transport_close(self, code: int) -> None:
        await self.close(code=code)

    async def live_before_leave(self) -> None:
        if self.typing is None:
            return
        for conversation_id in self.typing.stop_all():
            await self._typing_emit(conversation_id, is_typing=False)

    async def _leave(self, conversation_id: str) -> None:
        typing = self.typing
        if (
            conversation_id in self.positions
            and typing is not None
            and typing.stopped(conversation_id)
        ):
            await self._typing_emit(conversation_id, is_typing=False)
        await super()._leave(conversation_id)

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
        conversation_id, is_typing = _typing_validated(frame)
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
        typing = self.typing
        if typing is None:
            typing = self.typing = TypingTimers(
                timeout_seconds=realtime_settings.TYPING_TIMEOUT_SECONDS,
                on_expire=self._typing_expired,
            )
        if is_typing:
            typing.started(conversation_id)
        else:
            typing.stopped(conversation_id)
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
