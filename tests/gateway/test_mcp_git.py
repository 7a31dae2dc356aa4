# ruff: noqa: F811 - the fixtures come from tests/gateway/mcp_support
"""The unmodified ``mcp-server-git`` (from the package index) behind Countersign, over stdio, on a repository the
test creates: its tools are offered to the agent as ``git.<tool>`` with their own input schemas; ``git_status``
is auto-approved by a policy rule and runs at once; ``git_commit`` is held for a reviewer, who sees the tool,
what it does and the arguments; the commit is in the repository only after approval, made by the execution
(``services.execute_action``, the worker's code)."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from agents.services import grant_capability
from approvals import services
from approvals.models import ActionRequest, ActionStatus, McpUpstream
from audit.models import AuditEvent
from tests.conftest import token_client
from tests.factories import CLI, AgentFactory
from tests.gateway.mcp_support import (  # noqa: F401 - fixtures among them
    call_body,
    coder,
    commits,
    git_reads_rule,
    git_server,
    make_repo,
    repo,
)

pytestmark = pytest.mark.django_db


def api_for(agent) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {agent.raw_key}")
    return client


def test_the_agent_sees_the_git_tools_with_their_upstream_schemas_and_only_those_it_is_granted(git_server, coder):
    listed = api_for(coder).get("/api/v1/mcp/tools")
    assert listed.status_code == 200
    tools = {t["name"]: t for t in listed.json()["tools"]}
    assert {"git.git_status", "git.git_commit", "git.git_add", "git.git_log"} <= set(tools)
    upstream = {t["name"]: t for t in git_server.tools}
    assert tools["git.git_commit"]["input_schema"] == upstream["git_commit"]["input_schema"]
    assert tools["git.git_commit"]["input_schema"]["required"] == ["repo_path", "message"]
    assert tools["git.git_commit"]["description"] == "Records changes to the repository"
    assert tools["git.git_status"]["server"] == "git" and tools["git.git_status"]["tool"] == "git_status"
    # The upstream's annotations are passed on as its claims; staff have not said to trust them.
    assert tools["git.git_status"]["annotations"]["readOnlyHint"] is True
    assert tools["git.git_status"]["annotations_trusted"] is False
    assert tools["git.git_commit"]["constraints"] == [{"repo_path": [str(git_server.args[1])]}]
    # mcp.tool_call is among the agent's action types, so a host that reads them knows it may call it.
    assert "mcp.tool_call" in [t["name"] for t in api_for(coder).get("/api/v1/action-types").json()]

    reader = AgentFactory(name="reader", allow=["decision.only"])
    grant_capability(agent=reader, action_type="mcp.git.git_status", actor=CLI)
    assert [t["name"] for t in api_for(reader).get("/api/v1/mcp/tools").json()["tools"]] == ["git.git_status"]
    nobody = AgentFactory(name="nobody", allow=["decision.only"])
    assert api_for(nobody).get("/api/v1/mcp/tools").json() == {"tools": []}
    assert APIClient().get("/api/v1/mcp/tools").status_code == 401


def test_git_status_is_auto_approved_by_the_rule_and_runs_against_the_real_server(git_server, coder, repo):
    git_reads_rule()
    created = api_for(coder).post("/api/v1/actions", call_body("git_status", repo_path=str(repo)), format="json")
    assert created.status_code == 201, created.content
    action = created.json()
    assert action["status"] == "approved" and action["policy"]["rule"] == "git-reads"

    assert services.execute_action(action["id"]) == ActionStatus.SUCCEEDED
    done = api_for(coder).get(f"/api/v1/actions/{action['id']}").json()
    assert done["status"] == "succeeded"
    assert done["result"]["is_error"] is False
    text = done["result"]["content"][0]["text"]
    assert "Changes to be committed" in text and "notes.txt" in text


def test_git_commit_is_held_and_the_commit_exists_only_after_a_reviewer_approves(git_server, coder, repo, reviewer):
    git_reads_rule()
    created = api_for(coder).post(
        "/api/v1/actions", call_body("git_commit", repo_path=str(repo), message="Add notes"), format="json"
    )
    assert created.status_code == 201, created.content
    action_id = created.json()["id"]
    assert created.json()["status"] == "pending" and created.json()["policy"]["rule"] == "default"
    # Held: nothing ran, even if something tried to execute it now.
    assert services.execute_action(action_id) == ActionStatus.PENDING
    assert commits(repo) == ["first"]

    # What the reviewer is shown: the tool, what the server says it does, and the arguments.
    reviewer_api = token_client(reviewer)
    preview = reviewer_api.get(f"/api/v1/actions/{action_id}/preview").json()
    assert preview["title"] == "git.git_commit will be called with these arguments"
    assert preview["after"] == {"repo_path": str(repo), "message": "Add notes"}
    assert "What the server says it does: Records changes to the repository" in preview["notes"]
    browser = Client()
    browser.force_login(reviewer)
    page = browser.get(f"/actions/{action_id}")
    assert page.status_code == 200
    html = page.content.decode()
    assert "git_commit" in html and "Add notes" in html and "Records changes to the repository" in html

    approved = reviewer_api.post(f"/api/v1/actions/{action_id}/approve", {}, format="json")
    assert approved.status_code == 200, approved.content
    assert commits(repo) == ["first"]  # approved is not done: the worker executes
    assert services.execute_action(action_id) == ActionStatus.SUCCEEDED
    assert commits(repo) == ["Add notes", "first"]
    result = ActionRequest.objects.get(id=action_id).result
    assert result["tool"] == "git_commit" and "Changes committed successfully" in result["content"][0]["text"]
    # At most once: the grant is spent.
    assert services.execute_action(action_id) == ActionStatus.SUCCEEDED
    assert commits(repo) == ["Add notes", "first"]
    verbs = list(AuditEvent.objects.filter(action_id=action_id).order_by("seq").values_list("verb", flat=True))
    assert verbs[0] == "action.proposed" and "grant.redeemed" in verbs and verbs[-1] == "execution.succeeded"


def test_a_rejected_commit_never_reaches_the_repository(git_server, coder, repo, reviewer):
    created = api_for(coder).post(
        "/api/v1/actions", call_body("git_commit", repo_path=str(repo), message="Sneaky"), format="json"
    )
    action_id = created.json()["id"]
    rejected = token_client(reviewer).post(f"/api/v1/actions/{action_id}/reject", {"reason": "no"}, format="json")
    assert rejected.status_code == 200
    assert services.execute_action(action_id) == ActionStatus.REJECTED
    assert commits(repo) == ["first"]


def test_arguments_are_checked_against_the_tools_input_schema(git_server, coder, repo):
    missing = api_for(coder).post("/api/v1/actions", call_body("git_commit", repo_path=str(repo)), format="json")
    assert missing.status_code == 400
    assert "params.arguments" in str(missing.json()["errors"]) and "message" in str(missing.json()["errors"])
    wrong_type = api_for(coder).post(
        "/api/v1/actions", call_body("git_commit", repo_path=str(repo), message=["x"]), format="json"
    )
    assert wrong_type.status_code == 400
    assert not ActionRequest.objects.exists()


def test_a_reviewer_may_narrow_the_call_but_not_widen_it_past_the_agents_capability(
    git_server, coder, repo, reviewer, tmp_path
):
    other = make_repo(tmp_path / "other")
    created = api_for(coder).post(
        "/api/v1/actions", call_body("git_commit", repo_path=str(repo), message="wip"), format="json"
    )
    action_id = created.json()["id"]
    reviewer_api = token_client(reviewer)
    for widened, why in [
        (
            {"server": "git", "tool": "git_commit", "arguments": {"repo_path": str(other), "message": "wip"}},
            "repo_path",
        ),
        ({"server": "git", "tool": "git_commit", "arguments": {"message": "wip"}}, "repo_path"),
        ({"server": "Git", "tool": "git_commit", "arguments": {"repo_path": str(repo), "message": "x"}}, "server"),
    ]:
        refused = reviewer_api.post(f"/api/v1/actions/{action_id}/approve", {"params": widened}, format="json")
        assert refused.status_code == 400, refused.content
        assert why in str(refused.json()["errors"])
    assert ActionRequest.objects.get(id=action_id).status == ActionStatus.PENDING

    narrowed = {"server": "git", "tool": "git_commit", "arguments": {"repo_path": str(repo), "message": "Add notes"}}
    approved = reviewer_api.post(f"/api/v1/actions/{action_id}/approve", {"params": narrowed}, format="json")
    assert approved.status_code == 200, approved.content
    assert services.execute_action(action_id) == ActionStatus.SUCCEEDED
    assert commits(repo) == ["Add notes", "first"] and commits(other) == ["first"]


def test_the_tool_list_is_in_the_openapi_schema_and_for_agents_only(reviewer):
    paths = Client().get("/api/schema/?format=json").json()["paths"]
    assert "/api/v1/mcp/tools" in paths
    assert token_client(reviewer).get("/api/v1/mcp/tools").status_code == 403


def test_a_call_the_upstream_refuses_is_known_not_to_have_run(git_server, coder, repo, reviewer):
    # The server no longer has the tool it listed when the call was approved: it refuses the call (a JSON-RPC
    # error), so the action failed, and did not take effect.
    McpUpstream.objects.filter(pk=git_server.pk).update(
        tools=[*git_server.tools, {**git_server.tool("git_status"), "name": "git_vanished"}]
    )
    created = api_for(coder).post("/api/v1/actions", call_body("git_vanished", repo_path=str(repo)), format="json")
    action_id = created.json()["id"]
    token_client(reviewer).post(f"/api/v1/actions/{action_id}/approve", {}, format="json")
    assert services.execute_action(action_id) == ActionStatus.FAILED
    assert "refused the call" in ActionRequest.objects.get(id=action_id).result["error"]
