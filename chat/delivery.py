"""Where one socket stands in each of its conversations (docs/delivery.md).

A socket has, per conversation, a cursor ``(floor, high]``: every durable event with a ``seq``
in that range has been sent to it (or was its own, answered by an ``ack``), and none above
``high``. A new socket starts with ``floor == high ==`` the conversation's ``last_seq``: what
came before is not owed to it unless it resumes from an older position, which lowers
``floor`` once the events below are replayed. Live delivery only ever extends ``high`` by
one; a ``seq`` further ahead is a gap the socket fills from the event log first.
"""

from __future__ import annotations

import enum
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from chat import selectors
from chat.dedup import SeenIds
from chat.event_types import DURABLE_TYPES, frame_time
from chat.layer_messages import RealtimeEvent
from chat.metrics import delivery_observe
from realtime_project.close_codes import WS_1011_INTERNAL_ERROR, WS_4008_SLOW_CONSUMER
from realtime_project.conf import realtime_settings

logger = logging.getLogger(__name__)


class Verdict(enum.Enum):
    """What a cursor decides about a live durable event's ``seq``."""

    NEXT = "next"  # high + 1: deliver it
    HAD = "had"  # already sent, or from before the socket's floor: drop it
    GAP = "gap"  # beyond high + 1: fill the gap from the log first


@dataclass(slots=True)
class Cursor:
    floor: int
    high: int

    def judge(self, seq: int) -> Verdict:
        """Whether a live event at ``seq`` is the next one, one already had, or past a gap."""
        if seq == self.high + 1:
            return Verdict.NEXT
        if seq <= self.high:
            return Verdict.HAD
        return Verdict.GAP

    def owes(self, seq: int) -> bool:
        """Whether a replayed event (from the log, in order) is still to be sent."""
        return seq <= self.floor or seq == self.high + 1


class Positions:
    """The cursors of one socket, keyed by conversation id (canonical UUID strings)."""

    def __init__(self) -> None:
        self.cursors: dict[str, Cursor] = {}

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self.cursors

    def __len__(self) -> int:
        return len(self.cursors)

    def join(self, conversation_id: str, seq: int) -> bool:
        """Start following a conversation at ``seq``; False if it was followed already."""
        if conversation_id in self.cursors:
            return False
        self.cursors[conversation_id] = Cursor(floor=seq, high=seq)
        return True

    def leave(self, conversation_id: str) -> bool:
        return self.cursors.pop(conversation_id, None) is not None

    def get(self, conversation_id: str) -> Cursor | None:
        return self.cursors.get(conversation_id)


def _canonical_id(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except (TypeError, ValueError, AttributeError):
        return None


class DeliveryMixin:
    """A socket's side of delivery: live events through its cursors, gaps, resume.

    Mixed into the WebSocket consumer, which provides what is declared here; layer messages
    of one socket are handled one at a time, so none of this interleaves with itself.
    """

    channel_name: str
    user_id: str
    positions: Positions
    # The seq of each removal this socket applied: an older "added" that healing or a
    # late delivery brings afterwards must not bring the conversation back.
    removed_at: dict[str, int]
    seen: SeenIds | None

    async def send_frame(self, frame: dict[str, Any]) -> None:
        raise NotImplementedError

    async def server_close(self, *, code: int) -> None:
        raise NotImplementedError

    async def _join(self, conversation_id: str, seq: int) -> None:
        raise NotImplementedError

    async def typing_receivable(self, conversation_id: str) -> bool:
        """Whether this socket may still see the conversation's typing indicators."""
        raise NotImplementedError

    async def _leave(self, conversation_id: str) -> None:
        raise NotImplementedError

    async def realtime_event(self, message: RealtimeEvent) -> None:
        event = message.get("event")
        if not isinstance(event, dict):
            return
        seen = self.seen
        event_id = event.get("event_id")
        if seen is not None and isinstance(event_id, str) and not seen.first_time(event_id):
            return
        excluded = message.get("exclude_channel") == self.channel_name
        raw_time = message.get("emitted_at")
        # A message from an instance that does not stamp it is delivered, just not timed.
        emitted_at = raw_time if type(raw_time) is float else None
        conversation_id = event.get("conversation_id")
        if conversation_id is None:  # presence: no conversation, no seq
            if not excluded:
                await self._send_event(event, emitted_at)
            return
        if event.get("type") not in DURABLE_TYPES:  # typing
            if (
                not excluded
                and conversation_id in self.positions
                and await self.typing_receivable(str(conversation_id))
            ):
                await self._send_event(event, emitted_at)
            return
        await self._deliver_in_order(event, excluded=excluded, emitted_at=emitted_at)

    async def _send_event(self, event: dict[str, Any], emitted_at: float | None) -> None:
        """Send a live (or healed) event and observe how long it took to get here."""
        await self.send_frame(event)
        if emitted_at is not None:
            delivery_observe(event["type"], emitted_at)

    async def _deliver_in_order(
        self, event: dict[str, Any], *, excluded: bool, emitted_at: float | None = None
    ) -> None:
        """A live durable event: deliver it in ``seq`` order, once, filling any gap first."""
        conversation_id = str(event["conversation_id"])
        seq = int(event["seq"])
        if conversation_id not in self.positions:
            if not self._added_here(event) or seq <= self.removed_at.get(conversation_id, 0):
                return  # not (or no longer) this socket's conversation
            # The event that adds this user: follow the conversation from just before it.
            await self._join(conversation_id, seq - 1)
        cursor = self.positions.get(conversation_id)
        assert cursor is not None
        verdict = cursor.judge(seq)
        if verdict is Verdict.HAD:
            return
        if verdict is Verdict.GAP and not await self._fill_gap(conversation_id, before=seq):
            return
        await self._deliver(event, excluded=excluded, emitted_at=emitted_at)

    def _added_here(self, event: dict[str, Any]) -> bool:
        return (
            event.get("type") == "member"
            and event.get("action") == "added"
            and str(event.get("user_id")) == self.user_id
        )

    async def _fill_gap(self, conversation_id: str, *, before: int) -> bool:
        """Send the logged events between the cursor and ``before``; False if the socket had to
        close instead (the log unreachable, or more missing than a resume would replay)."""
        cursor = self.positions.get(conversation_id)
        assert cursor is not None
        limit = realtime_settings.RESUME_MAX_EVENTS
        try:
            logged = await selectors.events_after_async(
                positions={conversation_id: cursor.high}, limit_per_conversation=limit
            )
        except Exception:
            logger.exception("cannot read the event log to fill a gap; closing to resume")
            await self.server_close(code=WS_1011_INTERNAL_ERROR)
            return False
        for entry in logged[conversation_id]:
            if entry.seq >= before:
                break
            if entry.seq != cursor.high + 1:
                await self.server_close(code=WS_4008_SLOW_CONSUMER)
                return False
            await self._deliver(
                entry.frame,
                excluded=entry.origin_channel == self.channel_name,
                emitted_at=frame_time(entry.frame),
            )
            if conversation_id not in self.positions:
                return False  # that was this user's removal
        return before == cursor.high + 1

    async def _deliver(
        self, event: dict[str, Any], *, excluded: bool, emitted_at: float | None = None
    ) -> None:
        """Send the next durable event of a followed conversation and move its cursor.

        ``emitted_at`` is None for a resume's replay: what a client missed while away says
        nothing about how fast this instance delivers."""
        conversation_id = str(event["conversation_id"])
        cursor = self.positions.get(conversation_id)
        assert cursor is not None
        cursor.high = int(event["seq"])
        if not excluded:
            await self._send_event(event, emitted_at)
        if (
            event.get("type") == "member"
            and event.get("action") == "removed"
            and str(event.get("user_id")) == self.user_id
        ):
            self.removed_at[conversation_id] = int(event["seq"])
            await self._leave(conversation_id)

    async def resume(self, positions: dict[str, int]) -> dict[str, dict[str, Any]]:
        """Replay, per listed conversation, every logged event after the client's position;
        the ``ack``'s ``conversations`` (docs/delivery.md, Resume)."""
        limit = realtime_settings.RESUME_MAX_EVENTS
        answers: dict[str, dict[str, Any]] = {}
        wanted: dict[str, int] = {}
        for key, position in positions.items():
            conversation_id = _canonical_id(key)
            cursor = self.positions.get(conversation_id) if conversation_id else None
            if cursor is None or conversation_id is None:
                answers[key] = {"recovered": False, "seq": None}
                continue
            if position >= cursor.floor:
                # Nothing below the floor is missing; what the client already has above it
                # must not come again live.
                if position > cursor.high:
                    cursor.floor = cursor.high = position
                answers[key] = {"recovered": True, "seq": cursor.high}
            elif cursor.high - position > limit:
                answers[key] = {"recovered": False, "seq": cursor.high}
            else:
                wanted[conversation_id] = position
                answers[key] = {"recovered": True, "seq": cursor.high}
        keys = {(_canonical_id(key) or key): key for key in positions}
        if wanted:
            logged = await selectors.events_after_async(
                positions=wanted, limit_per_conversation=limit
            )
            for conversation_id, entries in logged.items():
                key = keys[conversation_id]
                cursor = self.positions.get(conversation_id)
                if cursor is None:
                    answers[key] = {"recovered": False, "seq": None}
                    continue
                if len(entries) > limit:
                    answers[key] = {"recovered": False, "seq": cursor.high}
                    continue
                for entry in entries:
                    if cursor.owes(entry.seq):
                        await self._replay(conversation_id, entry.frame)
                    if conversation_id not in self.positions:
                        break
                cursor.floor = min(cursor.floor, wanted[conversation_id])
                answers[key] = {"recovered": True, "seq": cursor.high}
        return answers

    async def _replay(self, conversation_id: str, event: dict[str, Any]) -> None:
        cursor = self.positions.get(conversation_id)
        assert cursor is not None
        if int(event["seq"]) == cursor.high + 1:
            await self._deliver(event, excluded=False)
        else:  # below the floor: owed, but the cursor's range above stays as it is
            await self.send_frame(event)
