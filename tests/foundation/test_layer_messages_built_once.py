"""Each layer message is built by its one function (docs/channel-layer.md, "The project's layer
messages"): no app spells one as a dict of its own, which would carry no version or a field
of another shape.

Read from the source with ``ast``: a dict display whose ``"type"`` is a declared message
type, by its string or by its ``*_MESSAGE_TYPE`` name, anywhere but the declaring modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from chat.layer_messages import SOCKET_VERSIONS

ROOT = Path(__file__).resolve().parents[2]
APPS = ("realtime_project", "connections", "accounts", "webhooks", "presence", "chat", "health")
DECLARING = {ROOT / "chat" / "layer_messages.py", ROOT / "connections" / "layer_messages.py"}
# The layer's own message, built by the layer (which knows nothing of this project).
BUILT_BY_THE_LAYER = {"channel.overflow"}
DECLARED = set(SOCKET_VERSIONS) - BUILT_BY_THE_LAYER


def _names_a_message_type(node: ast.expr | None) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in DECLARED
    if isinstance(node, ast.Name):
        return node.id.endswith("_MESSAGE_TYPE")
    if isinstance(node, ast.Attribute):
        return node.attr.endswith("_MESSAGE_TYPE")
    return False


def hand_built(source: str, filename: str) -> Iterator[int]:
    """The lines of ``source`` that build a declared layer message as a dict."""
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value == "type"
                    and _names_a_message_type(value)
                ):
                    yield node.lineno


def test_no_app_builds_a_layer_message_by_hand() -> None:
    offenders = sorted(
        f"{path.relative_to(ROOT)}:{line}"
        for app in APPS
        for path in (ROOT / app).rglob("*.py")
        if path not in DECLARING and "migrations" not in path.parts
        for line in hand_built(path.read_text(), str(path))
    )
    assert offenders == []


def test_a_hand_built_message_is_found() -> None:
    """The check above sees the shapes it looks for (the way healing once built its join)."""
    source = (
        'a = {"type": events.JOIN_MESSAGE_TYPE, "conversation_id": cid, "seq": 0}\n'
        'b = {"type": "connection.close", "code": 1012}\n'
        'c = {"type": CLOSE_MESSAGE_TYPE, "code": 1012}\n'
        'd = {"type": "ack", "ref": None}\n'
    )
    assert list(hand_built(source, "example.py")) == [1, 2, 3]
