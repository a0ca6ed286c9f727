"""No token reaches a log: not Daphne's, not HAProxy's, not ours."""

from __future__ import annotations

import pytest

from scripts.procs import http_get
from tests.ops.support import open_socket, token
from tests.support.async_poll import async_wait_until

pytestmark = pytest.mark.cluster


async def test_a_token_in_the_query_string_never_reaches_a_log(start_cluster) -> None:
    cluster = start_cluster(instances=1, firestore=False, LOG_LEVEL="DEBUG")
    secret = token(cluster, "alice")
    (instance,) = cluster.instances
    for url in (instance.ws_url, cluster.ws_url):
        client, hello = await open_socket(cluster, "alice", url)
        assert hello["type"] == "connected"
        await client.close()
    for base in (instance.base_url, cluster.url):
        http_get(f"{base}/api/health?token={secret}")
        http_get(f"{base}/api/users/status?ids=1&token={secret}")
    # The requests were logged (so the check below looks at real log lines)...
    await async_wait_until(
        lambda: "/api/users/status" in (cluster.log_dir / "haproxy.log").read_text(),
        timeout=5,
        what="HAProxy's log line",
    )
    cluster.stop()  # flush and close every log
    logs = sorted(cluster.log_dir.glob("*.log"))
    assert any("daphne" in p.name for p in logs) and any("haproxy" in p.name for p in logs)
    daphne_log = next(p for p in logs if "daphne" in p.name).read_text(errors="replace")
    # Daphne's own access log is on, and its request lines keep everything but the token.
    assert "WSCONNECTING /ws/" in daphne_log
    assert "GET /api/users/status?ids=1&token=[redacted]" in daphne_log
    # ...and no line carries the token.
    for path in logs:
        assert secret not in path.read_text(errors="replace"), path.name
