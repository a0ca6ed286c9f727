"""Database calls from async code on a bounded pool of threads (docs/benchmarks.md).

Channels' ``database_sync_to_async`` runs every call on the one thread-sensitive executor
thread of the process, so every socket's frames that touch the database (a message is five
or six queries) waited for each other there: measured, an instance stopped near 190
messages a second on PostgreSQL with its CPU two-thirds idle, and one frame in twenty
waited almost a second at 400 frames/s. ``database_async`` runs the same call, with the
same stale-connection tidying around it, on one of ``DATABASE_THREADS`` threads instead.

What stays true:

- a call is one synchronous function on one thread from start to end, so its
  ``transaction.atomic`` blocks and the ``transaction.on_commit`` callbacks they register
  (the services' emits, which hop back to the event loop with ``async_to_sync``) behave
  exactly as on the thread-sensitive thread;
- Django's connections are per thread: each pool thread borrows its own from psycopg's pool
  (``DATABASE_POOL_MAX_SIZE`` should stay above ``DATABASE_THREADS``) and gives it back when
  the call ends (``CONN_MAX_AGE`` is 0 with a pool);
- one socket's frames still run one at a time (the consumer awaits each handler), and two
  writers to one conversation are ordered by the row lock of its ``seq``; an emit that
  overtakes an earlier one is a gap the consumer fills from the log.

``DATABASE_THREADS = 0`` (the default on SQLite, which takes one writer at a time anyway and
whose in-memory test databases lock per table) keeps Channels' thread-sensitive thread.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from channels.db import DatabaseSyncToAsync
from django.db import connections

from realtime_project.conf import realtime_settings

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_executor_size = 0


def database_executor() -> ThreadPoolExecutor | None:
    """The process's database threads; ``None`` when ``DATABASE_THREADS`` is 0."""
    global _executor, _executor_size
    size = realtime_settings.DATABASE_THREADS
    if size <= 0:
        return None
    executor = _executor
    if executor is not None and _executor_size == size:
        return executor
    with _lock:
        if _executor is None or _executor_size != size:
            old = _executor
            _executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="database")
            _executor_size = size
            if old is not None:  # the setting changed (tests): let running calls finish
                old.shutdown(wait=False)
        return _executor


def database_async(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``func`` as a coroutine function running on the database threads.

    Like ``channels.db.database_sync_to_async`` (stale connections are closed before and
    after), but not serialized behind every other socket's database work.
    """

    @functools.wraps(func)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        executor = database_executor()
        runner: DatabaseSyncToAsync
        if executor is None:
            runner = DatabaseSyncToAsync(func, thread_sensitive=True)
        else:
            runner = DatabaseSyncToAsync(func, thread_sensitive=False, executor=executor)
        result: R = await runner(*args, **kwargs)
        return result

    return call


def database_async_under_caller(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``database_async`` for code that a synchronous caller may be running under.

    A REST view (perhaps inside a transaction) that reaches async code through
    ``async_to_sync`` must keep its connection: on the database threads the call has a
    connection of its own (and reads what is committed); without them (``DATABASE_THREADS``
    0) it runs as plain ``sync_to_async``, in the caller's thread, leaving the connection
    alone. Either way a call from a consumer does not pin a connection to Channels'
    thread-sensitive thread, which nothing would tidy.
    """
    pooled = database_async(func)
    inline = sync_to_async(func)

    @functools.wraps(func)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        runner = pooled if database_executor() is not None else inline
        result: R = await runner(*args, **kwargs)
        return result

    return call


def database_threads_close() -> None:
    """Close every database thread's connection and stop the threads (test teardown).

    Needed where ``close_old_connections`` does not run (Channels' test communicator turns
    it off), so that no thread keeps a connection to a database about to be dropped.
    """
    global _executor
    with _lock:
        executor, _executor = _executor, None
    if executor is None:
        return
    # Every worker takes exactly one closing job: none returns until all have one.
    barrier = threading.Barrier(_executor_size)

    def close() -> None:
        barrier.wait(timeout=10)
        connections.close_all()

    for future in [executor.submit(close) for _ in range(_executor_size)]:
        future.result(timeout=15)
    executor.shutdown(wait=True)
