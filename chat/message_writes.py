"""Group commit: messages that wait for a connection are written together, one transaction.

Design note: docs/delivery.md ("Group commit"). A message from a socket is one statement
(``services._MESSAGE_STATEMENT``) committed on its own on one of the event loop's async
connections; what a commit costs PostgreSQL (measured, twice what the statement does) is
what limited an instance's messages (docs/benchmarks.md, "Group commit"). So:

- with a connection free and nothing waiting, a message is written alone at once, as it
  always was: no timer, no added latency when quiet;
- while every connection is lent, messages wait in this loop's queue, which takes one place
  in the line for a connection (``database_connection`` is first come, first served, so
  reads are not starved); the connection, when it comes, takes everything waiting (up to
  ``MESSAGE_BATCH_MAX``) and writes it in one transaction, each message by its own
  statement (its own seq, membership check and outbox row), pipelined, then commits; each
  waiter gets its own row and emits its own frame, as after a write of its own;
- any error rolls the whole batch back and writes each message alone, so each gets exactly
  the answer it would have had alone (a resend's unique violation, a deadlock victim); a
  broken connection gives every message of the batch the error, as it would have alone: its
  commit is as uncertain as a lone statement's.

A waiter cancelled while its message waits is not written; once its batch has started, the
write goes on (a batch runs in a task of its own, as a statement goes on when its socket
dies mid-write).
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import Any

from psycopg import AsyncConnection

from chat import metrics
from chat.models import Participant
from realtime_project.conf import realtime_settings
from realtime_project.database import database_connection, database_connections_busy

Row = tuple[Any, ...]

# Lock order. A batch takes the conversations' rows in the order of their ids (sorted, stable,
# so that one conversation's messages keep their order), so two batches on two instances
# cannot wait on each other's. Every service locks a writer's participant row before the
# conversation's row (services._seq_next); a batch, whose statements each do that for one
# message, would hold the first message's conversation row while the second waits for its
# sender's participant row, which a removal (deleting it, then waiting for the conversation's
# row) may hold: a deadlock. So the batch takes every one of its senders' participant rows
# first, all at once; ``FOR KEY SHARE`` does not conflict with another batch's.
_PARTICIPANTS_LOCK = f"""
SELECT 1 FROM {Participant._meta.db_table}
WHERE (conversation_id, user_id) IN (
    SELECT * FROM unnest(%(conversations)s::uuid[], %(senders)s::bigint[])
)
FOR KEY SHARE
"""


class _Write:
    """One message's statement, waiting for a connection, and where its answer goes."""

    __slots__ = ("answer", "params", "statement")

    def __init__(self, statement: str, params: dict[str, Any], answer: asyncio.Future[Row | None]):
        self.statement = statement
        self.params = params
        self.answer = answer


class _Waiting:
    """One event loop's waiting messages, and the batch waiting for a connection for them."""

    __slots__ = ("batches", "queued", "writes")

    def __init__(self) -> None:
        self.writes: deque[_Write] = deque()
        self.queued = False  # a batch is in the line for a connection
        self.batches: set[asyncio.Task[None]] = set()  # the event loop keeps tasks weakly


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waiting] = weakref.WeakKeyDictionary()


async def message_write(*, statement: str, params: dict[str, Any]) -> Row | None:
    """Run a message's statement and commit it: its row, or ``None`` if it wrote nothing.

    ``params`` are ``services._message_new``'s (their ``conversation`` and ``sender`` say
    which rows the statement locks). Raises what the statement alone would raise.
    """
    loop = asyncio.get_running_loop()
    waiting = _loops.get(loop)
    if waiting is None:
        waiting = _loops[loop] = _Waiting()
    if not waiting.writes and not database_connections_busy():
        async with database_connection() as db:
            row = await (await db.execute(statement, params)).fetchone()
        metrics.message_batches.observe(1)
        return row
    write = _Write(statement, params, loop.create_future())
    waiting.writes.append(write)
    if not waiting.queued:
        _batch_queue(waiting)
    return await write.answer


def _batch_queue(waiting: _Waiting) -> None:
    waiting.queued = True
    task = asyncio.get_running_loop().create_task(_batch_write(waiting))
    waiting.batches.add(task)
    task.add_done_callback(waiting.batches.discard)


def _batch_take(waiting: _Waiting) -> list[_Write]:
    """Up to ``MESSAGE_BATCH_MAX`` waiting messages, oldest first; cancelled ones dropped."""
    batch: list[_Write] = []
    most = realtime_settings.MESSAGE_BATCH_MAX
    while waiting.writes and len(batch) < most:
        write = waiting.writes.popleft()
        if not write.answer.done():
            batch.append(write)
    return batch


async def _batch_write(waiting: _Waiting) -> None:
    batch: list[_Write] = []
    try:
        async with database_connection() as db:
            waiting.queued = False
            batch = _batch_take(waiting)
            if waiting.writes:  # more than a batch waited: the rest waits for the next connection
                _batch_queue(waiting)
            if len(batch) == 1:
                await _alone(db, batch[0])
            elif batch:
                await _together(db, batch)
    except Exception as error:
        if not batch:
            # No connection came (it could not be opened): what waited gets the error its own
            # attempt would have had.
            waiting.queued = False
            batch = _batch_take(waiting)
            if waiting.writes:
                _batch_queue(waiting)
        for write in batch:
            _fail(write, error)
    except BaseException as error:
        # The loop's end: whatever waits here is cancelled with it, and nothing is queued again.
        waiting.queued = False
        for write in [*batch, *waiting.writes]:
            _fail(write, error)
        waiting.writes.clear()
        raise


async def _alone(db: AsyncConnection[Any], write: _Write) -> None:
    """The statement in autocommit: its own transaction, as without group commit."""
    try:
        row = await (await db.execute(write.statement, write.params)).fetchone()
    except Exception as error:
        _fail(write, error)
        return
    metrics.message_batches.observe(1)
    if not write.answer.done():
        write.answer.set_result(row)


async def _together(db: AsyncConnection[Any], batch: list[_Write]) -> None:
    """The batch's statements in one transaction, in one round trip (pipeline mode)."""
    # As text: a UUID's canonical form sorts as the UUID does, and a caller's str id with it.
    ordered = sorted(batch, key=lambda write: str(write.params["conversation"]))
    try:
        async with db.pipeline(), db.transaction():
            await db.execute(
                _PARTICIPANTS_LOCK,
                {
                    "conversations": [write.params["conversation"] for write in ordered],
                    "senders": [write.params["sender"] for write in ordered],
                },
            )
            cursors = [await db.execute(write.statement, write.params) for write in ordered]
        rows = [await cursor.fetchone() for cursor in cursors]
    except Exception as error:
        if db.broken or db.closed:
            for write in batch:
                _fail(write, error)
            return
        # Rolled back, all of it: alone, each message gets its own answer.
        metrics.message_batches.split()
        for write in batch:
            await _alone(db, write)
        return
    metrics.message_batches.observe(len(batch))
    for write, row in zip(ordered, rows, strict=True):
        if not write.answer.done():
            write.answer.set_result(row)


def _fail(write: _Write, error: BaseException) -> None:
    if write.answer.done():
        return
    if isinstance(error, asyncio.CancelledError):
        write.answer.cancel()
    else:
        write.answer.set_exception(error)
