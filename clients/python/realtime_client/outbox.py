"""Messages written and not yet stored, keyed by ``client_id``.

The server stores a ``client_id`` once per user (docs/protocol.md, "Idempotent sends"), so an
entry can be sent again on every socket until one answer settles it: the ``ack`` of any of its
frames, or the ``message`` event of this user carrying its ``client_id`` (stored before the
ack was lost). Entries keep the order they were written in.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import OrderedDict

from realtime_client.events import Message


@dataclasses.dataclass
class Outgoing:
    client_id: str
    conversation_id: str
    body: str
    future: asyncio.Future[Message]
    in_flight: str | None = None  # the ref of its frame on the current socket


class Outbox:
    def __init__(self) -> None:
        self._entries: OrderedDict[str, Outgoing] = OrderedDict()
        self._refs: dict[str, str] = {}  # ref -> client_id, for the current socket

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._entries

    def get(self, client_id: str) -> Outgoing | None:
        return self._entries.get(client_id)

    def add(self, client_id: str, conversation_id: str, body: str) -> Outgoing:
        entry = Outgoing(
            client_id, conversation_id, body, asyncio.get_running_loop().create_future()
        )
        self._entries[client_id] = entry
        return entry

    def unsent(self) -> list[Outgoing]:
        """Entries with no frame on the current socket, oldest first."""
        return [e for e in self._entries.values() if e.in_flight is None]

    def sending(self, entry: Outgoing, ref: str) -> None:
        entry.in_flight = ref
        self._refs[ref] = entry.client_id

    def by_ref(self, ref: str) -> Outgoing | None:
        """The entry whose frame had ``ref`` (None: not an outbox frame, or settled)."""
        client_id = self._refs.pop(ref, None)
        return self._entries.get(client_id) if client_id is not None else None

    def settle(self, client_id: str, message: Message) -> Outgoing | None:
        """Stored: the entry leaves the outbox and its future has the message."""
        entry = self._entries.pop(client_id, None)
        if entry is not None and not entry.future.done():
            entry.future.set_result(message)
        return entry

    def reject(self, client_id: str, error: BaseException) -> None:
        """Refused for good: the entry leaves the outbox with ``error``."""
        entry = self._entries.pop(client_id, None)
        if entry is not None and not entry.future.done():
            entry.future.set_exception(error)

    def socket_closed(self) -> None:
        """No frame is in flight any more: every entry is sent again on the next socket."""
        self._refs.clear()
        for entry in self._entries.values():
            entry.in_flight = None

    def fail_all(self, error: BaseException) -> None:
        for entry in self._entries.values():
            if not entry.future.done():
                entry.future.set_exception(error)
                entry.future.exception()  # retrieved: nobody may be awaiting it
        self._entries.clear()
        self._refs.clear()
