"""An agent's polling reads, answered on the event loop (issue 21, docs/BENCHMARKS.md section 9).

Agents poll: ``GET /api/v1/actions/{id}``, ``GET /api/v1/actions/{id}/wait`` once the action is where the wait waits
for it, and the first page of ``GET /api/v1/actions``. Through Django's handler, its middleware chain, DRF and a
thread, each cost several times its SQL. ``AgentReads`` answers them on the event loop: the same prepared statements
(agent key, action and reviews, page: agents.authentication, approvals.selectors.actions) on a psycopg connection of
its own, made with the parameters and adapters Django's connection has; the same presenter, JSON and headers.

It answers only the plain success of a request it fully understands. Everything else goes on to the API's Django
handler untouched (nothing is read from the request body, nothing sent): no agent key; a key that does not
authenticate, or whose use must be written (a refusal to audit, a last use to record); a key whose rate-limit batch in
this process is spent (the handler asks Redis for the next, or refuses); an action that is not the agent's; a query,
Accept or Cookie header the views would read differently; a wait still open; a database error. So every refusal,
every audit record and every 4xx has one implementation, Django's, and this module none of its own.
"""

from __future__ import annotations

import io
import logging
import re
import time

import psycopg
from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.http import HttpResponse
from django.middleware.security import SecurityMiddleware

from agents import ratelimit
from agents.authentication import bearer_credentials, nothing_to_write
from agents.keys import parse_key
from approvals.api import loop_connections, shortcuts, wait
from approvals.api.renderers import render_json
from approvals.api.views import ActionDetailView, ActionsView, NewestFirst
from approvals.models import ActionStatus
from approvals.selectors import actions as selectors
from approvals.selectors.presenters import present_action
from config.request_id import HEADER, bind_request_id, reset_request_id

log = logging.getLogger(__name__)

_PATH = re.compile(rf"/api/v1/actions(?:/(?P<action_id>{shortcuts.UUID})(?P<wait>/wait)?)?")
# What each read may be asked, each at most once; anything else (a cursor, DRF's ?format=) is the views' to answer.
_QUERY = {"read": frozenset(), "wait": frozenset({"timeout", "until"}), "list": frozenset({"limit", "status"})}
# After the database could not be reached, the views answer alone (their 503, or their pool's recovery) for a while.
_REST_SECONDS = 5.0


class AgentReads:
    """ASGI: an agent's plain polling reads answered here, everything else by ``handler`` (the API's Django handler).
    ``connections``: the loop's connections to read on (the server's ``loop_connections.shared``); its own if none."""

    def __init__(self, handler: ASGIHandler, connections: loop_connections.LoopConnections | None = None) -> None:
        self.handler = handler
        self.enabled = loop_connections.usable() and shortcuts.answerable_here()
        self.connections = connections or loop_connections.LoopConnections(settings.AGENT_READS_CONNECTIONS)
        self._resting_until = 0.0
        self._security = SecurityMiddleware(lambda request: None)
        self._allow = {
            "read": shortcuts.allowed_methods(ActionDetailView),
            "list": shortcuts.allowed_methods(ActionsView),
        }

    async def __call__(self, scope, receive, send) -> None:
        if self.enabled and scope["type"] == "http" and scope["method"] == "GET":
            match = _PATH.fullmatch(scope["path"])
            resting = time.monotonic() < self._resting_until
            if match is not None and not resting and await self._answered(scope, send, match):
                return
        await self.handler(scope, receive, send)

    async def _answered(self, scope, send, match: re.Match) -> bool:
        started = time.perf_counter()
        kind = "list" if match["action_id"] is None else "wait" if match["wait"] else "read"
        # The request as the views would see it: its headers (a header sent twice reads as one, joined, as DRF reads
        # it), its query string, its host and scheme.
        request = ASGIRequest(scope, io.BytesIO())  # a GET's body is not read
        if not shortcuts.plain_head(request):
            return False
        try:
            query = request.GET
            if not query.keys() <= _QUERY[kind] or any(len(values) > 1 for _, values in query.lists()):
                return False
            if self._security.process_request(request) is not None:  # SECURE_SSL_REDIRECT: the views redirect
                return False
            url = request.build_absolute_uri() if kind == "list" else ""
        except SuspiciousOperation:  # a Host not allowed, too many fields: the views' 400
            return False
        raw_key = bearer_credentials(request)
        if not raw_key:
            return False
        token = bind_request_id(request.headers.get(HEADER))
        try:
            body = await self._body(kind, request, raw_key, match["action_id"], url)
            if body is None:
                return False
            response = HttpResponse(body, content_type="application/json")
            if kind in self._allow:  # DRF's views say which methods they take; the wait view is Django's own
                response["Allow"] = self._allow[kind]
            await shortcuts.send_answer(self.handler, self._security, request, response, send, started)
            return True
        finally:
            reset_request_id(token)

    async def _body(
        self, kind: str, request: ASGIRequest, raw_key: str, action_id: str | None, url: str
    ) -> bytes | None:
        """The response's JSON, or None: the handler answers. ``url``: the list's own, for its page links."""
        if kind == "wait":
            asked = wait.wait_query(request.GET)
            if isinstance(asked, HttpResponse):
                return None
            timeout, until = asked
        elif kind == "list":
            limit, status = request.GET.get("limit"), request.GET.get("status")
            if limit is not None and not NewestFirst.valid_limit(limit):
                return None
            if status is not None and status not in ActionStatus.values:
                return None
        try:
            async with self.connections.connection() as aconnection:
                parsed = parse_key(raw_key)
                if parsed is None:
                    return None
                if kind == "list":
                    size = NewestFirst.size_for(limit)
                    found = await selectors.afirst_page_with_key(
                        aconnection, parsed.public_id, status=status, size=size
                    )
                else:
                    found = await selectors.aread_action_with_key(aconnection, parsed.public_id, action_id)
                # No such key, no such action of its agent, an empty page (the views' 401, 404 or page); a key that
                # does not authenticate, or whose use must be written (the views refuse it or record it).
                if not found or not nothing_to_write(found[0], parsed.secret):
                    return None
                if kind == "list":
                    key, actions, more = found
                    answer = NewestFirst.first_page_body(url, actions, more, present_action)
                else:
                    key, action, reviewed = found
                    await selectors.ahold_reviews(aconnection, action, reviewed)
                    if kind == "wait" and not wait.answers_at_once(action, until, timeout):
                        return None
                    answer = present_action(action)
        except psycopg.Error as exc:  # the views answer it in their own dialect (a 503 for a lost database)
            log.warning("agent reads: %s from the database; the API's handler answers", type(exc).__name__)
            if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
                self._resting_until = time.monotonic() + _REST_SECONDS  # its connections dropped the idle ones
            return None
        # Counted last, once this request is sure to be answered here: one passed on is counted by the views.
        if not ratelimit.spend_held(key.public_id, "requests"):
            return None
        return render_json(answer)
