"""Agent identities and keys, reviewer tokens and credentials, through the management commands."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from agents.models import Agent, AgentKey
from approvals.credentials.crypto import decrypt_secret
from approvals.models import Credential
from audit.models import AuditEvent
from tests.conftest import propose_body

pytestmark = pytest.mark.django_db

KEY_PATTERN = re.compile(r"^cs_[0-9a-f]{16}_[A-Za-z0-9]{20,}$")


def run(command: str, *args, stdin: str = "") -> str:
    out = io.StringIO()
    if stdin:
        import sys

        old, sys.stdin = sys.stdin, io.StringIO(stdin)
        try:
            call_command(command, *args, stdout=out)
        finally:
            sys.stdin = old
    else:
        call_command(command, *args, stdout=out)
    return out.getvalue()


def as_agent(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def test_create_agent_prints_only_a_working_key_and_stores_only_its_hash(owner):
    out = run("create_agent", "deploy-bot", "--owner", owner.username, "--allow", "decision.only")
    key = out.strip()
    assert KEY_PATTERN.match(key), out
    assert out.count("\n") <= 1

    agent = Agent.objects.get(name="deploy-bot")
    assert agent.owner == owner and agent.is_active
    stored = AgentKey.objects.get(agent=agent)
    secret = key.split("_", 2)[2]
    assert secret not in stored.secret_hash and stored.public_id == key.split("_")[1]

    client = as_agent(key)
    assert [t["name"] for t in client.get("/api/v1/action-types").json()] == ["decision.only"]
    assert client.post("/api/v1/actions", propose_body(), format="json").status_code == 201
    assert AuditEvent.objects.filter(verb="agent.created", object_id=str(agent.id)).exists()
    assert secret not in str(list(AuditEvent.objects.values_list("data", flat=True)))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bot", "--owner", "nobody"], "no user"),
        (["bot", "--owner", "olivia", "--allow", "launch.missiles"], "unknown action type"),
        (["Not A Slug", "--owner", "olivia"], "name"),
    ],
)
def test_create_agent_refuses_bad_input_and_creates_nothing(owner, args, message):
    with pytest.raises(CommandError, match=message):
        run("create_agent", *args)
    assert not Agent.objects.exists()


def test_agent_names_are_unique(owner):
    run("create_agent", "bot", "--owner", owner.username)
    with pytest.raises(CommandError, match="already exists"):
        run("create_agent", "bot", "--owner", owner.username)


def test_rotating_a_key_revokes_the_old_one_at_once(owner):
    old = run("create_agent", "bot", "--owner", owner.username, "--allow", "decision.only").strip()
    new = run("rotate_agent_key", "bot").strip()
    assert KEY_PATTERN.match(new) and new != old
    assert as_agent(old).get("/api/v1/actions").status_code == 401
    assert as_agent(new).get("/api/v1/actions").status_code == 200


def test_revoking_a_key_takes_effect_on_the_next_request(owner):
    key = run("create_agent", "bot", "--owner", owner.username, "--allow", "decision.only").strip()
    client = as_agent(key)
    assert client.get("/api/v1/actions").status_code == 200
    out = run("revoke_agent_key", key.split("_")[1])
    assert "revoked" in out
    response = client.get("/api/v1/actions")
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/problem+json")
    assert AuditEvent.objects.filter(verb="agent_key.revoked").exists()
    with pytest.raises(CommandError, match="no agent key"):
        run("revoke_agent_key", "0000000000000000")


def test_expired_keys_are_refused(agent_and_key):
    agent, key = agent_and_key
    AgentKey.objects.filter(agent=agent).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert as_agent(key).get("/api/v1/actions").status_code == 401


def test_a_forged_secret_with_a_real_public_id_is_refused(agent_and_key):
    _, key = agent_and_key
    prefix, public_id, secret = key.split("_", 2)
    forged = f"{prefix}_{public_id}_{secret[:-1]}{'a' if secret[-1] != 'a' else 'b'}"
    assert as_agent(forged).get("/api/v1/actions").status_code == 401


def test_keys_record_when_they_were_last_used(agent_and_key):
    agent, key = agent_and_key
    assert AgentKey.objects.get(agent=agent).last_used_at is None
    as_agent(key).get("/api/v1/actions")
    assert AgentKey.objects.get(agent=agent).last_used_at is not None


def test_reviewer_tokens_work_and_are_only_printed(reviewer):
    token = run("create_reviewer_token", reviewer.username).strip()
    assert token.startswith("csr_")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/actions").status_code == 200
    assert token not in str(list(AuditEvent.objects.values_list("data", flat=True)))
    with pytest.raises(CommandError):
        run("create_reviewer_token", "nobody")


def test_create_credential_reads_the_secret_from_stdin_and_encrypts_it():
    out = run(
        "create_credential",
        "billing-api",
        "--kind",
        "http_bearer",
        "--base-url",
        "https://billing.internal/api/",
        stdin="top-secret-value\n",
    )
    assert "top-secret-value" not in out
    credential = Credential.objects.get(name="billing-api")
    assert credential.scope["base_url"] == "https://billing.internal/api"
    assert b"top-secret-value" not in bytes(credential.secret_encrypted)
    assert decrypt_secret(bytes(credential.secret_encrypted)) == "top-secret-value"
    assert "top-secret-value" not in str(list(AuditEvent.objects.values_list("data", flat=True)))


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["x", "--kind", "http_bearer"], "s\n", "base-url"),
        (["x", "--kind", "http_bearer", "--base-url", "file:///etc"], "s\n", "base-url"),
        (["x", "--kind", "http_bearer", "--base-url", "https://a.internal"], "\n", "no secret"),
    ],
)
def test_create_credential_refuses_bad_input(args, stdin, message):
    with pytest.raises(CommandError, match=message):
        run("create_credential", *args, stdin=stdin)
    assert not Credential.objects.exists()
