"""What the API's two ASGI shortcuts share (approvals.api.agent_reads, approvals.api.plain_writes): whether they may
answer at all, how they read a request's head the plain way, and how their answer goes out with what the API's chain
gives every response.

Each shortcut answers only what the API's Django handler would answer the same way; everything else goes on to the
handler untouched. So both stand aside when the API is configured otherwise than shipped.
"""

from __future__ import annotations

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.http import HttpResponse
from django.middleware.security import SecurityMiddleware

from agents.authentication import AgentKeyAuthentication
from agents.throttling import AgentKeyThrottle
from config.request_id import HEADER, get_request_id, log_request

UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # Django's <uuid:> converter
# DRF's content negotiation with the API's one renderer: these choose it, compact. Others (indent=, text/html) go on.
ACCEPTED = frozenset({None, "*/*", "application/json"})
# The API chain's middleware as shipped (settings.API_MIDDLEWARE), whose part for an agent's plain request the
# shortcuts do themselves (the request id, SecurityMiddleware's headers; no session, no other method, a lost
# database as DatabaseUnavailableMiddleware answers it). A chain with anything else keeps every request.
STANDS_IN_FOR = (
    "config.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "approvals.sso.middleware.SessionMaxAgeMiddleware",
    "approvals.web.middleware.MethodNotAllowedMiddleware",
    "approvals.web.middleware.DatabaseUnavailableMiddleware",
)


def answerable_here() -> bool:
    """The API's middleware, authentication and throttling as shipped: the chain the shortcuts stand in for, an agent
    key first, counted by AgentKeyThrottle alone."""
    rest = settings.REST_FRAMEWORK
    return (
        tuple(settings.API_MIDDLEWARE) == STANDS_IN_FOR
        and rest.get("DEFAULT_AUTHENTICATION_CLASSES", [None])[0] == dotted(AgentKeyAuthentication)
        and list(rest.get("DEFAULT_THROTTLE_CLASSES", [])) == [dotted(AgentKeyThrottle)]
    )


def plain_head(request: ASGIRequest) -> bool:
    """No cookie (a session could be in play) and an Accept the API's renderer answers compactly."""
    accept = request.META.get("HTTP_ACCEPT")
    return "HTTP_COOKIE" not in request.META and (accept.strip() if accept is not None else None) in ACCEPTED


async def send_answer(
    handler: ASGIHandler,
    security: SecurityMiddleware,
    request: ASGIRequest,
    response: HttpResponse,
    send,
    started: float,
) -> None:
    """``response`` finished as the API's chain finishes it (the request id, SecurityMiddleware's headers), sent, and
    the request's log line written. ``started``: its ``time.perf_counter()`` when it came in."""
    response[HEADER] = get_request_id()
    security.process_response(request, response)
    await handler.send_response(response, send)
    log_request(request.method, request.path, response.status_code, started)


def allowed_methods(view_class: type) -> str:
    """The Allow header DRF's view answers with (a view set up for a request also takes HEAD)."""
    view = view_class()
    view.setup(None)
    return ", ".join(view.allowed_methods)


def dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
