"""The embedded default's ``SECRET_KEY``: random, made once, kept in a git-ignored file.

A key written into the source would sign every deployment's sessions alike. With no
``SECRET_KEY`` in the environment, one process makes a random key and keeps it in
``.secret-key`` (``SECRET_KEY_FILE``) so restarts keep sessions valid. Several instances
(``REDIS_URL`` set) must all share one key, which a file on one machine cannot promise: they
refuse to start and say which variable to set.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import tempfile
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

MIN_LENGTH = 50


def embedded_secret_key(*, path: Path, several_instances: bool) -> str:
    if several_instances:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when REDIS_URL is set: every instance must sign with "
            "the same key (generate one with: python -c 'import secrets; "
            "print(secrets.token_urlsafe(50))')."
        )
    with contextlib.suppress(OSError):
        key = path.read_text().strip()
        if len(key) >= MIN_LENGTH:
            return key
    key = secrets.token_urlsafe(MIN_LENGTH)
    try:
        # Write aside, then link into place: two processes starting at once agree on one key.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".secret-key-")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(key + "\n")
            os.chmod(temp, 0o600)
            with contextlib.suppress(FileExistsError):
                os.link(temp, path)
        finally:
            os.unlink(temp)
        return path.read_text().strip()
    except OSError as exc:
        # A read-only image: a key for this process's lifetime (sessions end at restart).
        print(
            f"warning: cannot keep a SECRET_KEY in {path} ({exc}); using a per-process key",
            file=sys.stderr,
        )
        return key
