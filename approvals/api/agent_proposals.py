"""An agent's proposal, ``POST /api/v1/actions``, with one crossing to a kept thread (issue 21, docs/BENCHMARKS.md
section 9).

Through Django's handler, the API's middleware and DRF's dispatch, a proposal cost its service and as much again in
the framework around it, spread thin over many layers. ``AgentProposals`` takes an agent's proposal from the event
loop to the API handler's kept thread once (config.api_handler: its threads, its turns, its signals) and does there
what the view does, in the view's order and with the view's own parts: the agent key's authentication
(``AgentKeyAuthentication``, which audits the use of a refused key), the rate limit (``AgentKeyThrottle``'s scopes for
the view), the API's JSON parser, ``views.propose`` (the body's checks, ``ProposalInput``, ``propose_action``, the
presenter), the API's problem handler for every refusal, and Django's own answer to a lost database or a bug. So a
refusal is decided, audited and worded in one place, whichever way the request came.

It takes only a request it fully understands, and decides that from the request's head, before a byte of the body
is read: everything else goes to the API's Django handler untouched. Not taken: no ``Bearer`` credentials; a cookie (a
session could be in play); a query string (DRF's ``?format=``); a Content-Type other than ``application/json``, or
no Content-Length (DRF reads no body then); an Accept the views would negotiate differently; a host not allowed; a
redirect to HTTPS due. tests/api/test_agent_proposals.py sends each request both ways and compares the answers.
"""

from __future__ import annotations

import time
from typing import IO

from django.conf import settings
from django.core import signals
from django.core.exceptions import PermissionDenied, RequestAborted, SuspiciousOperation
from django.core.handlers.asgi import ASGIRequest, get_script_prefix
from django.core.handlers.exception import response_for_exception
from django.http import Http404, HttpResponse
from django.middleware.security import SecurityMiddleware
from django.urls import set_script_prefix
from django.utils.log import log_response
from rest_framework import exceptions

from agents.authentication import AgentKeyAuthentication, bearer_credentials
from agents.ratelimit import hit
from agents.throttling import AgentKeyThrottle
from approvals.api import agent_reads, views
from approvals.api.parsers import StrictJSONParser
from approvals.api.problems import PROBLEM_CONTENT_TYPE, problem_exception_handler
from approvals.api.renderers import render_json
from approvals.errors import ServiceError
from approvals.web.middleware import DatabaseUnavailableMiddleware
from config.api_handler import APIHandler
from config.request_id import HEADER, bind_request_id, get_request_id, log_request, reset_request_id

PATH = "/api/v1/actions"


class AgentProposals:
    """ASGI: an agent's plain proposal answered here, on ``handler``'s kept thread; everything else by ``app``."""

    def __init__(self, app, handler: APIHandler) -> None:
        self.app = app
        self.handler = handler
        self.enabled = _answerable_here()
        self._security = SecurityMiddleware(lambda request: None)
        self._database_unavailable = DatabaseUnavailableMiddleware(lambda request: None)
        self._authentication = AgentKeyAuthentication()
        self._parser = StrictJSONParser()
        self._scopes = AgentKeyThrottle.scopes(views.ActionsView, "POST")
        self._allow = agent_reads.allowed_methods(views.ActionsView)

    async def __call__(self, scope, receive, send) -> None:
        if self.enabled and scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == PATH:
            request = self._taken(scope)
            if request is not None:
                await self._answer(scope, request, receive, send)
                return
        await self.app(scope, receive, send)

    def _taken(self, scope) -> ASGIRequest | None:
        """The request as the view would see it, if it is one answered here (read from its head alone)."""
        if scope["query_string"]:
            return None
        request = ASGIRequest(scope, None)  # the body is read once the request is taken
        meta = request.META
        accept = meta.get("HTTP_ACCEPT")
        if (
            "HTTP_COOKIE" in meta
            or "HTTP_TRANSFER_ENCODING" in meta
            or meta.get("CONTENT_TYPE") != "application/json"
            or not _positive(meta.get("CONTENT_LENGTH"))
            or (accept.strip() if accept is not None else None) not in agent_reads.ACCEPTED
            or bearer_credentials(request) is None
        ):
            return None
        try:
            request.get_host()
            if self._security.process_request(request) is not None:  # SECURE_SSL_REDIRECT: the views redirect
                return None
        except SuspiciousOperation:  # a Host not allowed: the views' 400
            return None
        return request

    async def _answer(self, scope, request: ASGIRequest, receive, send) -> None:
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
                    response = await self.handler.in_turn(scope, self._respond_on_thread, request, body_file)
            response[HEADER] = get_request_id()
            self._security.process_response(request, response)
            await self.handler.send_response(response, send)
            log_request("POST", request.path, response.status_code, started)
        finally:
            reset_request_id(token)

    def _respond_on_thread(self, request: ASGIRequest, body_file: IO[bytes]) -> HttpResponse:
        # As the handler's request: between request_started and request_finished (the database connection's checks
        # and its return), a 4xx or 5xx logged as Django logs it.
        signals.request_started.send(sender=APIHandler, scope=request.scope)
        try:
            response = self._response(request, body_file)
            if response.status_code >= 400:
                log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
            return response
        finally:
            signals.request_finished.send(sender=APIHandler)

    def _response(self, request: ASGIRequest, body_file: IO[bytes]) -> HttpResponse:
        try:
            try:
                body, status = self._propose(request, body_file)
            except (exceptions.APIException, ServiceError, Http404, PermissionDenied) as exc:
                return self._problem(request, exc)
        except Exception as exc:  # a lost database (503), or a bug (500): as the handler answers them
            return self._database_unavailable.process_exception(request, exc) or response_for_exception(request, exc)
        response = HttpResponse(render_json(body), status=status, content_type="application/json")
        response["Allow"] = self._allow
        return response

    def _propose(self, request: ASGIRequest, body_file: IO[bytes]) -> tuple[dict, int]:
        """What DRF's dispatch and ActionsView.post do for an agent's key, in their order."""
        agent, key = self._authentication.authenticate(request)
        retry_after = hit(key.public_id, *self._scopes)
        if retry_after is not None:
            raise exceptions.Throttled(retry_after)
        body_file.seek(0)
        data = self._parser.parse(body_file)
        return views.propose(agent, data, request.headers.get("Idempotency-Key"))

    def _problem(self, request: ASGIRequest, exc: Exception) -> HttpResponse:
        """The problem DRF's dispatch answers for ``exc``, through the API's exception handler."""
        if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
            exc.auth_header = self._authentication.authenticate_header(request)
        problem = problem_exception_handler(exc, {})
        response = HttpResponse(
            render_json(problem.data), status=problem.status_code, content_type=PROBLEM_CONTENT_TYPE
        )
        for name, value in problem.items():
            if name != "Content-Type":
                response[name] = value
        response["Allow"] = self._allow
        return response


def _positive(length: str | None) -> bool:
    return length is not None and length.isascii() and length.isdigit() and int(length) > 0


def _answerable_here() -> bool:
    """What agent reads need (an agent key authenticated and counted as shipped), with the API's parser and problem
    handler as shipped."""
    rest = settings.REST_FRAMEWORK
    return (
        agent_reads.answerable_here()
        and list(rest.get("DEFAULT_PARSER_CLASSES", [])) == [agent_reads.dotted(StrictJSONParser)]
        and rest.get("EXCEPTION_HANDLER") == agent_reads.dotted(problem_exception_handler)
    )
