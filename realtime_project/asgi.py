"""The ASGI application: the only place that builds the router and the middleware.

HTTP goes to Django; ``/ws/`` goes through the origin check and authentication to the chat
consumer. Run it with ``daphne realtime_project.asgi:application``.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_project.settings")
# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chat.routing import websocket_urlpatterns  # noqa: E402
from connections.auth import websocket_stack  # noqa: E402
from health.access_log import daphne_access_log_scrub  # noqa: E402
from health.asgi import health_router  # noqa: E402
from health.drain import drain_install_on_reactor  # noqa: E402

application = ProtocolTypeRouter(
    {
        # The load balancer's probe is answered on the event loop, before Django's middleware.
        "http": health_router(django_asgi_app),
        "websocket": websocket_stack(URLRouter(websocket_urlpatterns)),
    }
)

# Under Daphne: its access log keeps its lines but never the ?token= of a WebSocket URL.
daphne_access_log_scrub()
# Under Daphne: SIGTERM drains this instance (health 503, sockets closed 1012) before exiting.
drain_install_on_reactor()
