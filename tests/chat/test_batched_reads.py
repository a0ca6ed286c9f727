"""Reads asked together are answered by one query (realtime_project.database.BatchedRead):
each caller still gets its own key's answer, errors reach the callers of their round, and a
cancelled caller costs the others nothing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async

from accounts import tokens
from chat import selectors
from realtime_project.database import BatchedRead, database_async_enabled
from tests.support.async_poll import async_wait_until
from tests.support.consumer_fixtures import *  # noqa: F403


class Reads:
    """A fetch that records each round's keys and holds each round until released."""

    def __init__(self) -> None:
        self.rounds: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(self, keys: list[int]) -> dict[int, str | None]:
        self.rounds.append(list(keys))
        await self.release.wait()
        self.release.clear()
        if self.fail is not None:
            raise self.fail
        return {key: f"v{key}" for key in keys if key % 2 == 0}


async def _until(predicate: Any) -> None:
    await async_wait_until(predicate, timeout=5, interval=0.001, what="the read's round")


async def test_keys_asked_while_a_read_is_in_flight_are_read_together() -> None:
    reads = Reads()
    batched: BatchedRead[int, str | None] = BatchedRead(reads, missing=None)
    first = asyncio.ensure_future(batched.get(0))
    await _until(lambda: len(reads.rounds) == 1)
    later = [asyncio.ensure_future(batched.get(key)) for key in (1, 2, 3, 2)]
    await asyncio.sleep(0)
    reads.release.set()
    assert await first == "v0"
    await _until(lambda: len(reads.rounds) == 2)
    reads.release.set()
    assert await asyncio.gather(*later) == [None, "v2", None, "v2"]
    # The first alone and at once; the four asked meanwhile in one read, each key once.
    assert reads.rounds == [[0], [1, 2, 3]]


async def test_a_failed_round_fails_its_callers_only() -> None:
    reads = Reads()
    batched: BatchedRead[int, str | None] = BatchedRead(reads, missing=None)
    first = asyncio.ensure_future(batched.get(0))
    await _until(lambda: len(reads.rounds) == 1)
    second = asyncio.ensure_future(batched.get(2))
    reads.fail = RuntimeError("database down")
    reads.release.set()
    with pytest.raises(RuntimeError, match="database down"):
        await first
    await _until(lambda: len(reads.rounds) == 2)
    reads.fail = None
    reads.release.set()
    assert await second == "v2"


async def test_a_cancelled_caller_leaves_the_others_answered() -> None:
    reads = Reads()
    batched: BatchedRead[int, str | None] = BatchedRead(reads, missing=None)
    gone = asyncio.ensure_future(batched.get(0))
    await _until(lambda: len(reads.rounds) == 1)
    stays = asyncio.ensure_future(batched.get(0))
    gone.cancel()
    reads.release.set()
    await _until(lambda: len(reads.rounds) == 2)
    reads.release.set()
    assert await stays == "v0"
    assert gone.cancelled()


@pytest.fixture
def async_path() -> None:
    if not database_async_enabled():
        pytest.skip("the async database path runs on PostgreSQL (DATABASE_URL)")


@pytest.mark.django_db(transaction=True)
async def test_connects_arriving_together_read_their_own_tokens_and_positions(
    demo: Any, async_path: None
) -> None:
    names = ["alice", "bob", "carol", "dave"]
    keys = {name: demo.users[name].token for name in names}
    expected = {
        name: await database_sync_to_async(selectors.conversation_positions_for_user)(
            user_id=demo.users[name].id
        )
        for name in names
    }
    positions_before, tokens_before = selectors._POSITIONS.rounds, tokens._TOKENS.rounds

    found = await asyncio.gather(
        *(tokens.token_lookup_async(keys[name]) for name in names * 5),
        tokens.token_lookup_async("not-a-token"),
    )
    assert [str(token.user_id) if token else None for token in found] == [
        demo.users[name].id for name in names * 5
    ] + [None]
    positions = await asyncio.gather(
        *(selectors.conversation_positions_for_user_async(user_id=demo.users[n].id) for n in names)
    )
    assert dict(zip(names, positions, strict=True)) == expected
    # 21 token reads and 4 position reads, each kind in at most two queries: the first
    # caller's alone, then everyone who asked while it was on the wire.
    assert 1 <= tokens._TOKENS.rounds - tokens_before <= 2
    assert 1 <= selectors._POSITIONS.rounds - positions_before <= 2
    # Each socket gets a dict of its own, even two sockets of one user.
    again = await asyncio.gather(
        *(selectors.conversation_positions_for_user_async(user_id=demo.bob.id) for _ in "ab")
    )
    assert again[0] == again[1] and again[0] is not again[1]


@pytest.mark.django_db(transaction=True)
async def test_gaps_and_resumes_read_together_get_each_their_own_range(
    demo: Any, async_path: None
) -> None:
    from chat import services

    ab, abc = demo.conversations["ab"], demo.conversations["abc"]
    for n in range(6):
        for conversation in (ab, abc):
            await services.message_send_async(
                conversation_id=uuid.UUID(conversation),
                sender_id=demo.alice.id,
                body=f"m{n}",
            )
    asks = [
        ({ab: 0}, 10),
        ({ab: 3, abc: 1}, 10),
        ({ab: 2}, 1),  # more than the limit: limit + 1 events, as alone
        ({abc: 6}, 10),  # nothing after the newest
    ]
    expected = [
        await database_sync_to_async(selectors.events_after)(
            positions=positions, limit_per_conversation=limit
        )
        for positions, limit in asks
    ]
    before = selectors._EVENTS.rounds
    found = await asyncio.gather(
        *(
            selectors.events_after_async(positions=positions, limit_per_conversation=limit)
            for positions, limit in asks
        )
    )
    assert found == expected
    assert [[e.seq for e in found[1][ab]], [e.seq for e in found[2][ab]]] == [[4, 5, 6], [3, 4]]
    assert 1 <= selectors._EVENTS.rounds - before <= 2
    # A frame is each socket's own: two sockets reading the same event get two dicts.
    assert found[0][ab][5].frame == found[1][ab][2].frame
    assert found[0][ab][5].frame is not found[1][ab][2].frame
