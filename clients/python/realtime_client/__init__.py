"""asyncio client of the realtime backbone's wire contract (docs/protocol.md).

    async with Client("wss://chat.example/ws/", token=key) as client:
        client.track(conversation_id, last_seq)
        await client.send_message(conversation_id, "hello")
        async for event in client.events():
            ...

See README.md for the behaviour: resume on every connect, exactly-once in-order delivery per
conversation, the outbox, failover and backoff.
"""

from realtime_client.backoff import Backoff, retry_after_ms
from realtime_client.client import Client, Observer, State, StateChange
from realtime_client.errors import (
    ClientClosed,
    ConnectionLost,
    Forbidden,
    HttpError,
    NotConnected,
    ProtocolError,
    RealtimeError,
    RequestTimeout,
    ServerError,
    Unauthorized,
)
from realtime_client.events import (
    DURABLE_TYPES,
    Ack,
    Connected,
    DurableEvent,
    ErrorFrame,
    Event,
    FrameError,
    MemberEvent,
    Message,
    MessageEvent,
    PresenceEvent,
    ReadEvent,
    Reset,
    Resumed,
    TypingEvent,
    UnknownFrame,
    parse_frame,
)
from realtime_client.sequencer import Sequencer

__version__ = "0.1.0"

__all__ = [
    "DURABLE_TYPES",
    "Ack",
    "Backoff",
    "Client",
    "ClientClosed",
    "Connected",
    "ConnectionLost",
    "DurableEvent",
    "ErrorFrame",
    "Event",
    "Forbidden",
    "FrameError",
    "HttpError",
    "MemberEvent",
    "Message",
    "MessageEvent",
    "NotConnected",
    "Observer",
    "PresenceEvent",
    "ProtocolError",
    "ReadEvent",
    "RealtimeError",
    "RequestTimeout",
    "Reset",
    "Resumed",
    "Sequencer",
    "ServerError",
    "State",
    "StateChange",
    "TypingEvent",
    "Unauthorized",
    "UnknownFrame",
    "parse_frame",
    "retry_after_ms",
]
