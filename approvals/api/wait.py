"""``GET /api/v1/actions/{id}/wait``: a long-poll that holds no thread and no database connection.

An action already settled is answered from the first read, without subscribing to anything (most waits of a
polling agent); otherwise the wait is approvals.live.waiting's, which the gateway's held call shares. The first read
runs in a thread that closes its connection straight after; the reads after each change run on the event loop's own
connections where the database is PostgreSQL (approvals.api.loop_connections), in a thread otherwise. Who may ask,
and how often, is decided by the same authentication classes and throttles as every other API request
(approvals.api.authentication.authenticate_api_request), in the same crossing to a thread as the first read.
"""

from __future__ import annotations

import functools
import logging
import re

import psycopg
from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections
from django.http import HttpResponse, QueryDict
from django.views.decorators.csrf import csrf_exempt

from approvals.api import loop_connections
from approvals.api.authentication import authenticate_api_request
from approvals.api.problems import problem_response
from approvals.api.renderers import render_json
from approvals.live.waiting import until_settled
from approvals.models import ActionStatus
from approvals.selectors import actions as selectors
from approvals.selectors.presenters import is_finished, present_action

log = logging.getLogger(__name__)

MAX_TIMEOUT = 60
# This view's path (approvals/api/urls.py): the API's handler gives it no turn on a thread (config/api_handler.py).
LONG_POLL_PATH = re.compile(r"/api/v1/actions/[^/]+/wait")


def _done(action, until: str) -> bool:
    if until == "decision":
        return action.status != ActionStatus.PENDING
    return is_finished(action)


def _snapshot(principal, action_id):
    try:
        return _read(principal, action_id)
    finally:
        connections.close_all()


def _read(principal, action_id):
    action = selectors.read_action_for(principal, action_id)
    if action is None:
        return None
    return action, present_action(action)


async def _read_on_loop(principal, action_id, *, instead):
    """``_read`` on the event loop's own connection (approvals.api.loop_connections), with no thread to cross to and
    back: a wait answers that much sooner after the change it waited for. A database error: ``instead``, the read on
    a thread, answers."""
    try:
        async with loop_connections.shared.connection() as aconnection:
            action = await selectors.aread_action_for(aconnection, principal, action_id)
    except psycopg.Error as exc:
        log.warning("wait: %s from the database on the loop; read on a thread", type(exc).__name__)
        return await instead()
    return None if action is None else (action, present_action(action))


def _authenticate_and_read(request, action_id):
    """(who is asking, or None; seconds to wait when an agent key is over its rate; the first ``_snapshot``): the
    API's own authentication and throttles (approvals.api.authentication.authenticate_api_request) and the first read
    in one crossing to a thread, not two, for the wait that answers at once."""
    try:
        principal, retry_after = authenticate_api_request(request)
        if principal is None or retry_after is not None:
            return principal, retry_after, None
        return principal, None, _read(principal, action_id)
    finally:
        connections.close_all()


def _json(body: dict) -> HttpResponse:
    return HttpResponse(render_json(body), content_type="application/json")


def wait_query(query: QueryDict) -> tuple[float, str] | HttpResponse:
    """(seconds to wait, what to wait ``until``) as the query asks, or the 400 problem saying what is wrong."""
    try:
        timeout = float(query.get("timeout", "30"))
    except ValueError:
        return problem_response(
            400,
            "Invalid input",
            "timeout must be a number of seconds.",
            slug="invalid-input",
            errors={"timeout": ["A number of seconds, 0 to 60."]},
        )
    if not 0 <= timeout <= MAX_TIMEOUT:
        return problem_response(
            400,
            "Invalid input",
            "timeout must be between 0 and 60.",
            slug="invalid-input",
            errors={"timeout": ["A number of seconds, 0 to 60."]},
        )
    until = query.get("until", "completion")
    if until not in ("decision", "completion"):
        return problem_response(
            400,
            "Invalid input",
            "until must be decision or completion.",
            slug="invalid-input",
            errors={"until": ["One of decision, completion."]},
        )
    return timeout, until


def answers_at_once(action, until: str, timeout: float) -> bool:
    """Whether the first read is the answer: the action is already where the wait waits for it, or no wait."""
    return _done(action, until) or timeout <= 0


@csrf_exempt  # reads only; without this a POST met Django's HTML CSRF page instead of this API's 405
async def wait_for_action(request, action_id):
    if request.method != "GET":
        response = problem_response(
            405, "Method not allowed", f"{request.method} is not allowed here; use GET.", slug="method-not-allowed"
        )
        response["Allow"] = "GET"
        return response
    asked = wait_query(request.GET)
    if isinstance(asked, HttpResponse):
        return asked
    timeout, until = asked

    principal, retry_after, snap = await sync_to_async(_authenticate_and_read, thread_sensitive=False)(
        request, action_id
    )
    if retry_after is not None:
        response = problem_response(
            429, "Too many requests", "This agent key is over its request rate.", slug="rate-limited"
        )
        response["Retry-After"] = str(int(retry_after))
        return response
    if principal is None:
        response = problem_response(
            401, "Not authenticated", "A valid agent key or reviewer credential is required.", slug="not-authenticated"
        )
        response["WWW-Authenticate"] = 'Bearer realm="countersign"'
        return response

    if snap is None:
        return problem_response(404, "Not found", "No such action.", slug="not-found")
    if answers_at_once(snap[0], until, timeout):
        return _json(snap[1])  # answered before subscribing to anything: most waits of a polling agent
    read = sync_to_async(functools.partial(_snapshot, principal, action_id), thread_sensitive=False)
    if loop_connections.usable():
        read = functools.partial(_read_on_loop, principal, action_id, instead=read)
    try:
        snap = await until_settled(
            action_id, timeout=timeout, read=read, settled=lambda snap: snap is None or _done(snap[0], until)
        )
    finally:
        close_old_connections()
    if snap is None:
        return problem_response(404, "Not found", "No such action.", slug="not-found")
    return _json(snap[1])
