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

On PostgreSQL the hottest calls do not take a thread at all: ``database_connection`` lends
one of psycopg's async connections (``DATABASE_ASYNC_CONNECTIONS`` per event loop, in
autocommit) to a coroutine, which runs one statement in the event loop. Measured, a message
through a thread cost several interpreter-lock hand-offs (the executor, each query's answer,
the ``on_commit`` emit hopping back with ``async_to_sync``) and a busy instance spent most of a
message waiting for them (docs/benchmarks.md). Such a statement must be complete on its own:
autocommit makes it its own transaction, so what it wrote is committed when it returns and
its caller emits right after.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from channels.db import DatabaseSyncToAsync
from django.db import connections
from django.db.models import QuerySet
from psycopg import AsyncConnection

from realtime_project.conf import realtime_settings

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_executor_size = 0
_running_lock = threading.Lock()
_running = 0


def database_calls_running() -> int:
    """Calls of ``database_async`` functions executing on a thread right now.

    Counted in the thread, from start to return: a call whose awaiting coroutine was cancelled
    (its socket closed) still runs to its end, its emit after commit included, and a drain must
    not stop the event loop under it (connections/lifecycle.py).
    """
    return _running


def _counted(func: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        global _running
        with _running_lock:
            _running += 1
        try:
            return func(*args, **kwargs)
        finally:
            with _running_lock:
                _running -= 1

    return run


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
    counted = _counted(func)

    @functools.wraps(func)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        executor = database_executor()
        runner: DatabaseSyncToAsync
        if executor is None:
            runner = DatabaseSyncToAsync(counted, thread_sensitive=True)
        else:
            runner = DatabaseSyncToAsync(counted, thread_sensitive=False, executor=executor)
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
    inline = sync_to_async(_counted(func))

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


# -- psycopg's async connections, per event loop ----------------------------------------------


class LoopConnections:
    """The async connections of one event loop: up to ``size`` in use, idle ones kept.

    Not psycopg_pool's ``AsyncConnectionPool``: its maintenance tasks absorb cancellation, so
    a loop that ends with ``asyncio.run`` or ``async_to_sync`` (every test's, the REST views'
    hops) waits for them forever. These connections have no task of their own: one opens
    when a caller needs it and none is idle, goes back to the idle list after its statement,
    is dropped when broken, and is closed with its loop.
    """

    def __init__(self, size: int) -> None:
        self.idle: list[AsyncConnection[Any]] = []
        self.slots = asyncio.Semaphore(size)
        self.closed = False

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        async with self.slots:
            db = self.idle.pop() if self.idle else None
            if db is None:
                db = await AsyncConnection.connect(**_connection_kwargs())
            try:
                yield db
            finally:
                if self.closed or db.closed or db.broken:
                    await db.close()
                else:
                    self.idle.append(db)

    def close(self) -> None:
        """Close the idle connections (no I/O to wait for: the loop may be gone already)."""
        self.closed = True
        idle, self.idle = self.idle, []
        for db in idle:
            db.pgconn.finish()


_loops_lock = threading.Lock()
_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopConnections] = (
    weakref.WeakKeyDictionary()
)


def database_async_enabled() -> bool:
    """Whether ``database_connection`` serves (PostgreSQL, ``DATABASE_ASYNC_CONNECTIONS`` > 0)."""
    # The configured engine, not ``connections["default"].vendor``: on the event loop Django's
    # connection handler is per context, so each socket's task asking would build a
    # DatabaseWrapper of its own and keep it as long as the socket lives (3.5 KiB of heap a
    # socket, tracemalloc in a running instance; docs/benchmarks.md).
    return (
        realtime_settings.DATABASE_ASYNC_CONNECTIONS > 0
        and connections.settings["default"]["ENGINE"] == POSTGRESQL_ENGINE
    )


POSTGRESQL_ENGINE = "django.db.backends.postgresql"


@functools.cache
def _unconnected_wrapper() -> Any:
    """One Django DatabaseWrapper for the event loop's own uses: compiling SQL, reading the
    connection parameters; it never connects. ``connections["default"]`` on the loop is per
    context (each socket's task would build one and keep it while the socket lives)."""
    return connections.create_connection("default")


def _connection_kwargs() -> dict[str, Any]:
    """Django's own connection parameters (its type adapters, its UTC), for an async one.

    Read for each new connection, so a test run gets its test database.
    """
    params: dict[str, Any] = _unconnected_wrapper().get_connection_params()
    params.pop("cursor_factory", None)  # Django's cursor is a synchronous one
    params["autocommit"] = True
    return params


def _close_with_loop(loop: asyncio.AbstractEventLoop, held: LoopConnections) -> None:
    """Close the loop's connections when the loop closes: their sockets belong to it, and a
    test database about to be dropped must not find them open."""
    original = loop.close

    def close() -> None:
        with _loops_lock:
            if _loops.get(loop) is held:
                del _loops[loop]
        held.close()
        original()

    setattr(loop, "close", close)  # noqa: B010 (an instance attribute over the method)


def _loop_connections() -> LoopConnections:
    loop = asyncio.get_running_loop()
    held = _loops.get(loop)
    if held is not None:
        return held
    with _loops_lock:
        held = _loops.get(loop)
        if held is not None:
            return held
        held = _loops[loop] = LoopConnections(realtime_settings.DATABASE_ASYNC_CONNECTIONS)
    _close_with_loop(loop, held)
    return held


@contextlib.asynccontextmanager
async def database_connection() -> AsyncIterator[AsyncConnection[Any]]:
    """One of this loop's async connections, in autocommit: each statement commits alone."""
    async with _loop_connections().connection() as db:
        yield db


def database_connections_busy() -> bool:
    """Whether ``database_connection`` would wait now: every connection of this loop is lent,
    or callers are already waiting for one (they are served first come, first served)."""
    return _loop_connections().slots.locked()


async def database_rows(queryset: QuerySet[Any, Any]) -> list[tuple[Any, ...]]:
    """The rows of a ``values_list`` queryset, read on the loop's async connection.

    The ORM writes the SQL, so an async read and its synchronous twin are the same query;
    the values come as psycopg loads them (no field converters: ids, numbers, text).
    """
    return await _rows(*_compiled(queryset))


def _compiled(queryset: QuerySet[Any, Any]) -> tuple[str, list[Any]]:
    """The queryset's SQL and parameters, compiled with the shared unconnected wrapper (see
    ``_unconnected_wrapper``)."""
    sql, params = queryset.query.get_compiler(connection=_unconnected_wrapper()).as_sql()
    return sql, list(params)


async def _rows(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    async with database_connection() as db:
        return await (await db.execute(sql, params)).fetchall()


class CompiledRows:
    """A ``values_list`` query of one value, compiled to SQL once and read on the loop's
    async connection with each call's value (``rows(value)``).

    Building a queryset and compiling it took more of a connect's event loop than reading
    its rows: with py-spy on an instance taking 2,000 connects, Django's query building under
    a connect's reads was 9.5 % of the loop's interpreter time (docs/benchmarks.md). The
    presence audience of a user coming online is read this way; the conversation positions,
    read for many connects at once, by ``BatchedRead``. The ORM still writes the SQL:
    ``build(value)`` gives the queryset on the first call, and its parameters must be
    exactly ``[prepare(value)]``, or nothing is kept and every call compiles as
    ``database_rows`` does (a shape this class cannot bind stays correct, only slower).
    """

    __slots__ = ("_build", "_checked", "_prepare", "_sql")

    def __init__(
        self, build: Callable[[Any], QuerySet[Any, Any]], *, prepare: Callable[[Any], Any]
    ) -> None:
        self._build = build
        self._prepare = prepare
        self._sql: str | None = None
        self._checked = False

    async def rows(self, value: Any) -> list[tuple[Any, ...]]:
        sql = self._sql
        if sql is not None:
            return await _rows(sql, [self._prepare(value)])
        sql, params = _compiled(self._build(value))
        if not self._checked:
            self._checked = True
            if params == [self._prepare(value)]:
                self._sql = sql
        return await _rows(sql, params)


def database_async_close() -> None:
    """Close every loop's idle async connections (test teardown, before the drop)."""
    with _loops_lock:
        held = list(_loops.values())
        _loops.clear()
    for connections_of_loop in held:
        connections_of_loop.close()


# -- reads asked together, answered by one query ----------------------------------------------

K = TypeVar("K")
V = TypeVar("V")


class _LoopBatch:
    """One event loop's side of a ``BatchedRead``: the keys asked and not yet read."""

    __slots__ = ("reading", "waiting")

    def __init__(self) -> None:
        self.waiting: dict[Any, list[asyncio.Future[Any]]] = {}
        self.reading = False


class BatchedRead(Generic[K, V]):
    """A read by key that many coroutines ask at once, answered by one query per round.

    A crash storm's survivor takes hundreds of connects at once, each asking the same two
    reads (its token, its conversations' positions) with another key. One at a time, they
    queued for the loop's few async connections, and each held its connection for a whole
    turn of a busy loop: in a storm of 2,000, a connect's positions waited 80-100 ms at p50 for
    a 1 ms query (docs/benchmarks.md). Here one read of a kind is in flight per loop; every
    key asked meanwhile waits for the next one, which reads them all (at most ``max_keys``).
    When nothing is in flight a key is read at once, alone: no timer, no added wait when quiet.

    ``fetch(keys)`` returns the found keys' values; a key it leaves out gets ``missing``. An
    exception from ``fetch`` reaches every caller of that round, as it would have reached each
    of their own queries. A caller cancelled while waiting is simply not answered.
    """

    def __init__(
        self,
        fetch: Callable[[list[K]], Awaitable[dict[K, V]]],
        *,
        missing: V,
        max_keys: int = 500,
    ) -> None:
        self._fetch = fetch
        self._missing = missing
        self._max_keys = max_keys
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopBatch] = (
            weakref.WeakKeyDictionary()
        )
        self._rounds: set[asyncio.Task[None]] = set()
        self.rounds = 0

    async def get(self, key: K) -> V:
        loop = asyncio.get_running_loop()
        batch = self._loops.get(loop)
        if batch is None:
            batch = self._loops[loop] = _LoopBatch()
        future: asyncio.Future[V] = loop.create_future()
        batch.waiting.setdefault(key, []).append(future)
        if not batch.reading:
            batch.reading = True
            # A task of its own: a caller's cancellation must not cut the others' read short.
            task = loop.create_task(self._read(batch))
            self._rounds.add(task)
            task.add_done_callback(self._rounds.discard)
        return await future

    async def _read(self, batch: _LoopBatch) -> None:
        asked: dict[Any, list[asyncio.Future[Any]]] = {}
        try:
            while batch.waiting:
                keys = list(itertools.islice(batch.waiting, self._max_keys))
                asked = {key: batch.waiting.pop(key) for key in keys}
                self.rounds += 1
                try:
                    found = await self._fetch(keys)
                except Exception as exc:
                    _answer(asked, exc)
                else:
                    for key, futures in asked.items():
                        value = found.get(key, self._missing)
                        for future in futures:
                            if not future.done():
                                future.set_result(value)
                asked = {}
        finally:
            batch.reading = False
            # Only when this task is cancelled (its loop torn down): nobody is left to read.
            _answer(asked, None)
            _answer(batch.waiting, None)
            batch.waiting.clear()


def _answer(asked: dict[Any, list[asyncio.Future[Any]]], exc: BaseException | None) -> None:
    """Fail (``exc``) or cancel (None) the futures of a round not answered."""
    for futures in asked.values():
        for future in futures:
            if future.done():
                continue
            if exc is None:
                future.cancel()
            else:
                future.set_exception(exc)
