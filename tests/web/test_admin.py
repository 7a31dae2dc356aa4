"""Staff manage agents, keys, capabilities and credentials in the admin; secrets never come back; all audited."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from agents.models import Agent, AgentKey, Capability
from approvals.credentials.crypto import decrypt_secret
from approvals.models import Credential
from audit.models import AuditEvent
from tests.conftest import TARGET_SECRET

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    admin = User.objects.create_superuser("ada", "ada@example.com", "pw-ada")
    client = Client()
    client.force_login(admin)
    return client


def key_on_page(html: str) -> str:
    match = re.search(r'id="new-agent-key"[^>]*>(cs_[^<]+)<', html)
    assert match, html
    return match.group(1)


def works(key: str) -> bool:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client.get("/api/v1/actions").status_code == 200


def test_adding_an_agent_shows_its_key_once_and_audits(staff, owner):
    response = staff.post(
        "/admin/agents/agent/add/",
        {
            "name": "admin-bot",
            "owner": owner.pk,
            "description": "made by hand",
            "is_active": "on",
            "capabilities-TOTAL_FORMS": "1",
            "capabilities-INITIAL_FORMS": "0",
            "capabilities-0-action_type": "decision.only",
            "capabilities-0-constraints": '{"service": ["billing"]}',
            "keys-TOTAL_FORMS": "0",
            "keys-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200, response.content[:2000]
    assert "no-store" in response["Cache-Control"]
    key = key_on_page(response.content.decode())
    assert works(key)
    agent = Agent.objects.get(name="admin-bot")
    assert Capability.objects.get(agent=agent).constraints == {"service": ["billing"]}
    verbs = set(AuditEvent.objects.filter(agent_name="admin-bot").values_list("verb", flat=True))
    assert {"agent.created", "capability.granted", "agent_key.created"} <= verbs
    assert all(e.actor == "ada" and e.via == "admin" for e in AuditEvent.objects.filter(agent_name="admin-bot"))

    page = staff.get(f"/admin/agents/agent/{agent.pk}/change/").content.decode()
    assert key not in page and key.split("_")[1] in page  # the prefix, never the secret


def test_deactivating_an_agent_is_audited_and_stops_its_key(staff, agent, agent_key):
    response = staff.post(
        f"/admin/agents/agent/{agent.pk}/change/",
        {
            "owner": agent.owner.pk,
            "description": "",
            "capabilities-TOTAL_FORMS": "2",
            "capabilities-INITIAL_FORMS": "2",
            **{
                f"capabilities-{i}-{k}": v
                for i, c in enumerate(agent.capabilities.order_by("action_type"))
                for k, v in {"id": c.pk, "agent": agent.pk, "action_type": c.action_type, "constraints": "{}"}.items()
            },
            "keys-TOTAL_FORMS": "1",
            "keys-INITIAL_FORMS": "1",
            "keys-0-id": agent.keys.get().pk,
            "keys-0-agent": agent.pk,
        },
    )
    assert response.status_code == 302, response.content[:3000]
    assert not works(agent_key)
    event = AuditEvent.objects.get(verb="agent.deactivated")
    assert event.data == {"is_active": {"before": True, "after": False}}


def test_invalid_constraints_are_a_readable_form_error(staff, owner):
    response = staff.post(
        "/admin/agents/agent/add/",
        {
            "name": "bad-bot",
            "owner": owner.pk,
            "is_active": "on",
            "capabilities-TOTAL_FORMS": "1",
            "capabilities-INITIAL_FORMS": "0",
            "capabilities-0-action_type": "decision.only",
            "capabilities-0-constraints": '{"service": "billing"}',
            "keys-TOTAL_FORMS": "0",
            "keys-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    assert "needs a list of" in response.content.decode()
    assert not Agent.objects.filter(name="bad-bot").exists()


def test_rotating_from_the_admin_shows_the_new_key_once_and_revokes_the_old(staff, agent, agent_key):
    response = staff.post("/admin/agents/agent/", {"action": "rotate_keys", "_selected_action": [agent.pk], "index": 0})
    new_key = key_on_page(response.content.decode())
    assert works(new_key) and not works(agent_key)


def test_revoking_a_key_from_the_admin(staff, agent, agent_key):
    key = AgentKey.objects.get(agent=agent)
    staff.post("/admin/agents/agentkey/", {"action": "revoke_selected", "_selected_action": [key.pk], "index": 0})
    assert not works(agent_key)
    assert AuditEvent.objects.filter(verb="agent_key.revoked", actor="ada").exists()


def test_key_pages_show_last_use_and_prefix_only(staff, agent, agent_key):
    works(agent_key)
    page = staff.get("/admin/agents/agentkey/").content.decode()
    assert agent_key.split("_")[1] in page and agent_key not in page
    assert "never" not in staff.get("/admin/agents/agent/").content.decode().split("helper-bot", 1)[1][:400]


def test_credential_secret_is_write_only(staff, credential):
    page = staff.get(f"/admin/approvals/credential/{credential.pk}/change/").content.decode()
    assert TARGET_SECRET not in page
    assert "stored encrypted" in page

    response = staff.post(
        f"/admin/approvals/credential/{credential.pk}/change/",
        # The settings as the form shows them (checked boxes are posted back unchanged).
        {
            "scope": '{"base_url": "http://127.0.0.1:9/api"}',
            "secret": "rotated-secret-value",
            "allow_preview_reads": "on",
            "result_visibility": ["status", "body"],
        },
    )
    assert response.status_code == 302, response.content[:2000]
    credential.refresh_from_db()
    assert credential.scope == {"base_url": "http://127.0.0.1:9/api"}
    assert decrypt_secret(credential.secret_encrypted) == "rotated-secret-value"
    verbs = list(AuditEvent.objects.filter(object_type="credential", actor="ada").values_list("verb", flat=True))
    assert verbs == ["credential.scope_changed", "credential.secret_changed"]
    exported = str(list(AuditEvent.objects.values_list("data", flat=True)))
    assert "rotated-secret-value" not in exported and TARGET_SECRET not in exported

    listing = staff.get("/admin/approvals/credential/").content.decode()
    assert "rotated-secret-value" not in listing


def test_credential_without_secret_or_with_a_bad_scope_is_refused(staff):
    response = staff.post(
        "/admin/approvals/credential/add/",
        {"name": "new-api", "kind": "http_bearer", "scope": '{"base_url": "https://a.internal"}', "secret": ""},
    )
    assert "needs its secret" in response.content.decode()
    response = staff.post(
        "/admin/approvals/credential/add/",
        {"name": "new-api", "kind": "http_bearer", "scope": '{"base_url": "file:///etc"}', "secret": "s"},
    )
    assert "base_url" in response.content.decode()
    assert not Credential.objects.exists()

    response = staff.post(
        "/admin/approvals/credential/add/",
        {"name": "new-api", "kind": "http_bearer", "scope": '{"base_url": "https://a.internal"}', "secret": "s3"},
    )
    assert response.status_code == 302
    assert decrypt_secret(Credential.objects.get(name="new-api").secret_encrypted) == "s3"
    assert AuditEvent.objects.filter(verb="credential.created", actor="ada").exists()
