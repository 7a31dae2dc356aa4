"""The whole MCP gateway as an agent's MCP host meets it: ``countersign-mcp`` (stdio, and streamable HTTP with the
client's key) in front of a live Countersign (uvicorn + a Celery worker) in front of the unmodified
``mcp-server-git``, driven by the ``mcp`` package's own client. Reads come back as the git tool's own answers;
a commit is held for a person and is in the repository only after approval, whether the reviewer decides within
the tool call's wait or after it answered "pending review"."""

from __future__ import annotations

import asyncio

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from approvals.models import ActionRequest
from tests.conftest import ARTIFACTS
from tests.gateway.mcp_support import commits, git, git_reads_rule, git_upstream, make_repo
from tests.support.live_reviewer import LiveReviewer
from tests.support.servers import VENV_BIN, free_port, process_env, start_mcp_http

pytestmark = pytest.mark.django_db(transaction=True)
STATIC_TOOLS = {"list_action_types", "propose_action", "get_action", "wait_for_action", "cancel_action"}


@pytest.fixture
def rita(web_server, reviewer):
    person = LiveReviewer(web_server.url, reviewer)
    yield person
    person.close()


@pytest.fixture
def stack(tmp_path, owner, celery_worker):
    from agents.services import grant_capability
    from tests.factories import CLI, AgentFactory

    repo = make_repo(tmp_path / "repo")
    upstream = git_upstream("git", repo)
    git_reads_rule()
    agent = AgentFactory(name="mcp-host-agent", owner=owner, allow=[])
    grant_capability(agent=agent, action_type="mcp.git.*", actor=CLI, constraints={"repo_path": [str(repo)]})
    return repo, upstream, agent.raw_key


@pytest.fixture
def mcp_http(web_server):
    """countersign-mcp over HTTP that holds a gateway call for one second only, then answers "pending review"."""
    port = free_port()
    server, url = start_mcp_http(
        "mcp-http-gateway",
        [
            str(VENV_BIN / "countersign-mcp"),
            *("--transport", "http", "--port", str(port), "--url", web_server.url, "--tool-wait", "1"),
        ],
        port,
        ARTIFACTS / "logs",
    )
    yield url
    server.stop()


def text_of(result) -> str:
    return "\n".join(block.text for block in result.content if getattr(block, "type", "") == "text")


def test_over_stdio_reads_run_at_once_and_a_commit_runs_once_a_reviewer_approves(web_server, stack, rita):
    repo, upstream, key = stack
    params = StdioServerParameters(
        command=str(VENV_BIN / "countersign-mcp"),
        env={**process_env("", ""), "COUNTERSIGN_URL": web_server.url, "COUNTERSIGN_API_KEY": key},
    )

    async def scenario():
        async with Client(params) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            status = await client.call_tool("git.git_status", {"repo_path": str(repo)})
            decision = rita.decide_next("approve", comment="ship it")
            commit = await client.call_tool("git.git_commit", {"repo_path": str(repo), "message": "Add notes"})
            decision.result(timeout=30)
            refused = await client.call_tool("Git.git_status", {"repo_path": str(repo)})
            elsewhere = await client.call_tool("git.git_status", {"repo_path": "/etc"})
            return tools, status, commit, refused, elsewhere

    tools, status, commit, refused, elsewhere = asyncio.run(scenario())
    assert set(tools) >= STATIC_TOOLS
    upstream_tools = {t["name"]: t for t in upstream.tools}
    assert {f"git.{name}" for name in upstream_tools} == set(tools) - STATIC_TOOLS
    assert tools["git.git_commit"].input_schema == upstream_tools["git_commit"]["input_schema"]
    assert tools["git.git_commit"].description.startswith("Records changes to the repository")

    assert not status.is_error and "Changes to be committed" in text_of(status)
    assert not commit.is_error and "Changes committed successfully" in text_of(commit)
    assert commits(repo) == ["Add notes", "first"]
    assert [a["params"]["tool"] for a in rita.seen] == ["git_commit"]  # the read never reached a person

    assert refused.is_error and "not granted the capability 'mcp.Git.git_status'" in text_of(refused)
    assert elsewhere.is_error and "only with repo_path in" in text_of(elsewhere)
    calls = ActionRequest.objects.filter(action_type="mcp.tool_call").order_by("created_at")
    assert [(a.params["tool"], a.status, a.policy_rule) for a in calls] == [
        ("git_status", "succeeded", "git-reads"),
        ("git_commit", "succeeded", "default"),
    ]


def test_over_http_a_call_held_past_the_wait_says_pending_and_wait_for_action_returns_the_tools_answer(
    mcp_http, stack, rita
):
    repo, _, key = stack

    def connect() -> Client:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=120))
        return Client(streamable_http_client(mcp_http, http_client=http))

    async def scenario():
        async with connect() as client:
            held = await client.call_tool("git.git_commit", {"repo_path": str(repo), "message": "Later"})
            before = commits(repo)
            decision = rita.decide_next("approve")
            action_id = held.structured_content["action"]["id"]
            waited = await client.call_tool(
                "wait_for_action", {"action_id": action_id, "timeout_seconds": 60, "until": "completion"}
            )
            decision.result(timeout=30)
            return held, before, waited

    held, before, waited = asyncio.run(scenario())
    assert not held.is_error and held.structured_content["pending"] is True
    assert "pending review" in text_of(held) and "countersign.wait_for_action" in text_of(held)
    assert before == ["first"]
    assert not waited.is_error and "Changes committed successfully" in text_of(waited)
    assert commits(repo) == ["Later", "first"]
    assert git(repo, "status", "--porcelain") == ""
