"""A consumer's dispatch loop that costs an idle socket less than Channels' own.

Channels' ``AsyncConsumer.__call__`` runs ``await_many_dispatch``, which keeps, for every
socket that sits idle, a task per source (the client's ``receive`` and the layer's), the
``asyncio.wait`` around them with its set, future and callbacks, and the last message it
dispatched (a local of its frame): about 5 KiB a socket (``bench.e2e.socket_memory``,
docs/benchmarks.md). ``LeanDispatchMixin`` keeps one task (the client's ``receive``, which
only a task can wait on) and one future, woken by that task or by the layer itself
(``RealtimeChannelLayer.receive_notify``); another layer's ``receive`` gets a task, as in
Channels. As in Channels, messages are dispatched one at a time, each source's in its own
order, the client's first when both are ready, and a handler's ``StopConsumer`` ends the
consumer. One difference: a layer message stays in its channel's queue until it is
dispatched (Channels' task takes one out early), so the queue's bound counts every message
the consumer has not handled yet.

``as_asgi()`` returns a plain function that returns the consumer's coroutine, so that no
wrapper frame stays suspended for the socket's whole life either. And a middleware's
wrapper of ``receive`` and ``send`` that is only needed for a while (the connect gate's, until
the connect is answered) is asked after each message and dropped once it is done
(``asgi_types.PassThrough``): the loop then holds the server's own callables.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer

from realtime_layer import RealtimeChannelLayer
from realtime_project.runtime.asgi_types import PASS_THROUGH_KEY, PassThrough

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _resolve(waiter: asyncio.Future[None], _source: object) -> None:
    if not waiter.done():
        waiter.set_result(None)


class LeanDispatchMixin:
    """Put first in a Channels consumer's bases: its ``__call__`` and ``as_asgi``."""

    channel_layer_alias: str
    channel_layer: Any
    channel_name: str
    scope: Any
    base_send: Any
    if TYPE_CHECKING:
        # The consumer's own (the live socket's, or Channels'); declared for the type checker
        # only, so that nothing here shadows it.
        async def dispatch(self, message: Message) -> None: ...

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set here, though ``__call__`` sets them again. CPython 3.11 keeps an instance's
        # attributes in a table of names shared by its class, and gives that table one slot
        # less with every instance made, down to one. A burst of connects makes dozens of
        # consumers before the first of them runs, so a name first set in ``__call__`` or at
        # connect no longer fits: every one of those consumers then moves its attributes into
        # a dict of its own, 832 B a socket more (docs/benchmarks.md, "Memory per idle
        # socket on one instance"). A name set in the first consumer's ``__init__`` is in the
        # table before the second consumer is made. The live socket's do the same
        # (``LiveSocketMixin.live_init``).
        self.scope = None
        self.channel_layer = None
        self.base_send = None
        self.channel_name = ""

    @classmethod
    def as_asgi(cls, **initkwargs: Any) -> Any:
        """Channels' ``as_asgi()``, without a coroutine of its own around the consumer's
        (``Any``, as Channels' own: routers take it where Django's types expect a view)."""

        def app(scope: dict[str, Any], receive: Receive, send: Send) -> Awaitable[None]:
            consumer = cls(**initkwargs)
            return consumer(scope, receive, send)

        functools.update_wrapper(app, cls, updated=())
        # A plain function would pass for an ASGI 2 application where asgiref guesses.
        app._asgi_single_callable = True  # type: ignore[attr-defined]
        app.consumer_class = cls  # type: ignore[attr-defined]
        app.consumer_initkwargs = initkwargs  # type: ignore[attr-defined]
        return app

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        channel: str | None = None
        if self.channel_layer is not None:
            channel = self.channel_name = await self.channel_layer.new_channel()
        # The loop is inline, not a coroutine of its own: its frame would stay suspended too.
        layer = self.channel_layer if channel is not None else None
        notifying = layer if isinstance(layer, RealtimeChannelLayer) else None
        loop = asyncio.get_running_loop()
        client: asyncio.Future[Message] | None = None
        # Another layer's receive(), as a task (Channels' way).
        other: asyncio.Future[Message] | None = None
        message: Message | None
        passing: PassThrough | None = scope.get(PASS_THROUGH_KEY)
        try:
            while True:
                if client is None:
                    client = asyncio.ensure_future(receive())
                message = None
                if client.done():
                    message = client.result()
                    client = None
                elif notifying is not None:
                    assert channel is not None
                    message = notifying.receive_nowait(channel)
                elif layer is not None:
                    if other is None:
                        other = asyncio.ensure_future(layer.receive(channel))
                    if other.done():
                        message = other.result()
                        other = None
                if message is None:
                    assert client is not None  # it is not done
                    wake: asyncio.Future[None] = loop.create_future()
                    resolve = functools.partial(_resolve, wake)
                    client.add_done_callback(resolve)
                    if notifying is not None:
                        assert channel is not None
                        notifying.receive_notify(channel, wake)
                    elif other is not None:
                        other.add_done_callback(resolve)
                    try:
                        await wake
                    finally:
                        client.remove_done_callback(resolve)
                        if notifying is not None:
                            assert channel is not None
                            notifying.receive_notify_cancel(channel, wake)
                        elif other is not None:
                            other.remove_done_callback(resolve)
                    continue
                await self.dispatch(message)
                # Not kept alive by this frame while the socket sits idle.
                message = None
                if passing is not None:
                    server = passing.unwrapped()
                    if server is not None:
                        # Its work is done (the connect answered): the server's own callables
                        # from now on, and the wrapper goes.
                        receive, send = cast(tuple[Receive, Send], server)
                        self.base_send = send
                        passing = None
                        scope.pop(PASS_THROUGH_KEY, None)
        except StopConsumer:
            pass
        finally:
            if notifying is not None:
                assert channel is not None
                notifying.receive_notify_cancel(channel, None, leaving=True)
            for task in (client, other):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
