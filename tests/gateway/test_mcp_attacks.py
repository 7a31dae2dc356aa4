# ruff: noqa: F811 - the fixtures come from tests/gateway/mcp_support
"""What an agent may not do through the MCP gateway, each tried against the real ``mcp-server-git`` and each
refused and audited: a server it holds no capability for, another spelling of the server or the tool (case,
look-alike letters, spaces, invisible characters), arguments outside its constraints, annotations it made up,
and anything at all once frozen (or once its capability is gone, even after a reviewer approved)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from rest_framework.test import APIClient

from agents.services import grant_capability, revoke_capability
from approvals import services
from approvals.models import ActionRequest, ActionStatus
from approvals.services import containment
from approvals.services.mcp_upstreams import update_upstream
from audit.models import AuditEvent
from tests.conftest import token_client
from tests.factories import CLI, AgentFactory
from tests.gateway.mcp_support import (  # noqa: F401 - fixtures among them
    STAFF,
    call_body,
    coder,
    commits,
    git_reads_rule,
    git_server,
    git_upstream,
    make_repo,
    repo,
)

pytestmark = pytest.mark.django_db


def api_for(agent) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {agent.raw_key}")
    return client


def refusals(agent) -> list[dict]:
    return list(
        AuditEvent.objects.filter(verb="action.refused", agent_name=agent.name)
        .order_by("seq")
        .values_list("data", flat=True)
    )


def assert_refused(response, agent, fragment: str) -> None:
    assert response.status_code == 403, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    assert fragment in response.json()["detail"]
    assert any(fragment in event["reason"] for event in refusals(agent)), refusals(agent)


def test_a_server_the_agent_holds_no_capability_for_is_refused_and_audited(git_server, coder, repo, tmp_path):
    git_upstream("vault", make_repo(tmp_path / "vault"))
    response = api_for(coder).post(
        "/api/v1/actions", call_body("git_status", "vault", repo_path=str(repo)), format="json"
    )
    assert_refused(response, coder, "not granted the capability 'mcp.vault.git_status'")
    # Not listed to it either.
    assert not [t for t in api_for(coder).get("/api/v1/mcp/tools").json()["tools"] if t["server"] == "vault"]
    assert not ActionRequest.objects.exists()


@pytest.mark.parametrize(
    ("server", "tool"),
    [
        ("Git", "git_status"),  # case
        ("GIT", "git_status"),
        ("g\u0456t", "git_status"),  # Cyrillic i
        ("\uff47\uff49\uff54", "git_status"),  # full-width letters
        ("git ", "git_status"),  # trailing space
        (" git", "git_status"),
        ("git\u200b", "git_status"),  # zero-width space
        ("git", "GIT_STATUS"),
        ("git", "git_status "),
        ("git", "git_stat\u0446s"),
        ("git", "git_status\u200b"),
        ("git", "git_status\n"),
    ],
)
def test_another_spelling_of_the_server_or_the_tool_is_refused_and_audited(git_server, owner, repo, server, tool):
    # The capability names the exact tool: no other spelling of either name reaches it.
    agent = AgentFactory(name="status-only", owner=owner, allow=[])
    grant_capability(agent=agent, action_type="mcp.git.git_status", actor=CLI)
    response = api_for(agent).post("/api/v1/actions", call_body(tool, server, repo_path=str(repo)), format="json")
    assert_refused(response, agent, "is not granted the capability")
    assert refusals(agent)[-1]["action_type"] == "mcp.tool_call"
    assert not ActionRequest.objects.exists()
    # The exact name works.
    ok = api_for(agent).post("/api/v1/actions", call_body("git_status", "git", repo_path=str(repo)), format="json")
    assert ok.status_code == 201, ok.content


def test_under_a_pattern_an_unlisted_spelling_of_a_tool_names_no_tool(git_server, coder, repo):
    # mcp.git.* admits any tool name of the git server; one the server did not list is not a tool at all.
    response = api_for(coder).post(
        "/api/v1/actions", call_body("GIT_COMMIT", repo_path=str(repo), message="x"), format="json"
    )
    assert response.status_code == 400
    assert "lists no tool named 'GIT_COMMIT'" in str(response.json()["errors"])
    assert not ActionRequest.objects.exists()


def test_arguments_outside_the_capabilitys_constraints_are_refused_and_audited(git_server, coder, repo, tmp_path):
    other = make_repo(tmp_path / "other")
    response = api_for(coder).post(
        "/api/v1/actions", call_body("git_commit", repo_path=str(other), message="elsewhere"), format="json"
    )
    assert_refused(response, coder, f"only with repo_path in [{repo}]")
    # A path that merely starts like the allowed one is another path.
    response = api_for(coder).post(
        "/api/v1/actions", call_body("git_commit", repo_path=f"{repo}/../other", message="x"), format="json"
    )
    assert response.status_code == 403
    response = api_for(coder).post("/api/v1/actions", call_body("git_commit", message="no path"), format="json")
    assert_refused(response, coder, "the proposal sets no repo_path")
    assert commits(other) == ["first"] and not ActionRequest.objects.exists()


def test_annotations_the_agent_makes_up_are_refused_and_audited(git_server, coder, repo):
    git_reads_rule()
    body = call_body("git_commit", repo_path=str(repo), message="trust me")
    body["params"]["annotations"] = {"readOnlyHint": True}
    response = api_for(coder).post("/api/v1/actions", body, format="json")
    assert_refused(response, coder, "only with server, tool and arguments, not annotations")
    assert not ActionRequest.objects.exists() and commits(repo) == ["first"]


def test_a_frozen_agent_can_neither_list_nor_call_and_its_approved_call_never_runs(git_server, coder, repo, reviewer):
    created = api_for(coder).post(
        "/api/v1/actions", call_body("git_commit", repo_path=str(repo), message="before the freeze"), format="json"
    )
    action_id = created.json()["id"]
    token_client(reviewer).post(f"/api/v1/actions/{action_id}/approve", {}, format="json")
    assert ActionRequest.objects.get(id=action_id).status == ActionStatus.APPROVED

    containment.freeze_agent(coder, "looks compromised", actor=STAFF)
    assert services.execute_action(action_id) != ActionStatus.SUCCEEDED
    assert commits(repo) == ["first"]
    assert ActionRequest.objects.get(id=action_id).status == ActionStatus.FAILED

    for method, path, body in [
        ("get", "/api/v1/mcp/tools", None),
        ("post", "/api/v1/actions", call_body("git_status", repo_path=str(repo))),
    ]:
        response = getattr(api_for(coder), method)(path, body, format="json")
        assert response.status_code == 401, response.content
    assert AuditEvent.objects.filter(verb="access.refused", agent_name=coder.name).exists()
    assert ActionRequest.objects.count() == 1


def test_a_capability_revoked_after_approval_stops_the_call(git_server, coder, repo, reviewer):
    created = api_for(coder).post(
        "/api/v1/actions", call_body("git_commit", repo_path=str(repo), message="approved, then revoked"), format="json"
    )
    action_id = created.json()["id"]
    token_client(reviewer).post(f"/api/v1/actions/{action_id}/approve", {}, format="json")
    revoke_capability(agent=coder, action_type="mcp.git.*", actor=STAFF)
    assert services.execute_action(action_id) == ActionStatus.FAILED
    assert commits(repo) == ["first"]
    refused = AuditEvent.objects.get(verb="grant.refused", action_id=action_id)
    assert "mcp.git.git_commit" in refused.data["reason"]


def test_a_disabled_upstream_offers_nothing_and_runs_nothing(git_server, coder, repo, reviewer):
    created = api_for(coder).post(
        "/api/v1/actions", call_body("git_commit", repo_path=str(repo), message="then disabled"), format="json"
    )
    action_id = created.json()["id"]
    token_client(reviewer).post(f"/api/v1/actions/{action_id}/approve", {}, format="json")
    update_upstream(upstream=git_server, actor=STAFF, enabled=False)
    assert api_for(coder).get("/api/v1/mcp/tools").json() == {"tools": []}
    assert services.execute_action(action_id) == ActionStatus.FAILED
    assert "gone or disabled" in ActionRequest.objects.get(id=action_id).result["error"]
    assert commits(repo) == ["first"]
    refused = api_for(coder).post("/api/v1/actions", call_body("git_status", repo_path=str(repo)), format="json")
    assert refused.status_code == 400


@pytest.mark.parametrize("name", ["mcp.tool_call", "mcp.Git.*", "mcp.git", "mcp. git.*", "mcp.gi t.x"])
def test_capabilities_for_mcp_tools_are_spelt_one_way(owner, name):
    agent = AgentFactory(name="cap-check", owner=owner, allow=[])
    with pytest.raises(ValidationError):
        grant_capability(agent=agent, action_type=name, actor=CLI)


def test_staff_grant_mcp_tools_from_the_command_line(git_server, owner, repo):
    agent = AgentFactory(name="cli-granted", owner=owner, allow=[])
    out = StringIO()
    call_command("grant_capability", "cli-granted", "mcp.git.git_s*", only=[f"repo_path={repo}"], stdout=out)
    assert "granted mcp.git.git_s* to cli-granted" in out.getvalue()
    listed = [t["name"] for t in api_for(agent).get("/api/v1/mcp/tools").json()["tools"]]
    assert sorted(listed) == ["git.git_show", "git.git_status"]
