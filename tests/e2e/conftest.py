"""The cross-instance cluster fixtures (tests/support/cluster.py) for every e2e module."""

from tests.support.cluster import cluster, e2e_cluster, sockets  # noqa: F401
