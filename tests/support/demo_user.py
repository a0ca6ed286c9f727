"""A seeded demo user as tests hold it, whether seeded in-process or by a cluster."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DemoUser:
    name: str
    id: str
    token: str
