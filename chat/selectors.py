"""Read-only queries of the chat domain."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterable
from typing import Any, NamedTuple

from django.contrib.auth import get_user_model
from django.db.models import Count, Q, QuerySet

from chat.models import Conversation, Event, Message, Participant
from chat.serializers import message_to_dict
from realtime_project.database import (
    BatchedRead,
    CompiledRows,
    database_async,
    database_async_enabled,
    database_async_under_caller,
    database_connection,
    database_rows,
)


class ConversationNotFound(Exception):
    pass


class NotParticipant(Exception):
    pass


class ClientIdInUse(Exception):
    """The sender's ``client_id`` already names a message of another conversation.

    A retry of one send repeats its conversation; a reuse elsewhere is a client bug, and
    answering with the other conversation's message would both hide the new message's loss
    and show one conversation's message through another (docs/protocol.md).
    """

    MESSAGE = "client_id is already used by a message in another conversation"


def _as_uuid(value: object) -> uuid.UUID | None:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        return None


def conversation_get_for_participant(
    *, conversation_id: object, user_id: int | str
) -> Conversation:
    """The conversation, if ``user_id`` takes part in it.

    Raises ``ConversationNotFound`` (404) or ``NotParticipant`` (403); neither says anything
    about the conversation beyond whether it exists.
    """
    pk = _as_uuid(conversation_id)
    if pk is None:
        raise ConversationNotFound
    # One query for the common case (every message and read frame asks this); the second
    # only tells a stranger's 403 from a 404.
    membership = (
        Participant.objects.select_related("conversation")
        .filter(conversation_id=pk, user_id=user_id)
        .first()
    )
    if membership is not None:
        return membership.conversation
    if Conversation.objects.filter(pk=pk).exists():
        raise NotParticipant
    raise ConversationNotFound


def conversation_list_for_user(*, user_id: int | str) -> QuerySet[Conversation]:
    return Conversation.objects.filter(memberships__user_id=user_id).order_by("-created_at", "-id")


def conversation_positions_for_user(*, user_id: int | str) -> dict[str, int]:
    """Each conversation of ``user_id`` with its ``last_seq``: where a new socket starts."""
    return {str(pk): int(last_seq) for pk, last_seq in _positions(user_id)}


def _positions(user_id: int | str) -> QuerySet[Participant, tuple[Any, Any]]:
    return Participant.objects.filter(user_id=user_id).values_list(
        "conversation_id", "conversation__last_seq"
    )


def _user_param(user_id: int | str) -> Any:
    """A user id as the ORM binds it in a query on ``Participant.user``."""
    return Participant._meta.get_field("user").target_field.get_prep_value(user_id)


async def conversation_positions_for_user_async(*, user_id: int | str) -> dict[str, int]:
    """``conversation_positions_for_user`` for a connecting socket: on PostgreSQL read on the
    loop's async connection instead of a thread, one query for the connects arriving
    together (``realtime_project.database.BatchedRead``)."""
    if not database_async_enabled():
        result: dict[str, int] = await database_async(conversation_positions_for_user)(
            user_id=user_id
        )
        return result
    return dict(await _POSITIONS.get(_user_param(user_id)))


async def _positions_read(user_ids: list[Any]) -> dict[Any, dict[str, int]]:
    found: dict[Any, dict[str, int]] = {user_id: {} for user_id in user_ids}
    rows = await database_rows(
        Participant.objects.filter(user_id__in=user_ids).values_list(
            "user_id", "conversation_id", "conversation__last_seq"
        )
    )
    for user_id, pk, last_seq in rows:
        found[user_id][str(pk)] = int(last_seq)
    return found


_POSITIONS: BatchedRead[Any, dict[str, int]] = BatchedRead(_positions_read, missing={})


def conversation_last_seqs(*, conversation_ids: Iterable[str]) -> dict[str, int]:
    pks = [pk for pk in (_as_uuid(cid) for cid in conversation_ids) if pk is not None]
    return {
        str(pk): int(last_seq)
        for pk, last_seq in Conversation.objects.filter(pk__in=pks).values_list("pk", "last_seq")
    }


def memberships_of(*, user_ids: Iterable[str]) -> dict[str, set[str]]:
    """The conversations of each user (one query)."""
    numeric = [int(uid) for uid in user_ids if str(uid).isdigit()]
    result: dict[str, set[str]] = {}
    for uid, cid in Participant.objects.filter(user_id__in=numeric).values_list(
        "user_id", "conversation_id"
    ):
        result.setdefault(str(uid), set()).add(str(cid))
    return result


def member_added_events(*, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], LoggedEvent]:
    """For (user, conversation) pairs, the logged ``member`` event that added the user, if any
    (users who were there from the conversation's start have none)."""
    wanted = set(pairs)
    conversations = {pk for pk in (_as_uuid(cid) for _, cid in wanted) if pk is not None}
    found: dict[tuple[str, str], LoggedEvent] = {}
    rows = (
        Event.objects.filter(conversation_id__in=conversations, type=Event.Type.MEMBER)
        .order_by("seq")
        .values_list("conversation_id", "seq", "frame")
    )
    for pk, seq, frame in rows:
        key = (str(frame.get("user_id")), str(pk))
        if key in wanted and frame.get("action") == "added":
            found[key] = LoggedEvent(int(seq), frame, "")
        elif key in wanted and frame.get("action") == "removed":
            found.pop(key, None)
    return found


def participant_conversation_seq(*, conversation_id: object, user_id: int | str) -> int | None:
    """The conversation's ``last_seq`` if ``user_id`` takes part in it, else ``None``."""
    pk = _as_uuid(conversation_id)
    if pk is None:
        return None
    row = (
        Participant.objects.filter(conversation_id=pk, user_id=user_id)
        .values_list("conversation__last_seq", flat=True)
        .first()
    )
    return None if row is None else int(row)


class LoggedEvent(NamedTuple):
    seq: int
    frame: dict[str, Any]
    origin_channel: str


# (conversation, after, up to): the logged events with after < seq <= up to.
_Range = tuple[uuid.UUID, int, int]


def _ranges_after(
    positions: dict[str, int], limit_per_conversation: int
) -> list[tuple[str, _Range]]:
    """Each conversation of ``positions`` whose id is one, with the range a read owes it: the
    events after its position, one more than the limit (so a caller can tell it is too far
    behind)."""
    return [
        (cid, (pk, after, after + limit_per_conversation + 1))
        for cid, after in positions.items()
        if (pk := _as_uuid(cid)) is not None
    ]


def _events_in(ranges: Iterable[_Range]) -> QuerySet[Event, tuple[Any, ...]] | None:
    """The logged events of every range, in (conversation, seq) order; None for no range."""
    condition = Q()
    for pk, after, up_to in ranges:
        condition |= Q(conversation_id=pk, seq__gt=after, seq__lte=up_to)
    if not condition:
        return None
    return (
        Event.objects.filter(condition)
        .order_by("conversation_id", "seq")
        .values_list("conversation_id", "seq", "frame", "origin_channel")
    )


def _logged(seq: int, frame: Any, origin: str) -> LoggedEvent:
    # The ORM decodes the frame; a raw async read hands over the JSON text.
    return LoggedEvent(int(seq), json.loads(frame) if isinstance(frame, str) else frame, origin)


def events_after(
    *, positions: dict[str, int], limit_per_conversation: int
) -> dict[str, list[LoggedEvent]]:
    """The logged frames after each conversation's position, in ``seq`` order: one query.

    A conversation with more than ``limit_per_conversation`` such events comes back with
    ``limit_per_conversation + 1`` of them, so the caller can tell it is too far behind.
    """
    result: dict[str, list[LoggedEvent]] = {cid: [] for cid in positions}
    query = _events_in(r for _, r in _ranges_after(positions, limit_per_conversation))
    for pk, seq, frame, origin in query if query is not None else ():
        result[str(pk)].append(_logged(seq, frame, origin))
    return result


async def events_after_async(
    *, positions: dict[str, int], limit_per_conversation: int
) -> dict[str, list[LoggedEvent]]:
    """``events_after`` for a socket (a gap, a resume): on PostgreSQL read on the loop's async
    connection instead of a thread, in one query with the other sockets' reads asked
    meanwhile (``realtime_project.database.BatchedRead``: a storm's resumes, a burst's gaps)."""
    if not database_async_enabled():
        result: dict[str, list[LoggedEvent]] = await database_async(events_after)(
            positions=positions, limit_per_conversation=limit_per_conversation
        )
        return result
    found: dict[str, list[LoggedEvent]] = {cid: [] for cid in positions}
    wanted = _ranges_after(positions, limit_per_conversation)
    rows = await asyncio.gather(*(_EVENTS.get(r) for _, r in wanted))
    for (cid, _), entries in zip(wanted, rows, strict=True):
        # Decoded for each socket: a frame is the socket's own to deliver.
        found[cid] = [_logged(*entry) for entry in entries]
    return found


async def _events_read(ranges: list[_Range]) -> dict[_Range, list[tuple[int, Any, str]]]:
    """Every range's events, read by one query over each conversation's widest range."""
    widest: dict[uuid.UUID, tuple[int, int]] = {}
    for pk, after, up_to in ranges:
        low, high = widest.get(pk, (after, up_to))
        widest[pk] = (min(low, after), max(high, up_to))
    query = _events_in((pk, low, high) for pk, (low, high) in widest.items())
    by_conversation: dict[uuid.UUID, list[tuple[int, Any, str]]] = {pk: [] for pk in widest}
    for pk, seq, frame, origin in await database_rows(query) if query is not None else []:
        by_conversation[pk].append((int(seq), frame, origin))
    return {
        (pk, after, up_to): [row for row in by_conversation[pk] if after < row[0] <= up_to]
        for pk, after, up_to in ranges
    }


_EVENTS: BatchedRead[_Range, list[tuple[int, Any, str]]] = BatchedRead(_events_read, missing=[])


def event_list_after(
    *, conversation: Conversation, after_seq: int, limit: int
) -> list[dict[str, Any]]:
    return list(
        Event.objects.filter(conversation=conversation, seq__gt=after_seq)
        .order_by("seq")
        .values_list("frame", flat=True)[:limit]
    )


def message_by_client_id(*, sender_id: int | str, client_id: str) -> Message | None:
    return Message.objects.filter(sender_id=int(sender_id), client_id=client_id).first()


def is_participant(*, conversation_id: uuid.UUID, user_id: int | str) -> bool:
    return Participant.objects.filter(conversation_id=conversation_id, user_id=user_id).exists()


# PostgreSQL, on the event loop's async connections (realtime_project.database): the rare reads
# of chat.services.message_send_async, in the same shapes as their ORM twins above.


async def message_by_client_id_async(
    *, sender_id: int | str, client_id: str
) -> dict[str, Any] | None:
    """The sender's message with ``client_id`` as the wire shows it, or ``None``."""
    fields = ["id", "conversation_id", "sender_id", "body", "created_at", "seq", "client_id"]
    query = (
        f"SELECT {', '.join(fields)} FROM {Message._meta.db_table} "
        f"WHERE sender_id = %s AND client_id = %s"
    )
    async with database_connection() as db:
        row = await (await db.execute(query, [int(sender_id), client_id])).fetchone()
    return None if row is None else message_to_dict(Message.from_db("default", fields, row))


async def conversation_exists_async(*, conversation_id: uuid.UUID) -> bool:
    query = f"SELECT 1 FROM {Conversation._meta.db_table} WHERE id = %s"
    async with database_connection() as db:
        return await (await db.execute(query, [conversation_id])).fetchone() is not None


def users_at_conversation_limit(*, user_ids: Iterable[str], limit: int) -> bool:
    """Whether any of ``user_ids`` already takes part in ``limit`` conversations."""
    numeric = [int(uid) for uid in user_ids if str(uid).isdigit()]
    return (
        Participant.objects.filter(user_id__in=numeric)
        .values("user_id")
        .annotate(n=Count("id"))
        .filter(n__gte=limit)
        .exists()
    )


def usernames(*, user_ids: Iterable[str]) -> dict[str, str]:
    numeric = [int(uid) for uid in user_ids if str(uid).isdigit()]
    return {
        str(pk): name
        for pk, name in get_user_model()
        .objects.filter(pk__in=numeric)
        .values_list("pk", "username")
    }


def participant_ids(*, conversation_id: uuid.UUID | str) -> list[str]:
    return sorted(
        str(pk)
        for pk in Participant.objects.filter(conversation_id=conversation_id).values_list(
            "user_id", flat=True
        )
    )


def message_list(*, conversation: Conversation) -> QuerySet[Message]:
    return Message.objects.filter(conversation=conversation).order_by("-created_at", "-id")


def messages_outside_conversation(
    *, conversation_id: uuid.UUID | str, message_ids: Iterable[uuid.UUID]
) -> list[str]:
    """Those of ``message_ids`` that are not messages of the conversation."""
    wanted = set(message_ids)
    found = set(
        Message.objects.filter(conversation_id=conversation_id, pk__in=wanted).values_list(
            "pk", flat=True
        )
    )
    return sorted(str(pk) for pk in wanted - found)


def _presence_conversations(user_id: int | str) -> QuerySet[Participant, Any]:
    # The one rule of the presence audience: a user's presence is shared through every
    # conversation they take part in, with themself and every other participant.
    return Participant.objects.filter(user_id=user_id).values("conversation_id")


def presence_conversation_ids(*, user_id: int | str) -> list[str]:
    """The conversations whose sockets hear ``user_id``'s ``presence`` events (chat.receivers)."""
    return [str(row["conversation_id"]) for row in _presence_conversations(user_id)]


_PRESENCE_CONVERSATIONS = CompiledRows(
    lambda user_id: _presence_conversations(user_id).values_list("conversation_id"),
    prepare=_user_param,
)


async def presence_conversation_ids_async(*, user_id: int | str) -> list[str]:
    """``presence_conversation_ids`` from async code, whatever called it (a consumer, or a
    REST view's thread possibly mid-transaction, whose connection is left alone): the same
    query on the loop's async connection on PostgreSQL, else on a connection of its own."""
    if not database_async_enabled():
        result: list[str] = await database_async_under_caller(presence_conversation_ids)(
            user_id=user_id
        )
        return result
    rows = await _PRESENCE_CONVERSATIONS.rows(user_id)
    return [str(pk) for (pk,) in rows]


def presence_audience(user_id: str) -> list[str]:
    """Who may see ``user_id``'s status: the users ``presence_conversation_ids`` reaches.

    Named in ``REALTIME["PRESENCE_AUDIENCE"]`` so that presence never imports chat.
    """
    shared = (
        Participant.objects.filter(conversation_id__in=_presence_conversations(user_id))
        .values_list("user_id", flat=True)
        .distinct()
    )
    return sorted({str(user_id)} | {str(pk) for pk in shared})


def existing_user_ids(*, user_ids: Iterable[str]) -> set[str]:
    numeric = [int(uid) for uid in user_ids if str(uid).isdigit()]
    return {
        str(pk)
        for pk in get_user_model()
        .objects.filter(pk__in=numeric, is_active=True)
        .values_list("pk", flat=True)
    }
