"""The agent API contract of docs/API.md, and every way to get it wrong."""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.test import Client
from rest_framework.test import APIClient

from agents.services import create_agent
from approvals.models import ActionRequest, ActionStatus
from audit.models import AuditEvent
from tests.conftest import CLI, propose_body, token_client
from tests.support.waiting import wait_for_waiter

pytestmark = pytest.mark.django_db

ACTION_FIELDS = {
    "id",
    "status",
    "action_type",
    "params",
    "summary",
    "risk",
    "required_approvals",
    "approvals",
    "policy",
    "decision",
    "result",
    "created_at",
    "expires_at",
    "decided_at",
    "finished_at",
    "links",
}


def assert_problem(response, status: int, *error_keys: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://") and body["title"] and body["detail"]
    for key in error_keys:
        assert key in body.get("errors", {}), body
    return body


def propose(client, **overrides):
    return client.post("/api/v1/actions", propose_body(**overrides), format="json")


def http_params(stored, **overrides):
    return {"credential": stored.name, "method": "GET", "path": "/status"} | overrides


@pytest.fixture
def other_agent_api(owner):
    _, _, raw = create_agent(name="other-bot", owner=owner, actor=CLI, allow=["decision.only"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


# --- authentication ---------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [None, "Bearer nope", "Bearer cs_0123456789abcdef_wrong", "Basic dXNlcjpwdw==", "Token csr_abc_nope"],
)
def test_requests_without_a_valid_credential_get_401_problem(header):
    client = APIClient()
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)
    body = assert_problem(client.get("/api/v1/actions"), 401)
    assert "key" in body["detail"].lower() or "credentials" in body["detail"].lower() or body["detail"]


def test_agent_key_never_authorizes_reviewer_endpoints(agent_api, reviewer):
    action_id = propose(agent_api).json()["id"]
    assert_problem(agent_api.post(f"/api/v1/actions/{action_id}/approve", {}, format="json"), 403)
    assert_problem(agent_api.post(f"/api/v1/actions/{action_id}/reject", {"reason": "x"}, format="json"), 403)
    assert ActionRequest.objects.get(id=action_id).status == ActionStatus.PENDING


def test_reviewer_session_needs_csrf(agent_api, reviewer):
    action_id = propose(agent_api).json()["id"]
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(reviewer)
    response = browser.post(f"/api/v1/actions/{action_id}/approve", {}, content_type="application/json")
    assert_problem(response, 403)
    assert ActionRequest.objects.get(id=action_id).status == ActionStatus.PENDING


# --- action types -----------------------------------------------------------------


def test_action_types_lists_only_what_the_agent_may_propose(owner):
    _, _, raw = create_agent(name="narrow-bot", owner=owner, actor=CLI, allow=["decision.only"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = client.get("/api/v1/action-types")
    assert response.status_code == 200
    assert [t["name"] for t in response.json()] == ["decision.only"]
    entry = response.json()[0]
    assert set(entry) >= {"name", "title", "description", "risk", "modifies_access", "params_schema"}


def test_reviewers_see_every_action_type(reviewer_api):
    names = {t["name"] for t in reviewer_api.get("/api/v1/action-types").json()}
    assert {"decision.only", "http.request"} <= names


# --- proposing --------------------------------------------------------------------


def test_propose_returns_the_action_as_documented(agent_api, agent):
    response = propose(
        agent_api,
        on_behalf_of="alice@example.com",
        context={"reasoning": "stale lock", "source": {"kind": "forum_post", "url": "https://forum/t/1"}},
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) >= ACTION_FIELDS
    assert body["status"] == "pending"
    assert body["approvals"] == 0 and body["required_approvals"] >= 1
    assert body["decision"] is None and body["result"] is None
    assert body["links"] == {
        "self": f"/api/v1/actions/{body['id']}",
        "wait": f"/api/v1/actions/{body['id']}/wait",
        "review": f"/actions/{body['id']}",
    }
    assert body["created_at"].endswith("Z") and body["expires_at"] > body["created_at"]
    assert set(body["policy"]) == {"rule", "effect", "explanation"}
    event = AuditEvent.objects.get(verb="action.proposed")
    assert event.object_id == body["id"]
    assert (event.actor_type, event.actor) == ("agent", agent.name)


@pytest.mark.parametrize(
    ("body", "error_key"),
    [
        ({"params": {}, "summary": "x"}, "action_type"),
        ({"action_type": "decision.only", "summary": "x"}, "params"),
        ({"action_type": "decision.only", "params": {}}, "summary"),
        ({"action_type": "decision.only", "params": {}, "summary": "x" * 281}, "summary"),
        ({"action_type": "decision.only", "params": [], "summary": "x"}, "params"),
        ({"action_type": "no.such.type", "params": {}, "summary": "x"}, "action_type"),
        ({"action_type": "decision.only", "params": {}, "summary": "x", "surprise": 1}, "surprise"),
        ({"action_type": "decision.only", "params": {}, "summary": "x", "expires_in": 5}, "expires_in"),
        ({"action_type": "decision.only", "params": {}, "summary": "x", "callback_url": "ftp://a/b"}, "callback_url"),
        ({"action_type": "decision.only", "params": {}, "summary": "x", "context": "text"}, "context"),
    ],
)
def test_invalid_proposals_are_400_with_field_errors_and_leave_nothing(agent_api, body, error_key):
    assert_problem(agent_api.post("/api/v1/actions", body, format="json"), 400, error_key)
    assert not ActionRequest.objects.exists()
    assert not AuditEvent.objects.filter(verb="action.proposed").exists()


def test_params_are_validated_against_the_action_types_schema(agent_api, credential):
    response = propose(
        agent_api, action_type="http.request", params=http_params(credential, method="TELEPORT", extra=1)
    )
    body = assert_problem(response, 400, "params.method")
    assert any("extra" in key or "extra" in " ".join(msgs) for key, msgs in body["errors"].items())
    assert not ActionRequest.objects.exists()


@pytest.mark.parametrize("path", ["/../admin", "//evil.example/x", "/a?b=1", "/%2e%2e/admin", "relative"])
def test_http_paths_cannot_leave_the_credentials_base_url(agent_api, credential, path):
    response = propose(agent_api, action_type="http.request", params=http_params(credential, path=path))
    assert_problem(response, 400, "params.path")
    assert not ActionRequest.objects.exists()


def test_http_request_names_a_stored_credential(agent_api, credential):
    response = propose(agent_api, action_type="http.request", params=http_params(credential, credential="missing"))
    assert_problem(response, 400, "params.credential")


def test_agents_cannot_set_the_authorization_header(agent_api, credential):
    params = http_params(credential, headers={"Authorization": "Bearer mine"})
    assert_problem(propose(agent_api, action_type="http.request", params=params), 400, "params.headers")


def test_context_is_limited_to_64_kib(agent_api):
    response = propose(agent_api, context={"blob": "x" * (64 * 1024)})
    assert_problem(response, 400, "context")
    assert not ActionRequest.objects.exists()


def test_bodies_over_256_kib_are_413(agent_api):
    response = propose(agent_api, params={"blob": "x" * (256 * 1024)})
    assert_problem(response, 413)
    assert not ActionRequest.objects.exists()


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b'{"action_type": "decision.only", "params": {}, "summary": "x\\u0000"}', "application/json", 400),
        (b'{"action_type": "decision.only", "params": {}, "summary": "\xff\xfe"}', "application/json", 400),
        (b'{"action_type": "decision.only", "params": {"n": NaN}, "summary": "x"}', "application/json", 400),
        (b"[" * 100 + b"]" * 100, "application/json", 400),
        (b"[]", "application/json", 400),
        (b"action_type=decision.only", "application/x-www-form-urlencoded", 415),
    ],
)
def test_malformed_bodies_are_refused(agent_api, raw, content_type, status):
    response = agent_api.generic("POST", "/api/v1/actions", raw, content_type=content_type)
    assert_problem(response, status)
    assert not ActionRequest.objects.exists()


def test_a_capability_the_agent_lacks_is_403_and_audited(owner, credential):
    agent, _, raw = create_agent(name="narrow-bot", owner=owner, actor=CLI, allow=["decision.only"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    body = assert_problem(propose(client, action_type="http.request", params=http_params(credential)), 403)
    assert "http.request" in body["detail"]
    assert not ActionRequest.objects.exists()
    refused = AuditEvent.objects.get(verb="action.refused")
    assert refused.object_id == str(agent.id)


def test_inactive_agents_are_refused(agent_api, agent):
    agent.is_active = False
    agent.save()
    assert_problem(propose(agent_api), 401)


# --- idempotency ------------------------------------------------------------------


def test_idempotency_key_returns_the_original_for_the_same_body(agent_api):
    first = propose(agent_api, idempotency_key="k-1")
    again = propose(agent_api, idempotency_key="k-1")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert ActionRequest.objects.count() == 1


def test_idempotency_key_with_another_body_is_409(agent_api):
    propose(agent_api, idempotency_key="k-1")
    assert_problem(propose(agent_api, idempotency_key="k-1", summary="Something else"), 409)
    assert ActionRequest.objects.count() == 1


def test_idempotency_key_may_come_as_a_header(agent_api):
    first = agent_api.post("/api/v1/actions", propose_body(), format="json", HTTP_IDEMPOTENCY_KEY="hdr-1")
    again = agent_api.post("/api/v1/actions", propose_body(), format="json", HTTP_IDEMPOTENCY_KEY="hdr-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]


def test_an_empty_idempotency_key_header_is_refused_not_ignored(agent_api):
    # `-H "Idempotency-Key: $(uuidgen)"` on a machine without uuidgen sends the header empty: proposing anyway
    # would drop the idempotency the caller asked for, and their retry would propose twice.
    for empty in ("", "   "):
        body = assert_problem(
            agent_api.post("/api/v1/actions", propose_body(), format="json", HTTP_IDEMPOTENCY_KEY=empty),
            400,
            "Idempotency-Key",
        )
        assert "Empty" in body["errors"]["Idempotency-Key"][0]
    assert not ActionRequest.objects.exists()


def test_the_schema_declares_the_idempotency_key_header():
    schema = json.loads(Client().get("/api/schema/?format=json").content)
    header = next(p for p in schema["paths"]["/api/v1/actions"]["post"]["parameters"] if p["name"] == "Idempotency-Key")
    assert header["in"] == "header" and not header.get("required")
    assert header["schema"]["minLength"] == 1


def test_idempotency_keys_belong_to_one_agent(agent_api, other_agent_api):
    mine = propose(agent_api, idempotency_key="shared")
    theirs = propose(other_agent_api, idempotency_key="shared")
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]


# --- reading ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_another_agents_action_is_404(agent_api, other_agent_api):
    action_id = propose(agent_api).json()["id"]
    assert agent_api.get(f"/api/v1/actions/{action_id}").status_code == 200
    for path in ("", "/wait?timeout=0"):
        assert_problem(other_agent_api.get(f"/api/v1/actions/{action_id}{path}"), 404)
    assert_problem(other_agent_api.post(f"/api/v1/actions/{action_id}/cancel"), 404)
    assert ActionRequest.objects.get(id=action_id).status == ActionStatus.PENDING


def test_unknown_and_malformed_ids_are_404_problems(agent_api):
    assert_problem(agent_api.get("/api/v1/actions/7d3f8a52-4a8e-4f0e-9d3c-2b1d2b1d2b1d"), 404)
    assert_problem(agent_api.get("/api/v1/actions/not-a-uuid"), 404)
    assert_problem(agent_api.get("/api/v1/nothing-here"), 404)


def test_wrong_method_is_405_problem(agent_api):
    assert_problem(agent_api.delete("/api/v1/actions"), 405)


def test_list_is_newest_first_own_only_filtered_and_cursor_paginated(agent_api, other_agent_api):
    ids = [propose(agent_api, summary=f"action {i}").json()["id"] for i in range(5)]
    propose(other_agent_api)
    agent_api.post(f"/api/v1/actions/{ids[0]}/cancel")

    seen, url = [], "/api/v1/actions?limit=2"
    while url:
        page = agent_api.get(url).json()
        assert len(page["results"]) <= 2
        seen += [a["id"] for a in page["results"]]
        url = page["next"]
    assert seen == list(reversed(ids))

    pending = agent_api.get("/api/v1/actions?status=pending").json()["results"]
    assert [a["id"] for a in pending] == list(reversed(ids[1:]))
    cancelled = agent_api.get("/api/v1/actions?status=cancelled").json()["results"]
    assert [a["id"] for a in cancelled] == [ids[0]]
    assert_problem(agent_api.get("/api/v1/actions?status=bogus"), 400, "status")
    assert_problem(agent_api.get("/api/v1/actions?cursor=garbage"), 404)


# --- cancel -----------------------------------------------------------------------


def test_cancel_withdraws_a_pending_action_once(agent_api):
    action_id = propose(agent_api).json()["id"]
    response = agent_api.post(f"/api/v1/actions/{action_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert_problem(agent_api.post(f"/api/v1/actions/{action_id}/cancel"), 409)
    assert AuditEvent.objects.filter(verb="action.cancelled", object_id=action_id).count() == 1


def test_reviewers_cannot_cancel_for_the_agent(agent_api, reviewer_api):
    action_id = propose(agent_api).json()["id"]
    assert_problem(reviewer_api.post(f"/api/v1/actions/{action_id}/cancel"), 403)


# --- reviewer decisions -----------------------------------------------------------


def test_reject_needs_a_reason_and_the_agent_receives_it(agent_api, reviewer_api):
    action_id = propose(agent_api).json()["id"]
    assert_problem(reviewer_api.post(f"/api/v1/actions/{action_id}/reject", {}, format="json"), 400, "reason")
    assert_problem(
        reviewer_api.post(f"/api/v1/actions/{action_id}/reject", {"reason": "   "}, format="json"), 400, "reason"
    )
    assert ActionRequest.objects.get(id=action_id).status == ActionStatus.PENDING

    reviewer_api.post(f"/api/v1/actions/{action_id}/reject", {"reason": "Use the runbook"}, format="json")
    seen = agent_api.get(f"/api/v1/actions/{action_id}").json()
    assert seen["status"] == "rejected"
    assert seen["decision"]["outcome"] == "rejected"
    assert seen["decision"]["reason"] == "Use the runbook"
    assert seen["decision"]["reviews"][0] | {"at": None} == {
        "reviewer": "rita",
        "verdict": "reject",
        "via": "api",
        "comment": "Use the runbook",
        "at": None,
    }
    assert seen["decided_at"]


def test_a_decided_action_cannot_be_decided_again(agent_api, reviewer_api, second_reviewer):
    action_id = propose(agent_api).json()["id"]
    assert reviewer_api.post(f"/api/v1/actions/{action_id}/approve", {}, format="json").status_code == 200
    other = token_client(second_reviewer)
    assert_problem(other.post(f"/api/v1/actions/{action_id}/reject", {"reason": "late"}, format="json"), 409)
    assert_problem(other.post(f"/api/v1/actions/{action_id}/approve", {}, format="json"), 409)
    assert_problem(agent_api.post(f"/api/v1/actions/{action_id}/cancel"), 409)
    assert ActionRequest.objects.get(id=action_id).status == ActionStatus.APPROVED


def test_reviewers_outside_the_policys_group_are_403(agent_api, outsider):
    action_id = propose(agent_api).json()["id"]
    client = token_client(outsider)
    assert_problem(client.post(f"/api/v1/actions/{action_id}/approve", {}, format="json"), 403)
    assert ActionRequest.objects.get(id=action_id).status == ActionStatus.PENDING


def test_approve_decision_only_with_edits_goes_back_to_the_agent(agent_api, reviewer_api):
    action_id = propose(agent_api).json()["id"]
    edited = {"command": "restart", "service": "billing-canary"}
    response = reviewer_api.post(
        f"/api/v1/actions/{action_id}/approve", {"comment": "canary first", "params": edited}, format="json"
    )
    assert response.status_code == 200
    seen = agent_api.get(f"/api/v1/actions/{action_id}").json()
    assert seen["status"] == "approved"
    assert seen["params"] == propose_body()["params"]
    assert seen["decision"]["edited_params"] == edited
    assert seen["decision"]["reviews"][0]["comment"] == "canary first"
    reviewed = AuditEvent.objects.get(verb="action.reviewed", object_id=action_id)
    assert reviewed.data["edited_params"]["after"] == edited


def test_edits_are_validated_and_a_bad_edit_changes_nothing(agent_api, reviewer_api, credential):
    action_id = propose(agent_api, action_type="http.request", params=http_params(credential)).json()["id"]
    response = reviewer_api.post(
        f"/api/v1/actions/{action_id}/approve", {"params": http_params(credential, path="/../x")}, format="json"
    )
    assert_problem(response, 400, "params.path")
    action = ActionRequest.objects.get(id=action_id)
    assert action.status == ActionStatus.PENDING and action.edited_params is None
    assert not action.reviews.exists()


# --- wait -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # wait reads in its own thread and connection
def test_wait_times_out_with_the_current_state(agent_api):
    action_id = propose(agent_api).json()["id"]
    started = time.monotonic()
    response = agent_api.get(f"/api/v1/actions/{action_id}/wait?timeout=0.5")
    assert response.status_code == 200
    assert json.loads(response.content)["status"] == "pending"
    assert time.monotonic() - started >= 0.45


@pytest.mark.django_db(transaction=True)
def test_wait_answers_at_once_when_already_decided(agent_api, reviewer_api):
    action_id = propose(agent_api).json()["id"]
    reviewer_api.post(f"/api/v1/actions/{action_id}/reject", {"reason": "no"}, format="json")
    started = time.monotonic()
    response = agent_api.get(f"/api/v1/actions/{action_id}/wait?timeout=30")
    assert json.loads(response.content)["status"] == "rejected"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("query", "field"),
    [("timeout=61", "timeout"), ("timeout=-1", "timeout"), ("timeout=x", "timeout"), ("until=ever", "until")],
)
def test_wait_rejects_bad_parameters(agent_api, query, field):
    action_id = propose(agent_api).json()["id"]
    assert_problem(agent_api.get(f"/api/v1/actions/{action_id}/wait?{query}"), 400, field)


@pytest.mark.django_db(transaction=True)
def test_wait_needs_a_valid_key(agent_api):
    action_id = propose(agent_api).json()["id"]
    assert_problem(APIClient().get(f"/api/v1/actions/{action_id}/wait?timeout=0"), 401)


@pytest.mark.django_db(transaction=True)
def test_wait_returns_as_soon_as_a_reviewer_decides(agent_api, reviewer_api):
    action_id = propose(agent_api).json()["id"]
    answers = {}

    def wait():
        started = time.monotonic()
        response = agent_api.get(f"/api/v1/actions/{action_id}/wait?timeout=20&until=decision")
        answers["status"] = json.loads(response.content)["status"]
        answers["elapsed"] = time.monotonic() - started

    waiter = threading.Thread(target=wait)
    waiter.start()
    wait_for_waiter(action_id)  # the decision must wake it, not the timeout
    reviewer_api.post(f"/api/v1/actions/{action_id}/approve", {}, format="json")
    waiter.join(timeout=25)
    assert answers["status"] == "approved"
    assert answers["elapsed"] < 10


# --- schema and docs --------------------------------------------------------------


def test_openapi_schema_documents_every_endpoint():
    response = Client().get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    for path in [
        "/api/v1/action-types",
        "/api/v1/actions",
        "/api/v1/actions/{action_id}",
        "/api/v1/actions/{action_id}/wait",
        "/api/v1/actions/{action_id}/cancel",
        "/api/v1/actions/{action_id}/approve",
        "/api/v1/actions/{action_id}/reject",
    ]:
        assert path in paths, path


def test_api_docs_are_served_from_vendored_assets():
    response = Client().get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger" in html.lower()
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()


def test_an_action_past_its_time_to_live_cannot_be_decided_before_the_expiry_job_runs(agent_api, reviewer_api):
    from datetime import timedelta

    from django.utils import timezone

    action_id = propose(agent_api).json()["id"]
    ActionRequest.objects.filter(id=action_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    body = assert_problem(reviewer_api.post(f"/api/v1/actions/{action_id}/approve", {}, format="json"), 409)
    assert "expired" in body["detail"]
    assert ActionRequest.objects.get(id=action_id).status == ActionStatus.PENDING
