"""The two hottest writes, an agent's proposal and a reviewer's approval, with one crossing to a kept thread (issue 21,
docs/BENCHMARKS.md section 9).

Through Django's handler, the API's middleware and DRF's dispatch, a write cost its service and as much again in the
framework around it, spread thin over many layers. ``PlainWrites`` takes ``POST /api/v1/actions`` with an agent key
and ``POST /api/v1/actions/{id}/approve`` with a reviewer token from the event loop to the API handler's kept thread
once (config.api_handler: its threads, its turns, its signals), and does there what DRF and the view do, in their
order and with their own parts: the credentials' authentication (``AgentKeyAuthentication``, which audits the use of a
refused key; ``ReviewerTokenAuthentication``), the agent key's budgets (``throttling.retry_after``, the view's scopes),
the API's JSON parser, the view's own function (``views.propose``, ``views.approve``: the body's checks, the
serializer, the service, the presenter), the API's problem handler for every refusal, and Django's own answer to a
lost database or a bug. So a refusal is decided, audited and worded in one place, whichever way the request came.

It takes only a request it fully understands, and decides that from the request's head, before a byte of the body
is read: everything else goes on to ``app`` (the agent reads, then the API's Django handler) untouched. Not taken:
other credentials than the write's own (an agent key on the approval is DRF's to refuse and audit); a cookie (a session
could be in play); a query string (DRF's ``?format=``); a body that is not ``application/json`` with a Content-Length,
or a Transfer-Encoding; an Accept the views would negotiate differently; a host not allowed; a redirect to HTTPS due.
tests/api/test_plain_writes.py sends each request both ways and compares the answers.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.core import signals
from django.core.exceptions import PermissionDenied, RequestAborted, SuspiciousOperation
from django.core.handlers.asgi import ASGIRequest, get_script_prefix
from django.core.handlers.exception import response_for_exception
from django.http import Http404, HttpResponse
from django.middleware.security import SecurityMiddleware
from django.urls import set_script_prefix
from django.utils.log import log_response
from rest_framework import authentication, exceptions
from rest_framework.views import APIView

from agents.authentication import AgentKeyAuthentication
from agents.throttling import retry_after
from approvals.api import shortcuts, views
from approvals.api.authentication import ReviewerTokenAuthentication
from approvals.api.parsers import StrictJSONParser
from approvals.api.problems import PROBLEM_CONTENT_TYPE, problem_exception_handler
from approvals.api.renderers import render_json
from approvals.errors import ServiceError
from approvals.web.middleware import DatabaseUnavailableMiddleware
from config.api_handler import APIHandler
from config.request_id import HEADER, bind_request_id, reset_request_id


@dataclass(frozen=True)
class Write:
    """One write taken here: its path, the credentials' scheme and authentication (DRF's class that takes them), its
    view (for its Allow header and rate scopes), and the view's own function, as ``act(principal, path's match, parsed
    body, request) -> (presented body, status)``."""

    path: re.Pattern[str]
    scheme: str
    authentication: authentication.BaseAuthentication
    view: type[APIView]
    act: Callable[[Any, re.Match[str], Any, ASGIRequest], tuple[dict, int]]


def _propose(agent, match: re.Match[str], data, request: ASGIRequest) -> tuple[dict, int]:
    return views.propose(agent, data, request.headers.get("Idempotency-Key"))


def _approve(reviewer, match: re.Match[str], data, request: ASGIRequest) -> tuple[dict, int]:
    return views.approve(reviewer, uuid.UUID(match["action_id"]), data), 200


WRITES = (
    Write(re.compile("/api/v1/actions"), "bearer", AgentKeyAuthentication(), views.ActionsView, _propose),
    Write(
        re.compile(rf"/api/v1/actions/(?P<action_id>{shortcuts.UUID})/approve"),
        "token",
        ReviewerTokenAuthentication(),
        views.ApproveView,
        _approve,
    ),
)


class PlainWrites:
    """ASGI: a plain proposal or approval answered here, on ``handler``'s kept thread; everything else by ``app``."""

    def __init__(self, app, handler: APIHandler) -> None:
        self.app = app
        self.handler = handler
        self.enabled = _answerable_here()
        self._security = SecurityMiddleware(lambda request: None)
        self._database_unavailable = DatabaseUnavailableMiddleware(lambda request: None)
        # DRF's WWW-Authenticate is its first authentication class's, whichever one refused.
        self._challenge = AgentKeyAuthentication().authenticate_header(None)
        self._parser = StrictJSONParser()
        self._allow = {write.view: shortcuts.allowed_methods(write.view) for write in WRITES}

    async def __call__(self, scope, receive, send) -> None:
        if self.enabled and scope["type"] == "http" and scope["method"] == "POST":
            for write in WRITES:
                match = write.path.fullmatch(scope["path"])
                if match is not None:
                    request = self._taken(scope, write)
                    if request is not None:
                        await self._answer(scope, request, write, match, receive, send)
                        return
                    break
        await self.app(scope, receive, send)

    def _taken(self, scope, write: Write) -> ASGIRequest | None:
        """The request as the view would see it, if it is one answered here (read from its head alone)."""
        if scope["query_string"]:
            return None
        request = ASGIRequest(scope, None)  # the body is read once the request is taken
        meta = request.META
        scheme, _, _ = authentication.get_authorization_header(request).partition(b" ")
        if (
            scheme.lower().decode("latin-1") != write.scheme
            or not shortcuts.plain_head(request)
            or "HTTP_TRANSFER_ENCODING" in meta
            or meta.get("CONTENT_TYPE") != "application/json"
            or not _positive(meta.get("CONTENT_LENGTH"))
        ):
            return None
        try:
            request.get_host()
            if self._security.process_request(request) is not None:  # SECURE_SSL_REDIRECT: the views redirect
                return None
        except SuspiciousOperation:  # a Host not allowed: the views' 400
            return None
        return request

    async def _answer(self, scope, request: ASGIRequest, write: Write, match: re.Match[str], receive, send) -> None:
        started = time.perf_counter()
        try:
            body_file = await self.handler.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        token = bind_request_id(request.headers.get(HEADER))
        try:
            with body_file:
                async with self.handler.kept_thread():
                    response = await self.handler.in_turn(
                        scope, self._respond_on_thread, request, write, match, body_file
                    )
            await shortcuts.send_answer(self.handler, self._security, request, response, send, started)
        finally:
            reset_request_id(token)

    def _respond_on_thread(
        self, request: ASGIRequest, write: Write, match: re.Match[str], body_file: IO[bytes]
    ) -> HttpResponse:
        # As the handler's request: between request_started and request_finished (the database connection's checks
        # and its return), a 4xx or 5xx logged as Django logs it.
        signals.request_started.send(sender=APIHandler, scope=request.scope)
        try:
            response = self._response(request, write, match, body_file)
            if response.status_code >= 400:
                log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
            return response
        finally:
            signals.request_finished.send(sender=APIHandler)

    def _response(self, request: ASGIRequest, write: Write, match: re.Match[str], body_file: IO[bytes]) -> HttpResponse:
        try:
            try:
                body, status = self._act(request, write, match, body_file)
            except (exceptions.APIException, ServiceError, Http404, PermissionDenied) as exc:
                return self._problem(exc, write)
        except Exception as exc:  # a lost database (503), or a bug (500): as the handler answers them
            return self._database_unavailable.process_exception(request, exc) or response_for_exception(request, exc)
        response = HttpResponse(render_json(body), status=status, content_type="application/json")
        response["Allow"] = self._allow[write.view]
        return response

    def _act(self, request: ASGIRequest, write: Write, match: re.Match[str], body_file: IO[bytes]) -> tuple[dict, int]:
        """What DRF's dispatch and the view do for these credentials, in their order."""
        # None only without the write's scheme, which is not taken here. DRF's permission (IsAgentOrReviewer,
        # IsReviewer) holds for what authenticates here: an agent's key, an active reviewer's token.
        principal, auth = write.authentication.authenticate(request)
        wait = retry_after(auth, write.view, "POST")
        if wait is not None:
            raise exceptions.Throttled(wait)
        return write.act(principal, match, self._parser.parse(body_file), request)

    def _problem(self, exc: Exception, write: Write) -> HttpResponse:
        """The problem DRF's dispatch answers for ``exc``, through the API's exception handler."""
        if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
            exc.auth_header = self._challenge
        problem = problem_exception_handler(exc, {})
        response = HttpResponse(
            render_json(problem.data), status=problem.status_code, content_type=PROBLEM_CONTENT_TYPE
        )
        for name, value in problem.items():
            if name != "Content-Type":
                response[name] = value
        response["Allow"] = self._allow[write.view]
        return response


def _positive(length: str | None) -> bool:
    return length is not None and length.isascii() and length.isdigit() and int(length) > 0


def _answerable_here() -> bool:
    """The API's authentication as shipped (an agent key first, then a reviewer token), its throttling, parser and
    problem handler as shipped."""
    rest = settings.REST_FRAMEWORK
    classes = list(rest.get("DEFAULT_AUTHENTICATION_CLASSES", []))
    return (
        shortcuts.answerable_here()
        and classes[1:2] == [shortcuts.dotted(ReviewerTokenAuthentication)]
        and list(rest.get("DEFAULT_PARSER_CLASSES", [])) == [shortcuts.dotted(StrictJSONParser)]
        and rest.get("EXCEPTION_HANDLER") == shortcuts.dotted(problem_exception_handler)
    )
