"""Access to the project's namespaced settings (``settings.REALTIME``).

Read through ``realtime_settings.NAME`` at call time, never copied at import, so that
``override_settings(REALTIME=...)`` in tests and the environment at start both apply.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings


class _RealtimeSettings:
    def __getattr__(self, name: str) -> Any:
        try:
            return settings.REALTIME[name]
        except KeyError:
            raise AttributeError(f"settings.REALTIME has no key {name!r}") from None


realtime_settings = _RealtimeSettings()
