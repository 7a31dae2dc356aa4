"""Websocket routes, and who may open them: only pages served from this site's exact origin.

Channels' ``AllowedHostsOriginValidator`` compared host names only, so a page on another port of the same host
(any other service there, or an attacker's) could open a socket carrying the reviewer's cookies. Here the
``Origin`` must equal scheme, host and port of the site itself: each of ``COUNTERSIGN_WEBSOCKET_ORIGINS`` when
set (behind a proxy that terminates TLS or rewrites the host), otherwise the socket's own scheme and ``Host``
(which must be on ``ALLOWED_HOSTS``, as for any page).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.urls import path, re_path

from approvals.live.consumers import ReviewerEventsConsumer

DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` lower-cased, the default port left out; None if it is not such an origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in DEFAULT_PORTS or not host or parts.path or parts.query or parts.fragment or parts.username:
        return None
    if ":" in host:
        host = f"[{host}]"  # IPv6, as it is written in an origin
    return f"{scheme}://{host}" + (f":{port}" if port and port != DEFAULT_PORTS[scheme] else "")


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def site_origins(scope) -> set[str]:
    """The origins this socket's pages are served from."""
    configured = settings.COUNTERSIGN_WEBSOCKET_ORIGINS
    if configured:
        return {o for o in (normalize_origin(origin) for origin in configured) if o}
    host = _header(scope, b"host") or ""
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return set()
    scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    own = normalize_origin(f"{scheme}://{host}")
    return {own} if own else set()


def origin_allowed(scope) -> bool:
    origin = _header(scope, b"origin")
    if origin is None:
        return False  # browsers always send one; a socket without it is not from our pages
    normalized = normalize_origin(origin)
    return normalized is not None and normalized in site_origins(scope)


class ExactOriginValidator:
    """ASGI middleware for websockets: refuse the handshake (403) unless the Origin is this site's own."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)


websocket_urlpatterns = [
    path("ws/events/", ReviewerEventsConsumer.as_asgi()),
    # Any other socket path is refused cleanly (Channels' router would raise, a 500 during the handshake).
    re_path(r"", WebsocketDenier.as_asgi()),
]
