"""An agent's proposal and a reviewer's approval answered with one crossing to a kept thread
(approvals.api.plain_writes) answer what the API's Django handler answers, status, headers and body, refusals and their
audit records included; and every request it does not fully understand goes to the handler untouched.

Each request here is sent twice, once to ``PlainWrites`` in front of the API's handler and once to the handler
alone, with the same X-Request-ID; ``reached`` counts what PlainWrites passed on. A proposal makes a new action
each time, so where its answer names the new action (its id, its times) those are masked before comparing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django import db
from django.test import override_settings

from agents.models import AgentKey
from approvals import services
from approvals.api.plain_writes import PlainWrites
from approvals.models import ActionRequest, ActionStatus, ReviewerToken
from approvals.policies import store as policy_store
from audit import chain as audit_chain
from audit.chain import verify_log
from audit.models import AuditEvent, RefusalTally
from config.api_handler import APIHandler
from tests.conftest import CLI, propose_body
from tests.factories import KEY_REFUSALS, AgentFactory, propose, refuse_keys
from tests.support.asgi import Reached, http_scope, send_request

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("plain_http_and_fresh_batches")]

PATH = "/api/v1/actions"


@pytest.fixture
def proposals():
    """PlainWrites before a handler of its own, both made under the settings in force."""
    handler = APIHandler(threads=2)
    reached = Reached(handler)
    app = PlainWrites(reached, handler=handler)
    assert app.enabled
    return app, reached


def _scope(raw: bytes, headers: dict[str, str | None], *, path: str, query: str, method: str) -> dict:
    sent = {
        "host": "localhost",
        "x-request-id": "same-id-for-both",
        "content-type": "application/json",
        "content-length": str(len(raw)),
        **headers,
    }
    pairs = [(name, value) for name, value in sent.items() if value is not None]
    return http_scope(method, path, query=query, headers=pairs)


# A new action's id and times: the one thing two sends of one proposal cannot share.
_NEW_EACH_TIME = re.compile(
    rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|[+-]\d\d:\d\d)"
)


def both(
    proposals,
    body,
    headers: dict[str, str | None] | None = None,
    *,
    path=PATH,
    query="",
    method="POST",
    mask=None,
    alone_path=None,
) -> tuple[dict, bool]:
    """(the answer, whether PlainWrites passed the request on), after checking the handler alone answers the same.
    ``body``: JSON to send, or bytes as they are. ``mask``: a pattern blanked in both bodies before comparing.
    ``alone_path``: where the handler alone is sent it (another action to approve), if not ``path``."""
    app, reached = proposals
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    before = reached.count

    async def run():
        fast = await send_request(app, _scope(raw, headers or {}, path=path, query=query, method=method), raw)
        passed_on = reached.count > before
        alone_scope = _scope(raw, headers or {}, path=alone_path or path, query=query, method=method)
        alone = await send_request(reached.handler, alone_scope, raw)
        return fast, passed_on, alone

    fast, passed_on, alone = asyncio.run(run())
    blank = (lambda b: mask.sub(b"-", b)) if mask is not None else (lambda b: b)
    assert (fast["status"], fast["headers"], blank(fast["body"])) == (
        alone["status"],
        alone["headers"],
        blank(alone["body"]),
    )
    return fast, passed_on


def send(target, body, headers: dict[str, str | None]) -> dict:
    """``target``'s answer to a proposal of ``body`` (JSON) with ``headers``."""
    raw = json.dumps(body).encode()
    return asyncio.run(send_request(target, _scope(raw, headers, path=PATH, query="", method="POST"), raw))


def bearer(raw: str) -> dict[str, str]:
    return {"authorization": f"Bearer {raw}"}


def _refusals(agent, verb: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(verb=verb, agent_name=agent.name))


# --- proposals answered here --------------------------------------------------------------------------------------


def test_a_pending_proposal_is_answered_here_as_the_view_answers_it(proposals, agent, agent_key):
    answer, passed_on = both(proposals, propose_body(), bearer(agent_key), mask=_NEW_EACH_TIME)
    assert answer["status"] == 201 and not passed_on
    assert ("x-request-id", "same-id-for-both") in answer["headers"]
    assert ("allow", "GET, POST, HEAD, OPTIONS") in answer["headers"]
    made = json.loads(answer["body"])
    action = ActionRequest.objects.get(id=made["id"])
    assert action.status == ActionStatus.PENDING and action.agent == agent
    assert ActionRequest.objects.filter(agent=agent).count() == 2
    # Written with its audit event in the chain, as every proposal is.
    assert AuditEvent.objects.filter(verb="action.proposed", object_id=str(action.id)).exists()
    assert verify_log().broken is None


@pytest.mark.parametrize("effect", ["auto_approve", "deny"])
def test_a_proposal_a_rule_decides_is_answered_here_as_the_view_answers_it(proposals, agent, agent_key, effect):
    policy_store.save_rule(
        {
            "name": "for-this-agent",
            "agent": agent.name,
            "action_type": "decision.only",
            "effect": effect,
            "reason": "x",
        },
        actor=CLI,
    )
    answer, passed_on = both(proposals, propose_body(), bearer(agent_key), mask=_NEW_EACH_TIME)
    assert not passed_on
    decided = {"auto_approve": ActionStatus.APPROVED, "deny": ActionStatus.REJECTED}[effect]
    assert ActionRequest.objects.get(id=json.loads(answer["body"])["id"]).status == decided


@pytest.mark.parametrize("where", ["body", "header"])
def test_the_same_idempotency_key_again_answers_the_first_action_both_ways(proposals, agent, agent_key, where):
    def sent(body):
        if where == "body":
            return {**body, "idempotency_key": "retry-1"}, bearer(agent_key)
        return body, {**bearer(agent_key), "idempotency-key": "retry-1"}

    app, reached = proposals
    first = send(app, *sent(propose_body()))
    assert first["status"] == 201 and reached.count == 0
    # The handler alone finds the action made here, and presents it as it was presented when made.
    found = send(reached.handler, *sent(propose_body()))
    assert found["status"] == 200
    assert (found["headers"], found["body"]) == (first["headers"], first["body"])
    again, passed_on = both(proposals, *sent(propose_body()))
    assert again["status"] == 200 and not passed_on
    assert json.loads(again["body"])["id"] == json.loads(first["body"])["id"]
    assert ActionRequest.objects.filter(agent=agent).count() == 1
    conflict, passed_on = both(proposals, *sent(propose_body(summary="Something else")))
    assert conflict["status"] == 409 and not passed_on
    assert ("content-type", "application/problem+json") in conflict["headers"]


def test_a_key_whose_last_use_is_due_is_recorded_here_too(proposals, agent, agent_key):
    stale = datetime.now(UTC) - timedelta(minutes=5)
    AgentKey.objects.filter(agent=agent).update(last_used_at=stale)
    assert send(proposals[0], propose_body(), bearer(agent_key))["status"] == 201
    assert AgentKey.objects.get(agent=agent).last_used_at > stale


# --- refusals: the same problem, the same audit record ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"[1, 2]", {}, 400),
        (b"{not json", {}, 400),
        (b'{"summary": "\\u0000"}', {}, 400),
        (b"\xff\xfe{}", {}, 400),
        (b"[" * 200 + b"]" * 200, {}, 400),
        (propose_body(summary=""), {}, 400),
        (propose_body(summary="x" * 281), {}, 400),
        (propose_body(expires_in=5), {}, 400),
        (propose_body(callback_url="http://169.254.169.254/latest"), {}, 400),
        (propose_body(params="restart"), {}, 400),
        (propose_body(action_type="no.such.type"), {}, 400),
        (propose_body(), {"idempotency-key": "  "}, 400),
        (propose_body(trace_url="javascript:alert(1)"), {}, 400),
        (b'{"a": "' + b"x" * (256 * 1024) + b'"}', {}, 413),
    ],
    ids=[
        "array",
        "not-json",
        "nul",
        "not-utf8",
        "too-deep",
        "empty-summary",
        "long-summary",
        "short-expiry",
        "callback-to-metadata",
        "params-not-object",
        "unknown-type",
        "empty-idempotency-header",
        "trace-url-scheme",
        "too-large",
    ],
)
def test_bad_input_is_the_same_problem_here_and_writes_nothing(proposals, agent, agent_key, body, headers, status):
    answer, passed_on = both(proposals, body, {**bearer(agent_key), **headers})
    assert answer["status"] == status and not passed_on
    assert ("content-type", "application/problem+json") in answer["headers"]
    assert json.loads(answer["body"])["status"] == status
    assert not ActionRequest.objects.filter(agent=agent).exists()


def test_a_type_the_agent_may_not_propose_is_refused_the_same_way_and_audited(proposals, owner):
    # The side road: an agent granted one type reaching for another, through the shortcut.
    agent = AgentFactory(owner=owner, allow=("decision.only",))
    answer, passed_on = both(
        proposals,
        propose_body(action_type="http.request", params={"url": "https://example.com"}),
        bearer(agent.raw_key),
    )
    assert answer["status"] == 403 and not passed_on
    assert not ActionRequest.objects.filter(agent=agent).exists()
    refused = [e for e in AuditEvent.objects.filter(agent_name=agent.name) if "refused" in e.verb]
    tallied = RefusalTally.objects.filter(actor=agent.name).values_list("count", flat=True)
    assert len(refused) == 1 and sum(tallied) == 2  # both sends refused: one event, the second counted against it


@pytest.mark.parametrize("how", KEY_REFUSALS)
def test_a_refused_key_is_refused_here_and_audited(proposals, agent, agent_key, how, monkeypatch):
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    monkeypatch.setattr(audit_chain, "_refusal_minute", lambda: minute)
    refuse_keys(agent, how)
    answer, passed_on = both(proposals, propose_body(), bearer(agent_key))
    assert answer["status"] == 401 and not passed_on
    assert ("www-authenticate", 'Bearer realm="countersign"') in answer["headers"]
    assert len(_refusals(agent, "access.refused")) == 1
    assert RefusalTally.objects.get(actor=agent.name).count == 2
    assert not ActionRequest.objects.filter(agent=agent).exists()


@pytest.mark.parametrize(
    "credentials",
    ["", "cs_nope", "not-a-key-at-all", "forged"],
)
def test_a_key_that_does_not_authenticate_is_the_same_401(proposals, agent, agent_key, credentials):
    if credentials == "forged":  # the real public id, another secret
        credentials = agent_key[:-4] + ("aaaa" if not agent_key.endswith("aaaa") else "bbbb")
    answer, passed_on = both(proposals, propose_body(), {"authorization": f"Bearer {credentials}"})
    assert answer["status"] == 401 and not passed_on
    assert not ActionRequest.objects.filter(agent=agent).exists()


_RETRY = re.compile(rb"\d+ seconds?")


@override_settings(COUNTERSIGN_AGENT_RATES={"requests": "1000/hour", "proposals": "4/hour"})
def test_the_proposal_budget_holds_here_with_the_views_429(proposals, owner):
    agent = AgentFactory(owner=owner)
    for n in range(2):  # four proposals: two here, two by the handler
        answer, passed_on = both(proposals, propose_body(summary=f"#{n}"), bearer(agent.raw_key), mask=_NEW_EACH_TIME)
        assert answer["status"] == 201 and not passed_on
    app, reached = proposals
    fast, alone = (
        send(app, propose_body(), bearer(agent.raw_key)),
        send(reached.handler, propose_body(), bearer(agent.raw_key)),
    )
    assert fast["status"] == alone["status"] == 429
    assert [name for name, _ in fast["headers"]] == [name for name, _ in alone["headers"]]
    assert _RETRY.sub(b"N", fast["body"]) == _RETRY.sub(b"N", alone["body"])
    assert int(dict(fast["headers"])["retry-after"]) > 0
    assert ActionRequest.objects.filter(agent=agent).count() == 4


@pytest.mark.parametrize(
    ("failure", "status"), [(db.OperationalError("server closed the connection"), 503), (RuntimeError("bug"), 500)]
)
def test_a_lost_database_and_a_bug_are_answered_as_the_handler_answers_them(
    proposals, agent_key, monkeypatch, failure, status, caplog
):
    def fail(**kwargs):
        raise failure

    monkeypatch.setattr(services, "propose_action", fail)
    with caplog.at_level(logging.WARNING):
        answer, passed_on = both(proposals, propose_body(), bearer(agent_key))
    assert answer["status"] == status and not passed_on
    assert ("content-type", "application/problem+json") in answer["headers"]
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING and "/api/v1/actions" in r.getMessage()]
    assert len(logged) >= 2  # once for each way in


# --- approvals -----------------------------------------------------------------------------------------------------


@pytest.fixture
def reviewer_token(reviewer) -> str:
    return ReviewerToken.issue(reviewer)[1]


def token(raw: str) -> dict[str, str]:
    return {"authorization": f"Token {raw}"}


def approve_path(action) -> str:
    return f"/api/v1/actions/{action.id}/approve"


@pytest.mark.parametrize(
    "body",
    [{}, {"comment": "fine"}, {"params": {"command": "restart", "service": "billing", "x": 1}, "comment": "edited"}],
    ids=["plain", "comment", "edited"],
)
def test_an_approval_is_answered_here_as_the_view_answers_it(proposals, agent, reviewer, reviewer_token, body):
    here, there = propose(agent), propose(agent)
    answer, passed_on = both(
        proposals,
        body,
        token(reviewer_token),
        path=approve_path(here),
        alone_path=approve_path(there),
        mask=_NEW_EACH_TIME,
    )
    assert answer["status"] == 200 and not passed_on
    assert ("allow", "POST, OPTIONS") in answer["headers"]
    for action in (here, there):
        action.refresh_from_db()
        assert action.status == ActionStatus.APPROVED
        assert action.reviews.get().reviewer == reviewer
    assert verify_log().broken is None


def test_an_approval_again_is_the_same_conflict(proposals, agent, reviewer_token):
    action = propose(agent)
    first, passed_on = both(
        proposals,
        {},
        token(reviewer_token),
        path=approve_path(action),
        alone_path=approve_path(propose(agent)),
        mask=_NEW_EACH_TIME,
    )
    assert first["status"] == 200 and not passed_on
    again, passed_on = both(proposals, {"comment": "twice"}, token(reviewer_token), path=approve_path(action))
    assert again["status"] == 409 and not passed_on


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"comment": "x" * 2001}, 400),
        ({"params": "restart"}, 400),
        (b"[]", 400),
        (b"{nope", 400),
    ],
    ids=["long-comment", "params-not-object", "array", "not-json"],
)
def test_a_bad_approval_is_the_same_problem_and_decides_nothing(proposals, agent, reviewer_token, body, status):
    action = propose(agent)
    answer, passed_on = both(proposals, body, token(reviewer_token), path=approve_path(action))
    assert answer["status"] == status and not passed_on
    action.refresh_from_db()
    assert action.status == ActionStatus.PENDING


def test_an_approval_of_no_such_action_is_the_same_404(proposals, reviewer_token):
    answer, passed_on = both(proposals, {}, token(reviewer_token), path=f"/api/v1/actions/{uuid.uuid4()}/approve")
    assert answer["status"] == 404 and not passed_on


def test_a_reviewer_outside_the_actions_group_is_refused_the_same_way(proposals, agent, outsider):
    action = propose(agent)
    raw = ReviewerToken.issue(outsider)[1]
    answer, passed_on = both(proposals, {}, token(raw), path=approve_path(action))
    assert answer["status"] == 403 and not passed_on
    action.refresh_from_db()
    assert action.status == ActionStatus.PENDING


@pytest.mark.parametrize("how", ["revoked", "forged", "deactivated", "malformed"])
def test_a_reviewer_token_that_does_not_authenticate_is_the_same_401(proposals, agent, reviewer, how):
    action = propose(agent)
    issued, raw = ReviewerToken.issue(reviewer)
    if how == "revoked":
        ReviewerToken.objects.filter(pk=issued.pk).update(revoked_at=datetime.now(UTC))
    elif how == "forged":
        raw = raw[:-4] + ("aaaa" if not raw.endswith("aaaa") else "bbbb")
    elif how == "deactivated":
        type(reviewer).objects.filter(pk=reviewer.pk).update(is_active=False)
    else:
        raw = "csr_nope"
    answer, passed_on = both(proposals, {}, token(raw), path=approve_path(action))
    assert answer["status"] == 401 and not passed_on
    assert ("www-authenticate", 'Bearer realm="countersign"') in answer["headers"]
    action.refresh_from_db()
    assert action.status == ActionStatus.PENDING


def test_an_agent_key_on_the_approval_is_left_to_the_view_which_refuses_and_audits_it(proposals, agent, agent_key):
    # The confused deputy: the agent reaching for a reviewer's power with its own key, through the shortcut's door.
    action = propose(agent)
    answer, passed_on = both(proposals, {}, bearer(agent_key), path=approve_path(action))
    assert answer["status"] == 403 and passed_on
    action.refresh_from_db()
    assert action.status == ActionStatus.PENDING
    refused = [e for e in AuditEvent.objects.filter(agent_name=agent.name) if "refused" in e.verb]
    tallied = RefusalTally.objects.filter(actor=agent.name).values_list("count", flat=True)
    assert refused and len(refused) + sum(tallied) >= 2


@pytest.mark.parametrize(
    ("headers", "path"),
    [
        ({"cookie": "sessionid=nothing"}, None),
        ({"content-length": "0"}, None),
        ({}, "upper"),
    ],
    ids=["cookie", "empty-body", "upper-case-id"],
)
def test_an_approval_the_view_reads_its_own_way_is_the_handlers(proposals, agent, reviewer_token, headers, path):
    here, there = propose(agent), propose(agent)

    def where(action) -> str:
        return approve_path(action) if path is None else f"/api/v1/actions/{str(action.id).upper()}/approve"

    body = b"" if headers.get("content-length") == "0" else b"{}"
    answer, passed_on = both(
        proposals,
        body,
        {**token(reviewer_token), **headers},
        path=where(here),
        alone_path=where(there),
        mask=_NEW_EACH_TIME,
    )
    assert passed_on and answer["status"] == (404 if path else 200)


# --- what is left to the handler ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "query", "status"),
    [
        ({"cookie": "sessionid=nothing"}, "", 201),
        ({"authorization": None}, "", 401),
        ({"authorization": "Basic dXNlcjpwYXNz"}, "", 401),
        ({"content-type": "text/plain"}, "", 415),
        ({"content-type": "application/json; charset=utf-8"}, "", 201),
        ({"content-type": None}, "", 415),
        ({"content-length": None, "transfer-encoding": "chunked"}, "", 400),
        ({"accept": "text/html"}, "", 406),
        ({"accept": "application/json; indent=2"}, "", 201),
        ({}, "format=json", 201),
        ({"host": "evil.example"}, "", 201),
    ],
    ids=[
        "cookie",
        "no-credentials",
        "basic",
        "text-plain",
        "json-with-charset",
        "no-content-type",
        "chunked",
        "accept-html",
        "accept-indented",
        "query",
        "host-not-allowed",
    ],
)
def test_a_request_the_view_reads_its_own_way_is_the_handlers(proposals, agent_key, headers, query, status):
    answer, passed_on = both(
        proposals, propose_body(), {**bearer(agent_key), **headers}, query=query, mask=_NEW_EACH_TIME
    )
    assert passed_on
    assert answer["status"] == status


@pytest.mark.parametrize(("method", "path"), [("PUT", PATH), ("POST", PATH + "/"), ("POST", "/api/v1/actions/x")])
def test_another_method_or_path_is_the_handlers(proposals, agent_key, method, path):
    answer, passed_on = both(proposals, propose_body(), bearer(agent_key), method=method, path=path)
    assert passed_on and answer["status"] in (404, 405)


def test_an_empty_body_is_the_handlers(proposals, agent_key):
    answer, passed_on = both(proposals, b"", bearer(agent_key))
    assert passed_on and answer["status"] == 400


def test_the_shortcut_stands_aside_when_the_api_is_configured_otherwise(settings):
    rest = settings.REST_FRAMEWORK
    settings.REST_FRAMEWORK = {**rest, "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"]}
    assert not PlainWrites(None, handler=APIHandler()).enabled
    settings.REST_FRAMEWORK = {**rest, "EXCEPTION_HANDLER": "rest_framework.views.exception_handler"}
    assert not PlainWrites(None, handler=APIHandler()).enabled
    settings.REST_FRAMEWORK = {**rest, "DEFAULT_THROTTLE_CLASSES": []}
    assert not PlainWrites(None, handler=APIHandler()).enabled
    settings.REST_FRAMEWORK = rest
    assert PlainWrites(None, handler=APIHandler()).enabled
    # A middleware added to the API's chain, which the shortcut would skip: every request goes through the chain.
    settings.API_MIDDLEWARE = [*settings.API_MIDDLEWARE, "django.middleware.common.CommonMiddleware"]
    assert not PlainWrites(None, handler=APIHandler()).enabled


# --- the served application ----------------------------------------------------------------------------------------


def test_the_served_application_answers_writes_before_the_reads_and_the_handler():
    from config import asgi

    assert isinstance(asgi.api_asgi_app, PlainWrites) and asgi.api_asgi_app.enabled and asgi.agent_reads.enabled
    assert asgi.api_asgi_app.handler is asgi.api_handler and asgi.api_asgi_app.app is asgi.agent_reads


def test_concurrent_retries_of_one_proposal_make_one_action(agent, agent_key):
    # Eight sends of one proposal at once through the served application, on its threads and turns.
    from config.asgi import application

    raw = json.dumps(propose_body()).encode()
    headers = {**bearer(agent_key), "idempotency-key": "one-and-only"}

    async def run():
        scope = _scope(raw, headers, path=PATH, query="", method="POST")
        return await asyncio.gather(*(send_request(application, dict(scope), raw) for _ in range(8)))

    answers = asyncio.run(run())
    assert sorted(a["status"] for a in answers) == [200] * 7 + [201]
    assert len({json.loads(a["body"])["id"] for a in answers}) == 1
    assert ActionRequest.objects.filter(agent=agent).count() == 1
    assert verify_log().broken is None


def test_concurrent_approvals_of_one_action_decide_it_once(agent, reviewer, second_reviewer):
    # Two reviewers approving one action at the same moment, both through the served application's shortcut.
    from config.asgi import application

    action = propose(agent)
    tokens = [ReviewerToken.issue(person)[1] for person in (reviewer, second_reviewer)]
    raw = b"{}"

    async def run():
        scopes = [_scope(raw, token(t), path=approve_path(action), query="", method="POST") for t in tokens]
        return await asyncio.gather(*(send_request(application, scope, raw) for scope in scopes))

    answers = asyncio.run(run())
    assert sorted(a["status"] for a in answers) == [200, 409]
    action.refresh_from_db()
    assert action.status == ActionStatus.APPROVED and action.reviews.count() == 1
    assert verify_log().broken is None


def test_a_client_that_hangs_up_before_its_body_gets_nothing_written(proposals, agent, agent_key):
    app, reached = proposals
    raw = json.dumps(propose_body()).encode()
    sent: list[dict] = []

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(_scope(raw, bearer(agent_key), path=PATH, query="", method="POST"), receive, send))
    assert sent == [] and reached.count == 0
    assert not ActionRequest.objects.filter(agent=agent).exists()
