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
from dataclasses import dataclass


class Offer(enum.Enum):
    NEXT = "next"  # high + 1: deliver it
    HAD = "had"  # already sent, or from before the socket's floor: drop it
    GAP = "gap"  # beyond high + 1: fill the gap from the log first


@dataclass(slots=True)
class Cursor:
    floor: int
    high: int

    def offer(self, seq: int) -> Offer:
        if seq == self.high + 1:
            return Offer.NEXT
        if seq <= self.high:
            return Offer.HAD
        return Offer.GAP

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
