"""Per-test clusters of real Daphne instances over their own Redis (tests/ops/conftest.py)."""

from tests.ops.conftest import db_template, start_cluster  # noqa: F401
