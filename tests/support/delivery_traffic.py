"""Durable events at a fixed rate over REST, through faults, each committed exactly once.

Each send is a ``POST /api/conversations/{id}/messages`` with its own ``client_id``; a send
that fails (connection refused by a dead instance, a 5xx, a timeout whose request may have
committed) is retried with the same ``client_id`` on the next base URL until it is answered
``201`` or ``200`` (a repeat: the first one's body). So a message is committed once however
often it is tried, and a REST-caused event is owed to every socket of every participant.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from scripts.procs import wait_until
from tests.support.rest import rest_call


@dataclass(frozen=True)
class Sender:
    name: str
    token: str
    conversation_id: str


@dataclass(frozen=True)
class Sent:
    sender: str
    conversation_id: str
    client_id: str
    seq: int
    message_id: str
    started_at: float  # time.monotonic()
    committed_by: float  # when the answer arrived
    attempts: int
    status: int  # 201, or 200 when a retry found the first attempt committed


@dataclass
class Traffic:
    sent: list[Sent] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def between(self, start: float, end: float) -> list[Sent]:
        """Sends whose whole attempt lay inside ``[start, end]``."""
        return [s for s in self.sent if s.started_at >= start and s.committed_by <= end]


def message_post(
    base_urls: Sequence[str],
    sender: Sender,
    *,
    body: str,
    client_id: str,
    give_up_after: float,
) -> Sent:
    """Post until committed, rotating over ``base_urls``; the same ``client_id`` each time."""
    started = time.monotonic()
    attempts = 0

    def answered() -> Sent | str:
        """The committed send, or why the server refused it; raises while worth a retry."""
        nonlocal attempts
        url = base_urls[attempts % len(base_urls)]
        attempts += 1
        try:
            status, reply = rest_call(
                url,
                "POST",
                f"/api/conversations/{sender.conversation_id}/messages",
                token=sender.token,
                body={"body": body, "client_id": client_id},
                timeout=3,
            )
        except OSError as exc:
            status, reply = 0, repr(exc)
        if status in (200, 201) and isinstance(reply, dict):
            return Sent(
                sender=sender.name,
                conversation_id=sender.conversation_id,
                client_id=client_id,
                seq=int(reply.get("seq", 0)),
                message_id=str(reply["id"]),
                started_at=started,
                committed_by=time.monotonic(),
                attempts=attempts,
                status=status,
            )
        if 400 <= status < 500 and status not in (408, 429):
            return f"{sender.name}: POST refused {status} {reply}"
        # Said as the last error in the timeout's message.
        raise _NotCommitted(f"{status} {reply}")

    outcome = wait_until(
        answered, timeout=give_up_after, interval=0.05, what=f"{sender.name}'s send committed"
    )
    if isinstance(outcome, str):
        raise AssertionError(outcome)
    assert isinstance(outcome, Sent)
    return outcome


class _NotCommitted(Exception):
    """A send's attempt that may be retried: no answer, a 5xx, a 408 or a 429."""


async def send_at_rate(
    base_urls: Sequence[str],
    senders: Sequence[Sender],
    *,
    rate: float,
    seconds: float,
    traffic: Traffic | None = None,
    in_flight: int = 8,
    give_up_after: float = 20.0,
    body_chars: int = 0,
    until: asyncio.Event | None = None,
) -> Traffic:
    """``rate`` messages a second for ``seconds`` (or until ``until`` is set), senders in
    turn, on a fixed schedule (a late tick sends what has come due); bodies padded to
    ``body_chars``. Returns once every send is committed."""
    traffic = traffic if traffic is not None else Traffic()
    slots = asyncio.Semaphore(in_flight)
    tasks: list[asyncio.Task[None]] = []
    count = max(1, round(rate * seconds))
    begin = time.monotonic()

    async def one(index: int) -> None:
        sender = senders[index % len(senders)]
        async with slots:
            try:
                sent = await asyncio.to_thread(
                    message_post,
                    base_urls,
                    sender,
                    body=f"{sender.name} #{index} ".ljust(body_chars, "."),
                    client_id=uuid.uuid4().hex,
                    give_up_after=give_up_after,
                )
            except (AssertionError, TimeoutError) as exc:
                traffic.failed.append(str(exc))
                return
            traffic.sent.append(sent)

    for index in range(count):
        if until is not None and until.is_set():
            break
        due = begin + index / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    return traffic
