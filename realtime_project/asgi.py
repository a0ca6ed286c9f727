"""The ASGI application: the only place that builds the router and the middleware.

HTTP goes to Django, but for ``/api/events/stream`` (server-sent events, docs/sse.md), which
goes through the stream's authentication to its consumer; ``/ws/`` goes through the origin
check and authentication to the chat consumer. Run it with
``daphne realtime_project.asgi:application``.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_project.settings")
# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from accounts.auth import websocket_stack  # noqa: E402
from accounts.stream_auth import StreamAuthMiddleware  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from chat.stream import EventStreamConsumer  # noqa: E402
from connections.lifecycle import drain_install_on_reactor, instance_lifecycle  # noqa: E402
from health.asgi import health_router  # noqa: E402
from realtime_project.runtime.collector import collector_tune  # noqa: E402
from realtime_project.runtime.daphne import daphne_patch  # noqa: E402
from realtime_project.runtime.proxy_headers import proxy_headers  # noqa: E402
from realtime_project.runtime.routing import URLRouter  # noqa: E402

# Typed as views for ``re_path``, which Channels' URLRouter accepts ASGI applications in.
event_stream: Any = StreamAuthMiddleware(EventStreamConsumer.as_asgi())
django_http: Any = django_asgi_app

# Channels' ProtocolTypeRouter, a coroutine, stays at the top: the connect gate
# (accounts.admission) counts a connect from the first step of the application's task. Were
# every layer above it a plain function, the gate would count it from Daphne's handshake
# parse instead, and shed far more of a burst (docs/benchmarks.md, 2026-12-06 memory).
application = proxy_headers(
    ProtocolTypeRouter(
        {
            # The instance's loops start with its first request (the load balancer's probe),
            # which is answered on the event loop, before Django's middleware.
            "http": instance_lifecycle(
                health_router(
                    URLRouter(
                        [
                            re_path(r"^api/events/stream/?$", event_stream),
                            re_path(r"", django_http),
                        ]
                    )
                )
            ),
            "websocket": websocket_stack(URLRouter(websocket_urlpatterns)),
        }
    )
)

# Under Daphne, once its internals are checked: upgrades refused 503, protocol close codes
# and reasons, 1009 for any oversized frame, 4008 past WS_MAX_BUFFERED_BYTES unsent, no blind
# X-Forwarded-For, an access log without ?token=. A Daphne whose internals moved fails here.
daphne_patch()
# Under Daphne: SIGTERM drains this instance (health 503, sockets closed 1012) before exiting.
drain_install_on_reactor()
# Last: the collector's thresholds, and everything built above moved out of its sight.
collector_tune()
