"""Per conversation, the events handed out so far, and those held back behind a gap.

``position`` is the highest ``seq`` up to which every durable event was handed out (or was
the client's own, acknowledged). An event at or below it, or already held, is a duplicate and
dropped; one ahead of a gap is held until the gap fills, then everything contiguous is
released in ``seq`` order. This is what makes live, replayed and refetched frames, in any mix
and order, come out once and in order.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Sequencer(Generic[T]):
    def __init__(self, positions: Mapping[str, int] | None = None) -> None:
        self._position: dict[str, int] = {str(c): int(s) for c, s in (positions or {}).items()}
        # seq -> the item to hand out, or None for a seq that is held but not handed out
        # (the client's own message: it has it from the ack).
        self._held: dict[str, dict[int, T | None]] = {}

    @property
    def positions(self) -> dict[str, int]:
        return dict(self._position)

    def position(self, conversation_id: str) -> int | None:
        return self._position.get(conversation_id)

    def tracks(self, conversation_id: str) -> bool:
        return conversation_id in self._position

    def track(self, conversation_id: str, seq: int) -> None:
        """Follow a conversation from ``seq`` unless it is followed already."""
        self._position.setdefault(conversation_id, seq)

    def advance(self, conversation_id: str, seq: int) -> list[T]:
        """The app has everything up to ``seq`` by other means; positions only move forward.
        Returns what that releases."""
        current = self._position.get(conversation_id, seq)
        self._position[conversation_id] = max(current, seq)
        held = self._held.get(conversation_id, {})
        for stale in [s for s in held if s <= self._position[conversation_id]]:
            del held[stale]
        return self._release(conversation_id)

    def forget(self, conversation_id: str) -> None:
        self._position.pop(conversation_id, None)
        self._held.pop(conversation_id, None)

    def accept(self, conversation_id: str, seq: int, item: T | None) -> list[T]:
        """Take one event (``item``; None for one that is held but not handed out). Returns
        the items now ready, in seq order; empty when it was a duplicate or is held back."""
        if conversation_id not in self._position:
            # A conversation never heard of starts with its first event seen (the ``member``
            # event that added this user).
            self._position[conversation_id] = seq - 1
        if seq <= self._position[conversation_id]:
            return []
        held = self._held.setdefault(conversation_id, {})
        if seq in held:
            return []
        held[seq] = item
        return self._release(conversation_id)

    def offer(self, conversation_id: str, seq: int, item: T | None) -> list[T]:
        """Deprecated name of ``accept`` (0.1.0), kept until 1.0.0."""
        warnings.warn(
            "Sequencer.offer is deprecated; use Sequencer.accept", DeprecationWarning, stacklevel=2
        )
        return self.accept(conversation_id, seq, item)

    def _release(self, conversation_id: str) -> list[T]:
        held = self._held.get(conversation_id)
        ready: list[T] = []
        if not held:
            return ready
        position = self._position[conversation_id]
        while position + 1 in held:
            position += 1
            item = held.pop(position)
            if item is not None:
                ready.append(item)
        self._position[conversation_id] = position
        return ready

    def gapped(self) -> list[str]:
        """Conversations with events held back behind a missing seq."""
        return [c for c, held in self._held.items() if held]

    def missing(self, conversation_id: str) -> Iterable[int]:
        held = self._held.get(conversation_id) or {}
        if not held:
            return range(0)
        return (s for s in range(self._position[conversation_id] + 1, max(held)) if s not in held)
