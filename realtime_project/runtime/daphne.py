"""The adapter between this project and Daphne's, autobahn's and Twisted's internals.

Every reach into their private names lives in this module, and nowhere else (docs/runtime.md).
``daphne_patch()`` (called from ``realtime_project/asgi.py``) first checks each internal it
relies on (``INTERNALS``: present, callable with the parameters it expects, the class it
expects, the state it counts on in their code) and, when one moved, refuses to start with
``DaphneInternalsMoved``, naming the behaviour, the internal and the installed versions: a
version that moved one gets no patch at all, never half of one. Then it changes these things
of Daphne, whatever command line started it:

- **A WebSocket upgrade can be refused before its handshake.** A callable registered with
  ``upgrade_refusal_set`` (accounts/admission.py registers the connect gate's) is asked
  for each upgrade request as soon as Daphne has parsed it; when it returns a delay, the
  request is answered ``503 Service Unavailable`` with ``Retry-After`` (seconds) and
  ``X-Retry-After-Ms`` and closed: no WebSocket handshake, no application instance, about a
  third of what refusing with ``1013`` after the handshake costs.
- **No debug text built for nothing.** Autobahn formats the arguments of its debug log
  lines eagerly on every connection, discarded or not: ``pformat`` of its configuration in
  ``_connectionMade`` and ``hltype`` of a method in half a dozen handshake steps. py-spy on
  an instance taking a storm of connects: 12 % of its event loop. Those names, in
  autobahn's modules, now return an object that formats itself only if a log line is
  written.
- **Protocol close codes.** Autobahn accepts only 1000 and 3000-4999 from an application
  (``sendClose``), so ``websocket.close`` with 1012 ("service restart", what a draining
  instance must send) or 1009 ("message too big") raises inside Daphne and the client sees the
  connection drop (1006) instead. RFC 6455 and the IANA registry allow servers to send these
  codes; they go through autobahn's lower-level ``sendCloseFrame``.
- **Close reasons reach the client.** Daphne drops the ``reason`` of ``websocket.close``
  (ASGI 2.3 has it); a ``1013`` carries the client's retry hint there
  (``accounts.admission``), so it is sent in the close frame, cut to the 123 bytes a
  close frame holds.
- **Oversized frames close with 1009.** Daphne's own cap (``--websocket-max-message-size``,
  1 MiB) makes autobahn *drop* the TCP connection (``failByDrop``), so a 2 MiB frame was
  answered with 1006. Here autobahn sends a 1009 close frame as soon as a frame's header (or a
  fragmented message's running total) exceeds the cap, and discards the rest of the payload
  as it streams in, buffering none of it. Frames between ``WS_MAX_FRAME_BYTES`` and Daphne's
  cap reach the consumer, which closes with 1009 too; the client sees 1009 either way.
- **Back-pressure, and a bound on what one socket buffers.** A client that reads slowly, or
  not at all (its TCP window full), leaves what is sent to it in Twisted's write buffer,
  without limit. Here the application's ``websocket.send`` waits while more than
  ``WS_MAX_BUFFERED_BYTES`` are buffered for that socket, until the buffer drains below the
  bound: a client that reads, however slowly, gets everything (a resume replaying megabytes
  included), and the socket's own queue in the channel layer fills meanwhile (it overflows
  into 4008 if the client stays behind). A buffer that makes no progress for
  ``WS_SEND_STALL_SECONDS`` belongs to a client that stopped reading: the server queues a 4008
  close frame behind what is buffered. Autobahn would abort the TCP connection when the client
  has not answered that close within its close-handshake timeout (1 s, Daphne leaves
  autobahn's default), which a client still has to read megabytes to reach: one that resumed
  reading two seconds later saw 1006, not 4008. Here autobahn's timer is replaced by a watch
  of what is still unsent (Twisted's buffer and the kernel's send queue): the connection is
  aborted once that makes no progress for ``WS_SEND_STALL_SECONDS``, or once it is all sent
  and the client has not answered within autobahn's timeout. Nothing is added to the buffer
  after the close, so memory stays bounded, and a client that never reads again is dropped
  ``WS_SEND_STALL_SECONDS`` after the close. The consumer's disconnect handler cleans up
  either way. Anything written without waiting (there is nothing else today) is cut off at
  four times the bound. An event stream
  (``chat.stream``, a streamed HTTP response) gets the same bound: each body chunk waits
  while the connection holds more than ``WS_MAX_BUFFERED_BYTES`` unsent, and one that makes
  no progress for ``WS_SEND_STALL_SECONDS`` is aborted (the client reconnects with its
  ``Last-Event-ID``).
- **No blind proxy headers.** ``--proxy-headers`` makes Daphne believe ``X-Forwarded-For``
  from any peer. That option is turned off here: ``realtime_project.runtime.proxy_headers``
  reads the header, and only from ``TRUSTED_PROXIES``.
- **The running server, for the drain.** The running ``Server`` is kept at hand, so that a
  drain can wait for the application instances still at work
  (``daphne_running_applications``) before it stops the reactor: one stopped under a thread
  that is about to call back into the event loop (a message's emit after commit does) leaves
  that thread waiting forever, and the interpreter waits for it. The drain's SIGTERM handler
  goes on the reactor's asyncio loop (``daphne_reactor_loop``).
- **An access log without tokens.** Browsers cannot set headers on a WebSocket, so the token
  travels as ``?token=`` and Daphne's access log (on at its default verbosity) would print it
  with every ``WSCONNECTING`` line. Its request field goes through the same redaction as the
  project's own log lines.

What tests each behaviour. The tripwires, one per internal of ``INTERNALS``, are
``tests/runtime/test_daphne_internals.py``: each internal is present and shaped as expected in
the installed versions, and taking it away makes ``daphne_patch`` refuse to start naming it.
Against a live Daphne (``tests/ops`` and ``tests/client`` start a cluster; ``-m cluster``):

=========================  ======================================================================
``Behaviour``              behaviour test
=========================  ======================================================================
``UPGRADE_REFUSAL``        tests/runtime/test_admission_live.py::
                           test_an_upgrade_past_the_limit_is_refused_503_with_its_hint
``LAZY_DEBUG``             tests/runtime/test_daphne_patches.py::
                           test_autobahn_debug_arguments_are_formatted_only_when_written
                           (in process: what it saves is CPU, nothing a client sees)
``CLOSE_CODES``            tests/ops/test_instance_drain.py::
                           test_sigterm_drains_then_exits_and_users_stay_online (1012);
                           tests/runtime/test_admission_live.py::
                           test_connects_past_the_limit_are_closed_1013_with_their_hint
``CLOSE_REASONS``          tests/runtime/test_admission_live.py::
                           test_connects_past_the_limit_are_closed_1013_with_their_hint
``OVERSIZED_FRAMES``       tests/runtime/test_daphne_runtime.py::
                           test_any_oversized_frame_closes_1009_and_spares_others
``BACK_PRESSURE``          tests/runtime/test_daphne_runtime.py::
                           test_a_client_that_stops_reading_is_closed_and_memory_stays_bounded,
                           test_an_event_stream_that_stops_reading_is_ended_and_memory_stays_bounded;
                           tests/runtime/test_slow_consumer_close.py (4008 read after a pause,
                           a reader that never returns dropped); tests/ops/
                           test_delivery_slow_consumer.py (the closed client resumes everything)
``PROXY_HEADERS``          tests/runtime/test_daphne_runtime.py::
                           test_a_spoofed_forwarded_for_through_haproxy_does_not_reach_the_registry,
                           test_forwarded_for_from_an_untrusted_peer_is_ignored
``DRAIN``                  tests/ops/test_instance_drain.py::
                           test_a_busy_instance_exits_by_itself_soon_after_its_last_socket_closes
``ACCESS_LOG``             tests/ops/test_logs.py::
                           test_a_token_in_the_query_string_never_reaches_a_log
=========================  ======================================================================

Checked against daphne 4.2.3, autobahn 26.11.1 and Twisted 26.10.0 (pinned in
requirements.txt); docs/runtime.md says how to move to other versions.
"""

from __future__ import annotations

import array
import asyncio
import enum
import fcntl
import importlib.util
import logging
import termios
import time
from collections.abc import Callable
from typing import Any, Final

from realtime_project.close_codes import WS_1009_MESSAGE_TOO_BIG, WS_4008_SLOW_CONSUMER
from realtime_project.conf import realtime_settings
from realtime_project.runtime.internals import (
    Called,
    Class,
    Constant,
    Internal,
    Mentions,
    Replaced,
    SetsAttribute,
    installed_versions,
    internal_problem,
    replacing,
    resolve,
)
from realtime_project.runtime.logging import log_event, redact

logger = logging.getLogger(__name__)


class Behaviour(enum.StrEnum):
    """What the adapter changes, as named in its errors."""

    UPGRADE_REFUSAL = "a WebSocket upgrade refused with 503 before its handshake"
    LAZY_DEBUG = "autobahn's debug arguments formatted only when a line is written"
    CLOSE_CODES = "protocol close codes (1001-1014) sent by the application"
    CLOSE_REASONS = "close reasons sent to the client"
    OVERSIZED_FRAMES = "an oversized frame closed with 1009"
    BACK_PRESSURE = "back-pressure, and the 4008 close of a reader that stopped"
    PROXY_HEADERS = "no X-Forwarded-For believed from untrusted peers"
    DRAIN = "the running server and its loop kept for the drain"
    ACCESS_LOG = "an access log without tokens"


_B = Behaviour
_AUTOBAHN_PROTOCOL: Final = "autobahn.websocket.protocol:WebSocketProtocol"
_DAPHNE_WS: Final = "daphne.ws_protocol:WebSocketProtocol"
_DAPHNE_HTTP: Final = "daphne.http_protocol:WebRequest"
_SEND_CLOSE_FRAME: Final = Called(("self", "code", "reasonUtf8", "isReply"))
_PARSE_X_FORWARDED_FOR: Final = Replaced(
    (
        "headers",
        "address_header_name",
        "port_header_name",
        "proto_header_name",
        "original_addr",
        "original_scheme",
    )
)

# Every internal the patches below rely on, by behaviour. A function the patch replaces
# must keep its parameters (Daphne calls the replacement as it called the original); one it
# calls must still accept what it is given; a state it reads must still be set where it was.
INTERNALS: Final[tuple[Internal, ...]] = (
    Internal(_B.UPGRADE_REFUSAL, _DAPHNE_HTTP, Class("twisted.web.http:Request")),
    Internal(_B.UPGRADE_REFUSAL, f"{_DAPHNE_HTTP}.process", Replaced(("self",))),
    Internal(_B.UPGRADE_REFUSAL, f"{_DAPHNE_HTTP}.handle_reply", Called(("self", "message"))),
    Internal(_B.UPGRADE_REFUSAL, _DAPHNE_HTTP, SetsAttribute("requestHeaders")),
    Internal(_B.LAZY_DEBUG, "autobahn.websocket.protocol:pformat", Called(("object",))),
    Internal(_B.LAZY_DEBUG, "autobahn.websocket.protocol", Mentions(r"=pformat\(")),
    Internal(_B.LAZY_DEBUG, "autobahn.websocket.protocol:hltype", Called(("obj",))),
    Internal(_B.LAZY_DEBUG, "autobahn.websocket.protocol", Mentions(r"=hltype\(")),
    Internal(_B.LAZY_DEBUG, "autobahn.twisted.websocket:hltype", Called(("obj",))),
    Internal(_B.LAZY_DEBUG, "autobahn.twisted.websocket", Mentions(r"=hltype\(")),
    Internal(_B.CLOSE_CODES, _DAPHNE_WS, Class(_AUTOBAHN_PROTOCOL)),
    Internal(_B.CLOSE_CODES, f"{_DAPHNE_WS}.serverClose", Replaced(("self", "code"))),
    Internal(_B.CLOSE_CODES, f"{_DAPHNE_WS}.handle_reply", Mentions(r"self\.serverClose\(")),
    Internal(_B.CLOSE_CODES, f"{_AUTOBAHN_PROTOCOL}.sendCloseFrame", _SEND_CLOSE_FRAME),
    Internal(_B.CLOSE_REASONS, f"{_DAPHNE_WS}.handle_reply", Replaced(("self", "message"))),
    Internal(_B.CLOSE_REASONS, f"{_AUTOBAHN_PROTOCOL}.STATE_CONNECTING", Constant(int)),
    Internal(_B.CLOSE_REASONS, f"{_AUTOBAHN_PROTOCOL}.sendCloseFrame", _SEND_CLOSE_FRAME),
    Internal(
        _B.OVERSIZED_FRAMES,
        f"{_AUTOBAHN_PROTOCOL}._max_message_size_exceeded",
        Replaced(("self", "msg_size", "max_msg_size", "reason")),
    ),
    Internal(
        _B.OVERSIZED_FRAMES,
        f"{_AUTOBAHN_PROTOCOL}.onMessageFrameBegin",
        Mentions(r"self\._max_message_size_exceeded\("),
    ),
    # ``failedByMe`` set is what makes autobahn discard the rest of the payload unbuffered.
    Internal(
        _B.OVERSIZED_FRAMES,
        f"{_AUTOBAHN_PROTOCOL}.onMessageFrameData",
        Mentions(r"if not self\.failedByMe"),
    ),
    Internal(
        _B.OVERSIZED_FRAMES, _AUTOBAHN_PROTOCOL, SetsAttribute("wasMaxMessagePayloadSizeExceeded")
    ),
    Internal(_B.OVERSIZED_FRAMES, f"{_AUTOBAHN_PROTOCOL}.sendCloseFrame", _SEND_CLOSE_FRAME),
    Internal(
        _B.BACK_PRESSURE,
        "daphne.server:Server.handle_reply",
        Replaced(("self", "protocol", "message"), coroutine=True),
    ),
    Internal(_B.BACK_PRESSURE, f"{_DAPHNE_WS}.serverSend", Replaced(("self", "content", "binary"))),
    Internal(_B.BACK_PRESSURE, f"{_AUTOBAHN_PROTOCOL}.STATE_OPEN", Constant(int)),
    Internal(_B.BACK_PRESSURE, f"{_AUTOBAHN_PROTOCOL}.STATE_CLOSING", Constant(int)),
    Internal(_B.BACK_PRESSURE, f"{_AUTOBAHN_PROTOCOL}.STATE_CLOSED", Constant(int)),
    Internal(_B.BACK_PRESSURE, f"{_AUTOBAHN_PROTOCOL}.sendCloseFrame", _SEND_CLOSE_FRAME),
    # The close-handshake timer this adapter replaces, and autobahn's end of a close that
    # was not answered.
    Internal(
        _B.BACK_PRESSURE,
        f"{_AUTOBAHN_PROTOCOL}.sendCloseFrame",
        Mentions(r"self\.closeHandshakeTimeoutCall = "),
    ),
    Internal(
        _B.BACK_PRESSURE,
        f"{_AUTOBAHN_PROTOCOL}.sendCloseFrame",
        Mentions(r"self\.closeHandshakeTimeout\b"),
    ),
    Internal(_B.BACK_PRESSURE, f"{_AUTOBAHN_PROTOCOL}.onCloseHandshakeTimeout", Called(("self",))),
    Internal(_B.BACK_PRESSURE, _DAPHNE_WS, SetsAttribute("client_addr")),
    Internal(
        _B.BACK_PRESSURE, "twisted.protocols.policies:ProtocolWrapper", SetsAttribute("transport")
    ),
    Internal(
        _B.BACK_PRESSURE, "twisted.internet.abstract:FileDescriptor", SetsAttribute("dataBuffer")
    ),
    Internal(_B.BACK_PRESSURE, "twisted.internet.abstract:FileDescriptor", SetsAttribute("offset")),
    Internal(
        _B.BACK_PRESSURE, "twisted.internet.abstract:FileDescriptor", SetsAttribute("_tempDataLen")
    ),
    Internal(_B.BACK_PRESSURE, _DAPHNE_HTTP, SetsAttribute("finished")),
    Internal(_B.BACK_PRESSURE, _DAPHNE_HTTP, SetsAttribute("channel")),
    Internal(
        _B.BACK_PRESSURE, "twisted.internet.tcp:Connection.abortConnection", Called(("self",))
    ),
    Internal(_B.PROXY_HEADERS, "daphne.utils:parse_x_forwarded_for", _PARSE_X_FORWARDED_FOR),
    Internal(
        _B.PROXY_HEADERS, "daphne.http_protocol:parse_x_forwarded_for", _PARSE_X_FORWARDED_FOR
    ),
    Internal(_B.PROXY_HEADERS, "daphne.ws_protocol:parse_x_forwarded_for", _PARSE_X_FORWARDED_FOR),
    # Daphne looks the function up in its own module at each request: replacing that name
    # is what turns the header off.
    Internal(_B.PROXY_HEADERS, f"{_DAPHNE_HTTP}.process", Mentions(r"= parse_x_forwarded_for\(")),
    Internal(_B.PROXY_HEADERS, f"{_DAPHNE_WS}.onConnect", Mentions(r"= parse_x_forwarded_for\(")),
    Internal(_B.DRAIN, "daphne.server:Server.run", Replaced(("self",))),
    Internal(_B.DRAIN, "daphne.server:Server", SetsAttribute("connections")),
    Internal(
        _B.DRAIN,
        "daphne.server:Server.create_application",
        Mentions(r'\["application_instance"\] ='),
    ),
    Internal(
        _B.DRAIN,
        "twisted.internet.asyncioreactor:AsyncioSelectorReactor",
        SetsAttribute("_asyncioEventloop"),
    ),
    Internal(
        _B.ACCESS_LOG,
        "daphne.access:AccessLogGenerator.write_entry",
        Replaced(("self", "host", "date", "request", "status", "length", "ident", "user")),
    ),
)

# The packages whose versions an error names, and the versions every internal was checked
# against (requirements.txt pins them; docs/runtime.md, "Upgrading").
PATCHED_PACKAGES: Final = ("daphne", "autobahn", "twisted")
CHECKED_AGAINST: Final = {"daphne": "4.2.3", "autobahn": "26.11.1", "twisted": "26.10.0"}


class DaphneInternalsMoved(RuntimeError):
    """The installed Daphne, autobahn or Twisted moved an internal this adapter relies on."""


def daphne_internals_problems() -> list[tuple[Internal, str]]:
    """Each internal of ``INTERNALS`` that is not as expected, with what is wrong with it."""
    problems = []
    for internal in INTERNALS:
        problem = internal_problem(internal)
        if problem is not None:
            problems.append((internal, problem))
    return problems


def daphne_internals_check() -> None:
    """Raise ``DaphneInternalsMoved`` naming every internal that moved; nothing if none did."""
    problems = daphne_internals_problems()
    if not problems:
        return
    lines = [
        f"- {internal.behaviour}: {internal.path} should be {internal.shape.describe()}; {problem}"
        for internal, problem in problems
    ]
    checked = ", ".join(f"{package} {version}" for package, version in CHECKED_AGAINST.items())
    raise DaphneInternalsMoved(
        f"Daphne is not patched: the installed {installed_versions(PATCHED_PACKAGES)} moved "
        f"internals that realtime_project.runtime.daphne relies on (checked against {checked}; "
        "docs/runtime.md, 'Upgrading'):\n" + "\n".join(lines)
    )


# Codes a server may send (RFC 6455 section 7.4.1 and the IANA registry); 1004-1006 and 1015
# are reserved and never go on the wire.
SERVER_CLOSE_CODES: Final = frozenset(
    {1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)

# Twisted's classes a transport's buffer is read through, taken from the checked internals
# when the patch is applied (before, no transport of Daphne's exists to read).
_protocol_wrappers: Any = ()
_file_descriptors: Any = ()


def transport_buffered_bytes(transport: Any) -> int:
    """Bytes written to ``transport`` and not yet handed to the kernel (0 if unknown)."""
    while isinstance(transport, _protocol_wrappers):
        transport = transport.transport
    if not isinstance(transport, _file_descriptors):
        return 0
    # Twisted keeps two buffers: ``dataBuffer`` (being written, from ``offset``) and the list
    # of later writes (``_tempDataLen`` bytes).
    buffered: int = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    return buffered


def kernel_unsent_bytes(transport: Any) -> int:
    """Bytes the kernel holds in ``transport``'s socket send queue, not yet acknowledged by
    the peer (0 if unknown): after Twisted's buffer, the rest of what a client has to read."""
    while isinstance(transport, _protocol_wrappers):
        transport = transport.transport
    try:
        descriptor = transport.fileno()
        unsent = array.array("i", [0])
        fcntl.ioctl(descriptor, termios.TIOCOUTQ, unsent, True)
    except (AttributeError, OSError, ValueError):
        return 0
    return int(unsent[0])


def _keep_peer(
    headers: Any,
    address_header_name: Any = None,
    port_header_name: Any = None,
    proto_header_name: Any = None,
    original_addr: Any = None,
    original_scheme: Any = None,
) -> tuple[Any, Any]:
    """Daphne's ``parse_x_forwarded_for`` that believes no header: the TCP peer stays."""
    return original_addr, original_scheme


def _max_buffered_bytes() -> int:
    return realtime_settings.WS_MAX_BUFFERED_BYTES


# How often a waiting send looks at its socket's buffer again.
DRAIN_POLL_SECONDS: Final = 0.005
# Only writes that did not wait for the buffer (none today) ever pass the bound by this much.
HARD_LIMIT_FACTOR: Final = 4


async def send_drained(protocol: Any) -> None:
    """Return once ``protocol``'s buffer is under the bound; close 4008 if it stops draining."""
    limit = _max_buffered_bytes()
    buffered = transport_buffered_bytes(protocol.transport)
    if buffered <= limit:
        return
    stall = realtime_settings.WS_SEND_STALL_SECONDS
    lowest, progressed = buffered, time.monotonic()
    while protocol.state == protocol.STATE_OPEN:
        await asyncio.sleep(DRAIN_POLL_SECONDS)
        buffered = transport_buffered_bytes(protocol.transport)
        if buffered <= limit:
            return
        now = time.monotonic()
        if buffered < lowest:
            lowest, progressed = buffered, now
        elif now - progressed > stall:
            slow_consumer_close(protocol, buffered)
            return


class LazyLogValue:
    """A log argument rendered only when the line is formatted (``str``/``format``)."""

    __slots__ = ("_render", "_value")

    def __init__(self, render: Callable[[Any], str], value: Any) -> None:
        self._render = render
        self._value = value

    def __str__(self) -> str:
        return str(self._render(self._value))

    def __repr__(self) -> str:
        return str(self)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def lazy_log_renderer(render: Callable[[Any], str]) -> Callable[[Any], LazyLogValue]:
    def lazily(value: Any) -> LazyLogValue:
        return LazyLogValue(render, value)

    return replacing(render, lazily)


# Autobahn's modules and the log-argument helpers they call eagerly (see the module's notes).
AUTOBAHN_LOG_HELPERS: Final = (
    ("autobahn.websocket.protocol", ("pformat", "hltype")),
    ("autobahn.twisted.websocket", ("hltype",)),
)


def _autobahn_logs_lazily() -> None:
    for module_name, names in AUTOBAHN_LOG_HELPERS:
        module = resolve(module_name)
        for name in names:
            setattr(module, name, lazy_log_renderer(resolve(f"{module_name}:{name}")))


# Asked for each WebSocket upgrade: None to proceed, or milliseconds the client should wait.
UpgradeRefusal = Callable[[], int | None]
_upgrade_refusal: UpgradeRefusal | None = None


def upgrade_refusal_set(refusal: UpgradeRefusal | None) -> None:
    """Install (or remove, with None) the check every WebSocket upgrade meets first."""
    global _upgrade_refusal
    _upgrade_refusal = refusal


def _is_websocket_upgrade(request: Any) -> bool:
    values = request.requestHeaders.getRawHeaders(b"upgrade") or []
    return bool(values) and values[0].lower() == b"websocket"


def refuse_upgrade(request: Any, retry_after_ms: int) -> None:
    """Answer an upgrade request 503 with its retry hint, the way Daphne answers its errors."""
    seconds = max(1, -(-retry_after_ms // 1000))
    request.handle_reply(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"Retry-After", str(seconds).encode("ascii")),
                (b"X-Retry-After-Ms", str(retry_after_ms).encode("ascii")),
                (b"Content-Length", b"0"),
            ],
        }
    )
    request.handle_reply({"type": "http.response.body", "body": b""})


async def stream_drained(request: Any) -> None:
    """``send_drained`` for a streamed HTTP response (an event stream): return once its
    connection's buffer is under the bound; abort the connection if it stops draining."""
    limit = _max_buffered_bytes()
    if request.finished or request.channel is None:
        return
    transport = request.channel.transport
    buffered = transport_buffered_bytes(transport)
    if buffered <= limit:
        return
    stall = realtime_settings.WS_SEND_STALL_SECONDS
    lowest, progressed = buffered, time.monotonic()
    while not request.finished and request.channel is not None:
        await asyncio.sleep(DRAIN_POLL_SECONDS)
        buffered = transport_buffered_bytes(transport)
        if buffered <= limit:
            return
        now = time.monotonic()
        if buffered < lowest:
            lowest, progressed = buffered, now
        elif now - progressed > stall:
            log_event(
                logger,
                "sse_slow_consumer",
                level=logging.WARNING,
                buffered_bytes=buffered,
                limit=limit,
            )
            # Daphne tells the application (http.disconnect), which cleans up.
            transport.abortConnection()
            return


_server: Any = None


def daphne_reactor_loop(reactor: Any) -> asyncio.AbstractEventLoop | None:
    """The asyncio loop Twisted's asyncio reactor (the one Daphne installs) runs on; None
    under another reactor."""
    loop: asyncio.AbstractEventLoop | None = getattr(reactor, "_asyncioEventloop", None)
    return loop


def daphne_running_applications() -> list[asyncio.Future[Any]]:
    """This process's Daphne application instances that have not finished (none elsewhere)."""
    server = _server
    if server is None:
        return []
    running = []
    for details in list(server.connections.values()):
        instance = details.get("application_instance")
        if instance is not None and not instance.done():
            running.append(instance)
    return running


def daphne_patch() -> bool:
    """Check every internal of ``INTERNALS``, then apply every change above, once; False when
    Daphne is not installed. ``DaphneInternalsMoved`` before anything is changed if one moved."""
    if importlib.util.find_spec("daphne") is None:
        return False
    daphne_internals_check()
    from daphne import http_protocol, ws_protocol
    from daphne.access import AccessLogGenerator
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    if getattr(WebSocketProtocol, "_realtime_patched", False):
        return True

    global _protocol_wrappers, _file_descriptors
    _protocol_wrappers = (resolve("twisted.protocols.policies:ProtocolWrapper"),)
    _file_descriptors = (resolve("twisted.internet.abstract:FileDescriptor"),)

    _autobahn_logs_lazily()

    original_process = http_protocol.WebRequest.process

    def process(self: Any) -> Any:
        refusal = _upgrade_refusal
        if refusal is not None and _is_websocket_upgrade(self):
            retry_after_ms = refusal()
            if retry_after_ms is not None:
                refuse_upgrade(self, retry_after_ms)
                return None
        return original_process(self)

    http_protocol.WebRequest.process = replacing(original_process, process)

    keep_peer = replacing(http_protocol.parse_x_forwarded_for, _keep_peer)
    http_protocol.parse_x_forwarded_for = keep_peer
    ws_protocol.parse_x_forwarded_for = keep_peer
    original_close = WebSocketProtocol.serverClose
    original_send = WebSocketProtocol.serverSend
    original_reply = Server.handle_reply
    original_protocol_reply = WebSocketProtocol.handle_reply

    def protocol_reply(self: Any, message: dict[str, Any]) -> None:
        reason = message.get("reason")
        if (
            message.get("type") == "websocket.close"
            and reason
            and self.state != self.STATE_CONNECTING
        ):
            code = message.get("code") or 1000
            self.sendCloseFrame(code=code, reasonUtf8=close_reason_bytes(reason), isReply=False)
            return
        original_protocol_reply(self, message)

    original_run = Server.run

    def run(self: Any) -> None:
        global _server
        _server = self
        original_run(self)

    async def handle_reply(self: Any, protocol: Any, message: dict[str, Any]) -> None:
        await original_reply(self, protocol, message)
        if isinstance(protocol, WebSocketProtocol) and message.get("type") == "websocket.send":
            await send_drained(protocol)
        elif (
            isinstance(protocol, http_protocol.WebRequest)
            and message.get("type") == "http.response.body"
            and message.get("more_body")
        ):
            await stream_drained(protocol)

    def server_close(self: Any, code: int | None = None) -> None:
        if code in SERVER_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original_close(self, code=code)
        if code == WS_4008_SLOW_CONSUMER:
            # The consumer's queue overflowed: its close may sit behind megabytes too.
            wait_for_the_close_to_be_read(self)

    original_too_big = WebSocketProtocol._max_message_size_exceeded

    def max_message_size_exceeded(self: Any, msg_size: int, max_msg_size: int, reason: str) -> None:
        # In place of autobahn's _fail_connection, which drops TCP under failByDrop.
        # ``failedByMe`` makes autobahn discard the rest of the frame's payload unbuffered.
        self.failedByMe = True
        self.wasMaxMessagePayloadSizeExceeded = True
        log_event(
            logger,
            "ws_frame_too_big",
            level=logging.WARNING,
            size=msg_size,
            limit=max_msg_size,
        )
        self.sendCloseFrame(code=WS_1009_MESSAGE_TOO_BIG, isReply=False)

    def server_send(self: Any, content: str | bytes, binary: bool = False) -> None:
        if self.state == self.STATE_CLOSING or self.state == self.STATE_CLOSED:
            # Closing (a 4008 queued, or any close): nothing more goes into the buffer.
            return
        original_send(self, content, binary)
        buffered = transport_buffered_bytes(self.transport)
        if buffered > HARD_LIMIT_FACTOR * _max_buffered_bytes() and self.state == self.STATE_OPEN:
            slow_consumer_close(self, buffered)

    original_write_entry = AccessLogGenerator.write_entry

    def write_entry(
        self: Any,
        host: Any,
        date: Any,
        request: Any,
        status: Any = None,
        length: Any = None,
        ident: Any = None,
        user: Any = None,
    ) -> Any:
        return original_write_entry(
            self, host, date, redact(str(request)), status, length, ident, user
        )

    Server.handle_reply = replacing(original_reply, handle_reply)
    WebSocketProtocol.handle_reply = replacing(original_protocol_reply, protocol_reply)
    Server.run = replacing(original_run, run)
    WebSocketProtocol.serverClose = replacing(original_close, server_close)
    WebSocketProtocol.serverSend = replacing(original_send, server_send)
    WebSocketProtocol._max_message_size_exceeded = replacing(
        original_too_big, max_message_size_exceeded
    )
    AccessLogGenerator.write_entry = replacing(original_write_entry, write_entry)
    WebSocketProtocol._realtime_patched = True
    return True


# A close frame's payload is at most 125 bytes, two of them the code.
CLOSE_REASON_MAX_BYTES: Final = 123


def close_reason_bytes(reason: str) -> bytes:
    """``reason`` as UTF-8, cut to what a close frame holds without splitting a character."""
    raw = reason.encode("utf-8")[:CLOSE_REASON_MAX_BYTES]
    return raw.decode("utf-8", errors="ignore").encode("utf-8")


def slow_consumer_close(protocol: Any, buffered: int) -> None:
    """Queue a 4008 close behind what is buffered; autobahn aborts TCP if it is not answered."""
    log_event(
        logger,
        "ws_slow_consumer",
        level=logging.WARNING,
        buffered_bytes=buffered,
        limit=_max_buffered_bytes(),
        client=":".join(str(p) for p in protocol.client_addr) if protocol.client_addr else None,
    )
    protocol.sendCloseFrame(code=WS_4008_SLOW_CONSUMER, isReply=False)
    wait_for_the_close_to_be_read(protocol)


def wait_for_the_close_to_be_read(protocol: Any) -> None:
    """In place of autobahn's close-handshake timer, started by the close just queued: a
    client reading what was buffered before it has until it stops making progress."""
    timer = getattr(protocol, "closeHandshakeTimeoutCall", None)
    if timer is None:
        return  # autobahn set no timer (a timeout of 0): nothing to replace
    timer.cancel()
    protocol.closeHandshakeTimeoutCall = None
    unsent = transport_buffered_bytes(protocol.transport) + kernel_unsent_bytes(protocol.transport)
    now = time.monotonic()
    _watch_closing(protocol, unsent, now, None)


# How often the close of a slow consumer looks at what is still unsent.
CLOSE_WATCH_SECONDS: Final = 0.05


def _watch_closing(protocol: Any, lowest: int, progressed: float, sent_at: float | None) -> None:
    """Until the close handshake ends: abort once the unsent bytes stop shrinking for the
    stall time, or once all is sent and the client does not answer within autobahn's timeout.
    A client that reads again within the stall time reads everything up to the 4008."""
    if protocol.state == protocol.STATE_CLOSED:
        return
    transport = protocol.transport
    unsent = transport_buffered_bytes(transport) + kernel_unsent_bytes(transport)
    now = time.monotonic()
    if unsent < lowest:
        lowest, progressed = unsent, now
    if unsent == 0 and sent_at is None:
        sent_at = now
    if now - progressed > realtime_settings.WS_SEND_STALL_SECONDS or (
        sent_at is not None and now - sent_at > protocol.closeHandshakeTimeout
    ):
        protocol.onCloseHandshakeTimeout()  # autobahn's own end: unclean, TCP aborted
        return
    # Daphne runs Twisted on asyncio's loop: this callback runs on it.
    asyncio.get_running_loop().call_later(
        CLOSE_WATCH_SECONDS, _watch_closing, protocol, lowest, progressed, sent_at
    )
