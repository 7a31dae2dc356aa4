from __future__ import annotations

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

from django.conf import settings

from config import request_metrics

# First, before anything imports prometheus_client: the workers of `uvicorn --workers N` count requests into one
# directory per server, which /metrics adds up (config/request_metrics.py says why).
request_metrics.prepare_process(settings.COUNTERSIGN_METRICS_DIR)

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from approvals.api.wait import LONG_POLL_PATH  # noqa: E402
from config.api_handler import APIHandler, route_api  # noqa: E402

api_handler = APIHandler(threads=settings.API_THREADS, long_polls=LONG_POLL_PATH)

from approvals.api import loop_connections  # noqa: E402
from approvals.api.agent_reads import AgentReads  # noqa: E402
from approvals.api.plain_writes import PlainWrites  # noqa: E402

# An agent's plain polling reads are answered on the event loop; its plain proposals and a reviewer's plain
# approvals with one crossing to the API handler's thread; everything else by the API's handler. The loop's
# connections are shared with the wait's reads after a change (approvals.api.wait).
agent_reads = AgentReads(api_handler, connections=loop_connections.shared)
api_asgi_app = PlainWrites(agent_reads, handler=api_handler)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import get_resolver  # noqa: E402

from approvals.gateway.http import GatewayApp  # noqa: E402
from approvals.live.routing import ExactOriginValidator, websocket_urlpatterns  # noqa: E402
from approvals.outbox import marks  # noqa: E402
from approvals.web.middleware import RequestGuard  # noqa: E402

# Every request is counted and timed by route group, refused ones included (config/request_metrics.py).
# The guard runs before Django reads a byte: size limits, unreadable paths and query strings (approvals.web.middleware).
# Sockets open only from the site's exact origin, port included (approvals.live.routing).
# At shutdown (the lifespan protocol) the pushes noted for their batch are marked (approvals.outbox.marks).
# /gateway/ is answered by the gateway itself, before the guard and Django: it reads the path as sent, limits its
# own bodies and answers in problem JSON (approvals.gateway.http).
application = request_metrics.RequestMetrics(
    GatewayApp(
        RequestGuard(
            ProtocolTypeRouter(
                {
                    "http": route_api(api_asgi_app, django_asgi_app, prefixes=settings.API_PATHS),
                    "websocket": ExactOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
                    "lifespan": marks.lifespan,
                }
            )
        )
    )
)

# Everything loaded so far lives as long as the process: move it out of the garbage collector's sight. A full
# collection otherwise walks these ~130k objects, pausing the process (every request and socket on it) for
# 60-75 ms now and then (6.5 ms at most once frozen): the slowest proposals and live events (docs/BENCHMARKS.md).
get_resolver().url_patterns  # noqa: B018 (imports the views and all they import, before the freeze)
gc.freeze()
