"""The embedded default's ``SECRET_KEY``: random, made once, kept in a git-ignored file.

A key written into the source would sign every deployment's sessions alike. With no
``SECRET_KEY`` in the environment, one process makes a random key and keeps it in
``.secret-key`` (``SECRET_KEY_FILE``) so restarts keep sessions valid. Several instances
(``REDIS_URL`` set) must all share one key, which a file on one machine cannot promise: they
refuse to start and say which variable to set.

A key from the environment is checked too (``secret_key_check``): a placeholder copied from
an example manifest is public, so whoever reads it can sign sessions for any user. Such a key
is refused everywhere; a weak one (Django's own measure: fewer than 50 characters or 5
distinct ones, or Django's ``django-insecure-`` prefix) is refused where several instances
share it, which is where it guards every session of the deployment.
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
MIN_DISTINCT_CHARACTERS = 5

# Values that example files and tutorials ship; compared after trimming and lower-casing.
KNOWN_PLACEHOLDERS = frozenset(
    {
        "change-me",
        "changeme",
        "change_me",
        "change-this",
        "secret",
        "secret-key",
        "secret_key",
        "your-secret-key",
        "your-secret-key-here",
        "replace-me",
        "placeholder",
        "insecure",
        "django-insecure",
        "xxx",
    }
)

_HOW_TO_MAKE_ONE = "python -c 'import secrets; print(secrets.token_urlsafe(50))'"


def secret_key_check(key: str, *, several_instances: bool) -> str:
    """``key`` itself, unless it is a known placeholder or, for several instances, weak."""
    if key.strip().lower() in KNOWN_PLACEHOLDERS:
        raise ImproperlyConfigured(
            f"SECRET_KEY is a published placeholder; set a random one (generate one with: "
            f"{_HOW_TO_MAKE_ONE})."
        )
    weak = (
        len(key) < MIN_LENGTH
        or len(set(key)) < MIN_DISTINCT_CHARACTERS
        or key.startswith("django-insecure-")
    )
    if weak and several_instances:
        raise ImproperlyConfigured(
            f"SECRET_KEY is too weak for instances that share it (REDIS_URL is set): at least "
            f"{MIN_LENGTH} characters, {MIN_DISTINCT_CHARACTERS} distinct, random (generate "
            f"one with: {_HOW_TO_MAKE_ONE})."
        )
    return key


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
