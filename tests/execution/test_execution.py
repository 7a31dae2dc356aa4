"""Approved actions executed by a real Celery worker (a subprocess on the test database and Redis).

The worker is another process, so every test here commits its data
(``transaction=True``); the execute task reaches the worker through the
outbox, after the approval commits.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from django.db import connection
from rest_framework.test import APIClient

from approvals.models import ActionRequest, ActionStatus, ExecutionGrant, OutboxMessage
from audit.models import AuditEvent
from tests.conftest import TARGET_SECRET, propose_body
from tests.support.servers import wait_until
from tests.support.waiting import wait_for_waiter

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]


def http_body(path="/v1/status", method="GET", **params):
    return propose_body(
        action_type="http.request",
        params={"credential": "internal-api", "method": method, "path": path, **params},
        summary=f"{method} {path} on the internal API",
    )


def propose(agent_api, body) -> dict:
    response = agent_api.post("/api/v1/actions", body, format="json")
    assert response.status_code == 201, response.content
    action = response.json()
    assert action["status"] == "pending"
    return action


def status_of(action_id) -> str:
    return ActionRequest.objects.values_list("status", flat=True).get(id=action_id)


def wait_for_status(action_id, wanted: set[str], timeout: float = 20.0) -> str:
    return wait_until(
        lambda: (s := status_of(action_id)) in wanted and s, timeout=timeout, message=f"action {action_id} in {wanted}"
    )


def header(request, name: str) -> str | None:
    return next((v for k, v in request.headers.items() if k.lower() == name.lower()), None)


def audit_dump(action_id=None) -> str:
    events = AuditEvent.objects.all() if action_id is None else AuditEvent.objects.filter(action_id=action_id)
    return json.dumps(
        [
            {"verb": e.verb, "actor": e.actor, "object_id": e.object_id, "agent": e.agent_name, "data": e.data}
            for e in events
        ]
    )


def verbs(action_id) -> list[str]:
    return list(AuditEvent.objects.filter(action_id=action_id).order_by("seq").values_list("verb", flat=True))


def test_approved_http_request_runs_once_with_the_stored_secret(agent_api, reviewer_api, target, credential):
    # The target echoes the secret back: even then the agent must never see it.
    target.resources["/v1/status"] = {"healthy": True, "echo": f"token was {TARGET_SECRET}"}
    agent_seen: list[bytes] = []

    action = propose(agent_api, http_body("/v1/status"))
    agent_seen.append(json.dumps(action).encode())
    assert target.requests == []  # nothing runs before a human says so

    approved = reviewer_api.post(f"/api/v1/actions/{action['id']}/approve", {"comment": "fine"}, format="json")
    assert approved.status_code == 200, approved.content

    # The agent long-polls; the worker's completion wakes it up.
    started = time.monotonic()
    waited = agent_api.get(f"/api/v1/actions/{action['id']}/wait", {"timeout": "10"})
    assert waited.status_code == 200, waited.content
    agent_seen.append(waited.content)
    assert waited.json()["status"] == "succeeded", waited.json()
    assert time.monotonic() - started < 9, "wait returned only at its timeout, not when the action finished"

    # Exactly one request reached the target, with the secret from the stored credential.
    assert len(target.requests) == 1
    request = target.requests[0]
    assert (request.method, request.path) == ("GET", "/v1/status")
    assert header(request, "Authorization") == f"Bearer {TARGET_SECRET}"

    got = agent_api.get(f"/api/v1/actions/{action['id']}")
    assert got.status_code == 200
    agent_seen.append(got.content)
    body = got.json()
    assert body["status"] == "succeeded"
    assert body["result"]["status_code"] == 200
    assert body["result"]["body"] == {"healthy": True, "echo": "token was [redacted]"}
    assert body["decision"]["outcome"] == "approved"
    assert [(r["reviewer"], r["via"], r["comment"]) for r in body["decision"]["reviews"]] == [("rita", "api", "fine")]
    assert body["finished_at"] is not None

    listing = agent_api.get("/api/v1/actions")
    assert listing.status_code == 200
    agent_seen.append(listing.content)
    assert [a["status"] for a in listing.json()["results"]] == ["succeeded"]

    for content in agent_seen:
        assert TARGET_SECRET.encode() not in content

    # Audited step by step, and the secret is in no audit record.
    assert verbs(action["id"]) == [
        "action.proposed",
        "action.reviewed",
        "action.approved",
        "grant.minted",
        "grant.redeemed",
        "execution.started",
        "execution.succeeded",
    ]
    assert TARGET_SECRET not in audit_dump()
    assert ExecutionGrant.objects.get(action_id=action["id"]).redeemed_at is not None


def test_target_error_fails_the_action_and_is_audited(agent_api, reviewer_api, target, credential):
    target.status = 500
    target.resources["/v1/deploy"] = {"error": "database on fire", "token": TARGET_SECRET}

    action = propose(agent_api, http_body("/v1/deploy", method="POST", json={"version": "1.2.3"}))
    assert reviewer_api.post(f"/api/v1/actions/{action['id']}/approve", {}, format="json").status_code == 200

    waited = agent_api.get(f"/api/v1/actions/{action['id']}/wait", {"timeout": "10"})
    assert waited.status_code == 200
    body = waited.json()
    assert body["status"] == "failed", body
    assert "500" in body["result"]["error"]
    assert body["result"]["status_code"] == 500
    assert body["result"]["body"]["error"] == "database on fire"
    assert TARGET_SECRET.encode() not in waited.content

    # Tried once: a failed execution is not retried blindly.
    assert len(target.requests) == 1
    assert target.requests[0].json() == {"version": "1.2.3"}

    assert verbs(action["id"])[-2:] == ["execution.started", "execution.failed"]
    failed_event = AuditEvent.objects.get(action_id=action["id"], verb="execution.failed")
    assert failed_event.data["to"] == "failed"
    assert "500" in json.dumps(failed_event.data)
    assert TARGET_SECRET not in audit_dump()


def test_decision_only_approval_is_final_and_nothing_is_executed(agent_api, reviewer_api, target, credential):
    action = propose(agent_api, propose_body())
    assert reviewer_api.post(f"/api/v1/actions/{action['id']}/approve", {}, format="json").status_code == 200

    # The agent's wait for completion returns at once: approval is the end for decision.only.
    started = time.monotonic()
    waited = agent_api.get(f"/api/v1/actions/{action['id']}/wait", {"timeout": "10"})
    assert time.monotonic() - started < 5
    body = waited.json()
    assert body["status"] == "approved"
    assert body["decision"]["outcome"] == "approved"
    assert body["finished_at"] is not None
    assert body["result"] is None

    # Countersign runs nothing: no grant, no execute message for the worker.
    assert not ExecutionGrant.objects.filter(action_id=action["id"]).exists()
    assert not OutboxMessage.objects.filter(action_id=action["id"], kind=OutboxMessage.Kind.EXECUTE).exists()

    # An executable action approved afterwards goes through the same queue and is run;
    # once it has, the decision.only action is still approved and untouched.
    executable = propose(agent_api, http_body("/v1/ping"))
    assert reviewer_api.post(f"/api/v1/actions/{executable['id']}/approve", {}, format="json").status_code == 200
    wait_for_status(executable["id"], {"succeeded"})
    assert [r.path for r in target.requests] == ["/v1/ping"]

    assert status_of(action["id"]) == ActionStatus.APPROVED
    assert verbs(action["id"]) == ["action.proposed", "action.reviewed", "action.approved"]
    approved = agent_api.get("/api/v1/actions", {"status": "approved"}).json()["results"]
    assert [a["id"] for a in approved] == [action["id"]]


def test_reviewer_edits_are_what_runs(agent_api, reviewer_api, target, credential):
    action = propose(agent_api, http_body("/v1/users/42", method="DELETE"))
    edited = {"credential": "internal-api", "method": "GET", "path": "/v1/users/42", "query": {"fields": "name"}}

    response = reviewer_api.post(
        f"/api/v1/actions/{action['id']}/approve", {"comment": "read it instead", "params": edited}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["decision"]["edited_params"] == edited

    body = agent_api.get(f"/api/v1/actions/{action['id']}/wait", {"timeout": "10"}).json()
    assert body["status"] == "succeeded", body
    assert body["params"]["method"] == "DELETE"  # what the agent proposed stays on record
    assert body["decision"]["edited_params"] == edited

    sent = [(r.method, r.path) for r in target.requests]
    # The decision's preview read the target (the reviewer's evidence); the DELETE was never sent, and what ran,
    # last, is the edit.
    assert "DELETE" not in {method for method, _ in sent}
    assert sent[-1] == ("GET", "/v1/users/42?fields=name")
    reviewed = AuditEvent.objects.get(action_id=action["id"], verb="action.reviewed")
    assert reviewed.data["edited_params"]["before"]["method"] == "DELETE"
    assert reviewed.data["edited_params"]["after"] == edited


def test_edited_params_are_validated_and_nothing_runs_on_refusal(agent_api, reviewer_api, target, credential):
    action = propose(agent_api, http_body("/v1/users/42"))
    bad = {"credential": "internal-api", "method": "GET", "path": "/../admin"}

    response = reviewer_api.post(f"/api/v1/actions/{action['id']}/approve", {"params": bad}, format="json")
    assert response.status_code == 400
    assert "params.path" in response.json()["errors"]
    assert status_of(action["id"]) == ActionStatus.PENDING
    assert not ExecutionGrant.objects.filter(action_id=action["id"]).exists()
    assert target.requests == []


def test_wait_until_decision_returns_on_approval_before_execution_ends(
    agent_api, reviewer_api, target, credential, agent_key
):
    target.delay = 3.0  # the execution is slow; the decision is not
    action = propose(agent_api, http_body("/v1/slow"))
    url = f"/api/v1/actions/{action['id']}/wait"
    results: dict[str, object] = {}

    def agent_waits():
        # A second agent connection, as a real agent would long-poll while the reviewer decides.
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {agent_key}")
        try:
            response = client.get(url, {"timeout": "30", "until": "decision"})
            results["returned_at"] = time.monotonic()
            results["response"] = response
        finally:
            connection.close()

    waiter = threading.Thread(target=agent_waits)
    waiter.start()
    try:
        # The long-poll is still waiting while the action is pending.
        wait_for_waiter(action["id"])
        assert waiter.is_alive(), results.get("response")
        approved_at = time.monotonic()
        assert reviewer_api.post(f"/api/v1/actions/{action['id']}/approve", {}, format="json").status_code == 200
    finally:
        waiter.join(timeout=35)
    assert not waiter.is_alive()

    response = results["response"]
    assert response.status_code == 200
    body = response.json()
    assert body["decision"]["outcome"] == "approved"
    assert body["status"] in {"approved", "executing"}, body  # decided, not yet finished
    assert results["returned_at"] - approved_at < 2.5, "until=decision waited for more than the decision"

    # The default (until=completion) waits for the slow execution to finish.
    finished = agent_api.get(url, {"timeout": "20"}).json()
    assert finished["status"] == "succeeded"
    assert len(target.requests) == 1


def test_wait_times_out_with_the_current_state(agent_api):
    """A long-poll with nothing happening answers at its timeout with the current state.

    6 s on purpose: longer than the channel layer's 5 s blocking pop (an idle receive
    used to die with redis.TimeoutError and a 500 there).
    """
    action = propose(agent_api, propose_body())
    started = time.monotonic()
    response = agent_api.get(f"/api/v1/actions/{action['id']}/wait", {"timeout": "6", "until": "decision"})
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "pending"
    assert 5.9 <= elapsed < 10


def test_agent_over_http_sees_execution_through_the_real_server(web_server, agent_key, reviewer, target, credential):
    """The same loop over real HTTP (uvicorn) rather than the test client."""
    from tests.conftest import token_client

    agent = httpx.Client(base_url=web_server.url, headers={"Authorization": f"Bearer {agent_key}"}, timeout=30)
    with agent:
        created = agent.post("/api/v1/actions", json=http_body("/v1/over-http"))
        assert created.status_code == 201, created.text
        action_id = created.json()["id"]
        assert token_client(reviewer).post(f"/api/v1/actions/{action_id}/approve", {}, format="json").status_code == 200
        waited = agent.get(f"/api/v1/actions/{action_id}/wait", params={"timeout": "10"})
        assert waited.status_code == 200
        assert waited.json()["status"] == "succeeded"
        assert waited.json()["result"]["status_code"] == 200
        assert TARGET_SECRET not in waited.text
    assert [r.path for r in target.requests] == ["/v1/over-http"]
