"""``countersign-mcp`` (countersign.mcp) driven by the ``mcp`` package's own client, over stdio (a subprocess
with the agent key in its environment) and streamable HTTP (the client's bearer key passed through), against
a live Countersign; a reviewer approves through the API meanwhile."""

from __future__ import annotations

import asyncio
import json

import httpx
import httpx2
import pytest
from jsonschema import Draft202012Validator
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from approvals.models import ActionRequest
from tests.conftest import ARTIFACTS
from tests.support.live_reviewer import LiveReviewer
from tests.support.servers import VENV_BIN, free_port, process_env, start_mcp_http

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def rita(web_server, reviewer):
    person = LiveReviewer(web_server.url, reviewer)
    yield person
    person.close()


@pytest.fixture
def mcp_http(web_server):
    port = free_port()
    server, url = start_mcp_http(
        "mcp-http",
        [str(VENV_BIN / "countersign-mcp"), "--transport", "http", "--port", str(port), "--url", web_server.url],
        port,
        ARTIFACTS / "logs",
    )
    yield url
    server.stop()


async def propose_and_wait(client: Client, rita: LiveReviewer) -> tuple[dict, dict, str]:
    """The whole loop as a model would run it: list, propose, wait while a person decides."""
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {"list_action_types", "propose_action", "get_action", "wait_for_action", "cancel_action"}
    schema = tools["propose_action"].input_schema
    Draft202012Validator.check_schema(schema)
    # The params schema follows the agent's own action types (decision.only and http.request here).
    assert schema["properties"]["action_type"]["enum"] == ["decision.only", "http.request"]
    assert [s["title"] for s in schema["properties"]["params"]["anyOf"]] == ["decision.only", "http.request"]
    validator = Draft202012Validator(schema)
    ok = {"action_type": "http.request", "params": {"method": "GET", "path": "/x", "credential": "c"}, "summary": "s"}
    assert validator.is_valid(ok)
    assert not validator.is_valid({**ok, "params": {"method": "TELEPORT", "path": "/x", "credential": "c"}})

    listed = await client.call_tool("list_action_types", {})
    assert [t["name"] for t in listed.structured_content["action_types"]] == ["decision.only", "http.request"]

    proposed = await client.call_tool(
        "propose_action",
        {
            "action_type": "decision.only",
            "params": {"command": "restart", "service": "billing"},
            "summary": "Restart billing",
            "reasoning": "It is stuck.",
        },
    )
    assert not proposed.is_error, proposed.content
    action = proposed.structured_content["action"]
    assert action["status"] == "pending"
    assert "wait_for_action" in proposed.content[0].text

    decision = rita.decide_next("approve", comment="fine by me")
    waited = await client.call_tool("wait_for_action", {"action_id": action["id"], "timeout_seconds": 30})
    decision.result(timeout=10)
    got = await client.call_tool("get_action", {"action_id": action["id"]})
    return waited.structured_content["action"], got.structured_content["action"], waited.content[0].text


def test_stdio_proposal_completes_when_a_reviewer_approves(web_server, agent_key, rita):
    params = StdioServerParameters(
        command=str(VENV_BIN / "countersign-mcp"),
        env={**process_env("", ""), "COUNTERSIGN_URL": web_server.url, "COUNTERSIGN_API_KEY": agent_key},
    )

    async def scenario():
        async with Client(params) as client:
            return await propose_and_wait(client, rita)

    waited, got, text = asyncio.run(scenario())
    assert waited["status"] == "approved" and waited["decision"]["reviews"][0]["comment"] == "fine by me"
    assert got == waited
    assert text.startswith(f"Action {waited['id']} is approved. Approved. You may now do it yourself")
    assert ActionRequest.objects.get(id=waited["id"]).context == {"reasoning": "It is stuck."}


def test_streamable_http_passes_the_clients_key_through(mcp_http, agent_key, rita, owner):
    def connect(key: str) -> Client:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=120))
        return Client(streamable_http_client(mcp_http, http_client=http))

    async def scenario():
        async with connect(agent_key) as client:
            result = await propose_and_wait(client, rita)
        # A key Countersign does not know: tool calls come back as errors the model can read.
        async with connect("cs_unknown_key") as stranger:
            refused = await stranger.call_tool("list_action_types", {})
        return result, refused

    (waited, got, _), refused = asyncio.run(scenario())
    assert waited["status"] == "approved" and got["agent"] == "helper-bot"
    assert refused.is_error and refused.structured_content["error"]["kind"] == "NotAuthenticated"

    # Without a bearer key the MCP endpoint is not reached at all.
    anonymous = httpx.post(mcp_http, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert anonymous.status_code == 401 and "Bearer" in json.loads(anonymous.text)["error"]


def test_rejections_and_invalid_input_come_back_as_readable_tool_results(web_server, agent_key, rita):
    params = StdioServerParameters(
        command=str(VENV_BIN / "countersign-mcp"),
        env={**process_env("", ""), "COUNTERSIGN_URL": web_server.url, "COUNTERSIGN_API_KEY": agent_key},
    )

    async def scenario():
        async with Client(params) as client:
            bad = await client.call_tool(
                "propose_action", {"action_type": "http.request", "params": {"method": "X"}, "summary": "s"}
            )
            proposed = await client.call_tool(
                "propose_action", {"action_type": "decision.only", "params": {"n": 1}, "summary": "Drop the table"}
            )
            rita.decide_next("reject", reason="Use a migration instead.")
            waited = await client.call_tool(
                "wait_for_action", {"action_id": proposed.structured_content["action"]["id"], "timeout_seconds": 30}
            )
            return bad, waited

    bad, waited = asyncio.run(scenario())
    assert bad.is_error and "params.method" in bad.structured_content["error"]["problem"]["errors"]
    assert not waited.is_error
    assert "Rejected. Do not do it. Reason: Use a migration instead." in waited.content[0].text
    assert waited.structured_content["action"]["decision"]["reason"] == "Use a migration instead."


def test_bad_arguments_are_tool_errors_the_model_can_correct_and_answers_read_as_answers(
    web_server, agent, agent_key, rita
):
    from agents.services import grant_capability
    from tests.conftest import CLI

    grant_capability(agent=agent, action_type="human.question", actor=CLI)
    params = StdioServerParameters(
        command=str(VENV_BIN / "countersign-mcp"),
        env={**process_env("", ""), "COUNTERSIGN_URL": web_server.url, "COUNTERSIGN_API_KEY": agent_key},
    )

    async def scenario():
        async with Client(params) as client:
            # Each mistake a model makes comes back as a result it reads (not a JSON-RPC error its client hides).
            mistakes = {
                "action_id": await client.call_tool("get_action", {}),
                "params": await client.call_tool("propose_action", {"action_type": "decision.only", "summary": "s"}),
                "summary": await client.call_tool("propose_action", {"action_type": "decision.only", "params": {}}),
                "timeout_seconds": await client.call_tool(
                    "wait_for_action", {"action_id": "x", "timeout_seconds": 10_000}
                ),
                "until": await client.call_tool("wait_for_action", {"action_id": "x", "until": "forever"}),
                "wait": await client.call_tool("get_action", {"action_id": "x", "wait": True}),
            }
            asked = await client.call_tool(
                "propose_action",
                {"action_type": "human.question", "params": {"question": "Which region?"}, "summary": "Region"},
            )
            rita.decide_next("approve", comment="eu-west-1, as always.")
            answered = await client.call_tool(
                "wait_for_action", {"action_id": asked.structured_content["action"]["id"], "timeout_seconds": 30}
            )
            return mistakes, answered

    mistakes, answered = asyncio.run(scenario())
    for argument, result in mistakes.items():
        assert result.is_error, (argument, result)
        assert result.structured_content["error"] == {"kind": "InvalidArgument", "argument": argument, "problem": None}
        assert f"Invalid argument '{argument}'" in result.content[0].text
    assert "missing" in mistakes["action_id"].content[0].text
    assert "0 to 600" in mistakes["timeout_seconds"].content[0].text
    assert not ActionRequest.objects.filter(action_type="decision.only").exists()  # nothing half-proposed

    assert not answered.is_error
    text = answered.content[0].text
    assert "The reviewer answered: eu-west-1, as always." in text
    assert "You may now do it yourself" not in text
