"""Execution grants: single use, short-lived, bound to the approved params and credential; executors get a
narrowed client. Each refusal is provoked with the forged state itself."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from agents.services import grant_capability
from approvals import services
from approvals.credentials.scoped import CredentialView
from approvals.models import ActionRequest, ActionStatus, Credential, ExecutionGrant, Review
from approvals.services.credentials import create_credential
from audit.models import AuditEvent
from catalog import registry
from catalog.base import ActionType
from tests import factories
from tests.conftest import CLI, TARGET_SECRET

pytestmark = pytest.mark.django_db


def approved_http_action(agent, reviewer, credential, **params) -> ActionRequest:
    action = factories.propose(
        agent,
        "http.request",
        {"credential": credential.name, "method": "POST", "path": "/tickets", "json": {"n": 1}} | params,
        summary="Open a ticket",
    )
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
    return ActionRequest.objects.get(id=action.id)


def refusal_of(action: ActionRequest) -> str:
    action.refresh_from_db()
    assert action.status == ActionStatus.FAILED
    event = AuditEvent.objects.get(verb="grant.refused", action_id=action.id)
    assert AuditEvent.objects.filter(verb="execution.failed", action_id=action.id).exists()
    return event.data["reason"]


def test_the_worker_sends_exactly_the_approved_request_with_the_secret(agent, reviewer, credential, target):
    action = approved_http_action(agent, reviewer, credential)
    grant = ExecutionGrant.objects.get(action=action)
    assert grant.credential == credential and grant.redeemed_at is None

    assert services.execute_action(action.id) == ActionStatus.SUCCEEDED
    [request] = target.requests
    assert (request.method, request.path, request.json()) == ("POST", "/tickets", {"n": 1})
    assert request.headers["Authorization"] == f"Bearer {TARGET_SECRET}"
    assert request.headers["Idempotency-Key"] == str(action.id)
    grant.refresh_from_db()
    assert grant.redeemed_at is not None


def test_params_changed_in_the_database_after_approval_are_refused(agent, reviewer, credential, target):
    action = approved_http_action(agent, reviewer, credential)
    ActionRequest.objects.filter(id=action.id).update(params={**action.params, "path": "/admin/grant-root"})
    services.execute_action(action.id)
    assert refusal_of(action) == "parameters changed after approval"
    assert target.requests == []


def test_a_second_redemption_is_refused(agent, reviewer, credential, target):
    action = approved_http_action(agent, reviewer, credential)
    services.execute_action(action.id)
    # Forge the state a buggy or malicious writer could leave: the action "approved" again.
    ActionRequest.objects.filter(id=action.id).update(status=ActionStatus.APPROVED)
    services.execute_action(action.id)
    assert refusal_of(action) == "grant already redeemed"
    assert len(target.requests) == 1


def test_an_expired_grant_is_refused(agent, reviewer, credential, target):
    action = approved_http_action(agent, reviewer, credential)
    ExecutionGrant.objects.filter(action=action).update(expires_at=timezone.now() - timedelta(seconds=1))
    services.execute_action(action.id)
    assert refusal_of(action) == "grant expired"
    assert target.requests == []


def test_a_grant_swapped_to_another_credential_is_refused(agent, reviewer, credential, target):
    action = approved_http_action(agent, reviewer, credential)
    other = create_credential(
        name="root-api", kind="http_bearer", secret="root", scope={"base_url": target.url}, actor=CLI
    )
    ExecutionGrant.objects.filter(action=action).update(credential=other)
    services.execute_action(action.id)
    assert refusal_of(action) == "credential does not match the approved one"
    assert target.requests == []


def test_a_missing_grant_is_refused(agent, reviewer, credential, target):
    action = approved_http_action(agent, reviewer, credential)
    ExecutionGrant.objects.filter(action=action).delete()
    services.execute_action(action.id)
    assert refusal_of(action) == "no execution grant"


def test_redelivery_of_a_finished_action_does_nothing(agent, reviewer, credential, target):
    action = approved_http_action(agent, reviewer, credential)
    services.execute_action(action.id)
    assert services.execute_action(action.id) == ActionStatus.SUCCEEDED
    assert len(target.requests) == 1
    assert AuditEvent.objects.filter(verb="grant.redeemed", action_id=action.id).count() == 1


def test_an_edited_approval_binds_the_grant_to_the_edit(agent, reviewer, credential, target):
    action = factories.propose(
        agent,
        "http.request",
        {"credential": credential.name, "method": "DELETE", "path": "/users/7"},
        summary="Remove user 7",
    )
    edited = {"credential": credential.name, "method": "GET", "path": "/users/7"}
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API, edited_params=edited)
    target.requests.clear()  # the decision's own preview reads (the reviewer's evidence) are not the execution
    services.execute_action(action.id)
    assert [(r.method, r.path) for r in target.requests] == [("GET", "/users/7")]


def test_a_target_echoing_the_secret_is_redacted_before_it_is_stored(agent, reviewer, credential, target):
    target.resources["/echo"] = lambda request: {"you_sent": request.headers.get("Authorization")}
    action = approved_http_action(agent, reviewer, credential, path="/echo")
    services.execute_action(action.id)
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED
    # The whole header value Countersign sent is a secret-bearing value: it goes, scheme and all.
    assert action.result["body"] == {"you_sent": "[redacted]"}
    assert TARGET_SECRET not in str(action.result)


# --- what an executor is handed ------------------------------------------------------------


class ProbeType(ActionType):
    """Records what the executor receives; optionally crashes with the secret in its message."""

    name = "test.probe"
    title = "Probe"
    credential_kinds = ("http_bearer",)
    params_schema = {"type": "object", "required": ["credential"], "properties": {"crash": {"type": "boolean"}}}
    seen: list = []

    def make_client(self, credential, params, *, idempotency_key):
        self.seen.append((credential, idempotency_key))
        return credential

    def execute(self, params, client):
        if params.get("crash"):
            raise RuntimeError(f"could not use {client.reveal()}")
        return {"ok": True}


@pytest.fixture
def probe(agent):
    probe = ProbeType()
    ProbeType.seen = []
    registry.register(probe)
    grant_capability(agent=agent, action_type=probe.name, actor=CLI)
    yield probe
    registry._registry.pop(probe.name, None)


def approved_probe(agent, reviewer, credential, **params) -> ActionRequest:
    action = factories.propose(agent, "test.probe", {"credential": credential.name, **params}, summary="probe")
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
    return action


def test_executors_get_a_narrow_view_never_the_credential_model(probe, agent, reviewer, credential):
    action = approved_probe(agent, reviewer, credential)
    assert services.execute_action(action.id) == ActionStatus.SUCCEEDED
    # The execution's entry is keyed by the action (the decision's preview, if any, by "preview").
    [(view, key)] = [(view, key) for view, key in ProbeType.seen if key != "preview"]
    assert isinstance(view, CredentialView) and not isinstance(view, Credential)
    assert not hasattr(view, "secret_encrypted") and not hasattr(view, "save")
    assert TARGET_SECRET not in repr(view)
    assert key == str(action.id)


def test_a_crash_echoing_the_secret_leaks_it_nowhere(probe, agent, reviewer, credential, caplog):
    action = approved_probe(agent, reviewer, credential, crash=True)
    with caplog.at_level(logging.DEBUG):
        assert services.execute_action(action.id) == ActionStatus.FAILED
    action.refresh_from_db()
    assert action.result == {"error": "executor crashed (RuntimeError)"}
    assert "RuntimeError: could not use [redacted]" in caplog.text
    assert TARGET_SECRET not in caplog.text
    assert TARGET_SECRET not in str(list(AuditEvent.objects.values_list("data", flat=True)))
