"""The body and signature of one webhook call (PROTOCOL.md, "Webhooks")."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import datetime

SIGNATURE_HEADER = "X-Webhook-Signature"


def batch_body(*, batch_id: str, at: datetime, events: Sequence[str]) -> bytes:
    """The call's body; ``events`` are each one JSON object's text."""
    head = json.dumps({"id": batch_id, "time": at.isoformat()}, separators=(",", ":"))[:-1]
    return f'{head},"events":[{",".join(events)}]}}'.encode()


def signature(*, body: bytes, secret: str) -> str:
    """``sha256=<hex HMAC-SHA256 of the exact body bytes>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(*, body: bytes, secret: str, header: str) -> bool:
    return hmac.compare_digest(signature(body=body, secret=secret), header)
