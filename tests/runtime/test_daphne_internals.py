"""Tripwires: every Daphne, autobahn and Twisted internal the adapter relies on
(``realtime_project.runtime.daphne.INTERNALS``) is there in the installed versions, and one
that moves stops the server at start, naming the behaviour, the internal and the versions.

A new pinned version that moves an internal fails here first (docs/runtime.md, "Upgrading").
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import sys
from typing import Any

import pytest

from realtime_project.runtime.daphne import (
    CHECKED_AGAINST,
    INTERNALS,
    PATCHED_PACKAGES,
    Behaviour,
    DaphneInternalsMoved,
    daphne_internals_problems,
    daphne_patch,
)
from realtime_project.runtime.internals import Internal
from tests.support.fresh_python import python_code_run

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _id(internal: Internal) -> str:
    return f"{Behaviour(internal.behaviour).name}:{internal.path}:{type(internal.shape).__name__}"


def _take_away(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove the internal at ``path`` for this test, wherever it is defined (a method from
    every class of the MRO that defines it, a module from the import system)."""
    module_name, _, qualname = path.partition(":")
    if not qualname:
        monkeypatch.setitem(sys.modules, module_name, None)
        return
    *owners, name = qualname.split(".")
    owner: Any = importlib.import_module(module_name)
    for step in owners:
        owner = getattr(owner, step)
    holders = [k for k in owner.__mro__ if name in vars(k)] if inspect.isclass(owner) else [owner]
    assert holders, f"{path} is defined nowhere"
    for holder in holders:
        monkeypatch.delattr(holder, name)


def _refusal() -> str:
    with pytest.raises(DaphneInternalsMoved) as raised:
        daphne_patch()
    message = str(raised.value)
    for package in PATCHED_PACKAGES:
        assert f"{package} {importlib.metadata.version(package)}" in message
    return message


def test_every_behaviour_has_tripwires() -> None:
    assert {Behaviour(internal.behaviour) for internal in INTERNALS} == set(Behaviour)


@pytest.mark.parametrize("behaviour", list(Behaviour), ids=lambda b: b.name)
def test_the_installed_versions_have_what_each_behaviour_relies_on(behaviour: Behaviour) -> None:
    problems = [
        (internal.path, problem)
        for internal, problem in daphne_internals_problems()
        if internal.behaviour == behaviour
    ]
    assert problems == []


def test_the_pins_are_the_versions_the_internals_were_checked_against() -> None:
    """Moving a pin means running these tripwires on the new version and then saying so in
    ``CHECKED_AGAINST``: a pin moved alone fails here."""
    with open(os.path.join(REPO_ROOT, "requirements.txt")) as requirements:
        pins = dict(
            line.strip().lower().split("==", 1)
            for line in requirements
            if "==" in line and not line.lstrip().startswith("#")
        )
    assert {package: pins.get(package) for package in PATCHED_PACKAGES} == CHECKED_AGAINST
    installed = {package: importlib.metadata.version(package) for package in PATCHED_PACKAGES}
    assert installed == CHECKED_AGAINST


def test_the_patch_applies_and_checking_again_judges_the_libraries_not_the_patch() -> None:
    assert daphne_patch()
    assert daphne_internals_problems() == []


@pytest.mark.parametrize("internal", INTERNALS, ids=_id)
def test_an_internal_gone_stops_the_start_naming_it(
    internal: Internal, monkeypatch: pytest.MonkeyPatch
) -> None:
    _take_away(internal.path, monkeypatch)
    message = _refusal()
    assert f"- {internal.behaviour}: {internal.path} should be" in message


# -- the ways an internal can move without going away ------------------------------------------


def test_a_renamed_parameter_of_what_is_called_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from autobahn.websocket.protocol import WebSocketProtocol

    def sendCloseFrame(
        self: Any, code: Any = None, reason: Any = None, isReply: Any = False
    ) -> None:
        raise AssertionError("not called")

    monkeypatch.setattr(WebSocketProtocol, "sendCloseFrame", sendCloseFrame)
    message = _refusal()
    for behaviour in (Behaviour.CLOSE_CODES, Behaviour.CLOSE_REASONS, Behaviour.OVERSIZED_FRAMES):
        assert f"- {behaviour}: autobahn.websocket.protocol:WebSocketProtocol.sendCloseFrame" in (
            message
        )
    assert "reasonUtf8" in message


def test_a_parameter_added_to_what_is_replaced_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from daphne.ws_protocol import WebSocketProtocol

    def serverClose(self: Any, code: Any = None, reason: Any = None) -> None:
        raise AssertionError("not called")

    monkeypatch.setattr(WebSocketProtocol, "serverClose", serverClose)
    message = _refusal()
    assert f"- {Behaviour.CLOSE_CODES}: daphne.ws_protocol:WebSocketProtocol.serverClose" in message
    assert "it takes (self, code, reason)" in message


def test_a_coroutine_that_is_one_no_more_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from daphne.server import Server

    def handle_reply(self: Any, protocol: Any, message: Any) -> None:
        raise AssertionError("not called")

    monkeypatch.setattr(Server, "handle_reply", handle_reply)
    message = _refusal()
    assert f"- {Behaviour.BACK_PRESSURE}: daphne.server:Server.handle_reply" in message
    assert "it is not a coroutine" in message


def test_a_state_that_is_no_longer_a_number_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from autobahn.websocket.protocol import WebSocketProtocol

    monkeypatch.setattr(WebSocketProtocol, "STATE_OPEN", "open")
    message = _refusal()
    assert (
        f"- {Behaviour.BACK_PRESSURE}: autobahn.websocket.protocol:WebSocketProtocol.STATE_OPEN"
        in message
    )


def test_a_close_timer_armed_elsewhere_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 4008 watch replaces the timer autobahn's ``sendCloseFrame`` arms: a version that
    arms it elsewhere would leave the watch cancelling nothing."""
    from autobahn.websocket.protocol import WebSocketProtocol

    def sendCloseFrame(
        self: Any, code: Any = None, reasonUtf8: Any = None, isReply: Any = False
    ) -> None:
        self.sendFrame(opcode=8)

    monkeypatch.setattr(WebSocketProtocol, "sendCloseFrame", sendCloseFrame)
    message = _refusal()
    assert "closeHandshakeTimeoutCall" in message
    assert f"- {Behaviour.BACK_PRESSURE}:" in message
    assert f"- {Behaviour.CLOSE_CODES}:" not in message


def test_a_protocol_that_is_no_longer_autobahns_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import daphne.ws_protocol

    class WebSocketProtocol:
        def serverClose(self, code: Any = None) -> None:
            raise AssertionError("not called")

    monkeypatch.setattr(daphne.ws_protocol, "WebSocketProtocol", WebSocketProtocol)
    message = _refusal()
    assert (
        f"- {Behaviour.CLOSE_CODES}: daphne.ws_protocol:WebSocketProtocol should be a subclass"
        in message
    )


def test_a_refused_start_patches_nothing() -> None:
    """In a fresh interpreter (this one's Daphne is patched already): an internal gone, the
    patch raises before anything of Daphne or autobahn is replaced."""
    script = """
import autobahn.websocket.protocol as autobahn_protocol
import daphne.access, daphne.http_protocol, daphne.server, daphne.ws_protocol

before = {
    "process": daphne.http_protocol.WebRequest.process,
    "parse": daphne.http_protocol.parse_x_forwarded_for,
    "reply": daphne.server.Server.handle_reply,
    "close": daphne.ws_protocol.WebSocketProtocol.serverClose,
    "pformat": autobahn_protocol.pformat,
    "access": daphne.access.AccessLogGenerator.write_entry,
}
del autobahn_protocol.WebSocketProtocol.onCloseHandshakeTimeout
from realtime_project.runtime.daphne import DaphneInternalsMoved, daphne_patch
try:
    daphne_patch()
except DaphneInternalsMoved as error:
    print(error)
else:
    raise SystemExit("patched")
after = {
    "process": daphne.http_protocol.WebRequest.process,
    "parse": daphne.http_protocol.parse_x_forwarded_for,
    "reply": daphne.server.Server.handle_reply,
    "close": daphne.ws_protocol.WebSocketProtocol.serverClose,
    "pformat": autobahn_protocol.pformat,
    "access": daphne.access.AccessLogGenerator.write_entry,
}
changed = sorted(name for name in before if before[name] is not after[name])
print("changed:", changed)
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "realtime_project.settings"}
    result = python_code_run(script, env=env)
    assert result.returncode == 0, result.stderr
    assert f"- {Behaviour.BACK_PRESSURE}: " in result.stdout
    assert "WebSocketProtocol.onCloseHandshakeTimeout should be" in result.stdout
    assert "changed: []" in result.stdout
