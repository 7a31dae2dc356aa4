"""The SDK and the MCP server on an execution whose outcome is unknown, against a live Countersign.

``OutcomeUnknown`` is its own exception: not an ``ExecutionFailed``, so an agent that retries on a failed execution
never retries one that may have taken effect. The MCP server tells the model to check the target first.
"""

from __future__ import annotations

import asyncio

import pytest
from countersign import (
    EVENT_TYPES,
    ActionError,
    AsyncCountersign,
    Countersign,
    CountersignError,
    ExecutionFailed,
    OutcomeUnknown,
    require_approval,
)
from mcp import Client, StdioServerParameters

from approvals import services
from approvals.models import ActionRequest
from tests.execution.test_unknown_outcome import approved_and_interrupted, interrupted
from tests.support.servers import VENV_BIN, process_env

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cs(web_server, agent_key):
    with Countersign(web_server.url, agent_key, timeout=15) as client:
        yield client


@pytest.fixture
def unknown_id(cs, reviewer, credential) -> str:
    action = cs.propose(
        "http.request", {"credential": "internal-api", "method": "POST", "path": "/deploys"}, "Deploy billing"
    )
    approved_and_interrupted(action.id, reviewer)
    return action.id


def test_waiting_on_an_unknown_outcome_raises_outcome_unknown_not_execution_failed(
    cs, unknown_id, web_server, agent_key
):
    assert issubclass(OutcomeUnknown, CountersignError) and not issubclass(OutcomeUnknown, ExecutionFailed)
    retried = []
    with pytest.raises(OutcomeUnknown) as caught:
        try:
            cs.wait(unknown_id, timeout=10)
        except ExecutionFailed:  # what an agent that retries failed executions writes
            retried.append(unknown_id)
    assert retried == []
    error = caught.value
    assert error.action.status == "unknown" and error.action.outcome_unknown
    assert interrupted({"error": error.error, "advice": error.advice, "attempts": 1})
    assert error.advice == "check the target before retrying" and "check the target before retrying" in str(error)
    assert isinstance(error, ActionError)

    # until="decision" returns at once with the approval; the action itself says what happened.
    decided = cs.wait(unknown_id, until="decision", timeout=10, check=False)
    assert decided.status == "unknown" and decided.is_finished and decided.approved

    async def waited_async():
        async with AsyncCountersign(web_server.url, agent_key, timeout=15) as client:
            await client.wait(unknown_id, timeout=10)

    with pytest.raises(OutcomeUnknown):
        asyncio.run(waited_async())
    assert "action.unknown" in EVENT_TYPES


def test_after_a_resolution_the_sdk_reports_what_the_reviewer_found(cs, unknown_id, reviewer):
    services.resolve_unknown_outcome(unknown_id, user=reviewer, outcome="failed", note="Not there.", via="web")
    with pytest.raises(ExecutionFailed) as caught:
        cs.wait(unknown_id, timeout=10)
    assert caught.value.action.resolution == {
        **caught.value.action.resolution,
        "outcome": "failed",
        "by": "rita",
        "note": "Not there.",
    }
    assert caught.value.error == ActionRequest.objects.get(id=unknown_id).result["error"]


def test_the_decorator_does_not_run_the_function_and_says_check_the_target(cs, reviewer):
    ran = []

    @require_approval(cs, timeout=10)
    def deploy(service: str) -> str:
        ran.append(service)
        return "deployed"

    # The decorator's proposal is approved and then interrupted before its wait looks (as if the agent's wait
    # started late): the wait raises OutcomeUnknown, and the function must not run.
    waiting = cs.wait

    def wait_after_interruption(action_id, **kwargs):
        approved_and_interrupted(action_id, reviewer)
        return waiting(action_id, **kwargs)

    cs.wait = wait_after_interruption
    answer = deploy("billing")
    assert ran == []
    assert answer == (
        "Approved, but the execution was interrupted after it may have taken effect: check the target before retrying."
    )


def test_the_mcp_server_reports_unknown_distinctly_with_the_advice(web_server, agent_key, unknown_id, reviewer):
    params = StdioServerParameters(
        command=str(VENV_BIN / "countersign-mcp"),
        env={**process_env("", ""), "COUNTERSIGN_URL": web_server.url, "COUNTERSIGN_API_KEY": agent_key},
    )

    async def call(name: str, args: dict):
        async with Client(params) as client:
            return await client.call_tool(name, args)

    got = asyncio.run(call("wait_for_action", {"action_id": unknown_id, "timeout_seconds": 5, "until": "completion"}))
    assert not got.is_error
    text = got.content[0].text
    assert text.startswith(f"Action {unknown_id} is unknown. Approved, but Countersign's execution was interrupted")
    assert "NOBODY KNOWS WHETHER IT TOOK EFFECT" in text and "check the target before retrying" in text
    assert "execution failed" not in text
    assert got.structured_content["action"]["status"] == "unknown"

    services.resolve_unknown_outcome(unknown_id, user=reviewer, outcome="succeeded", note="It is live.", via="web")
    text = asyncio.run(call("get_action", {"action_id": unknown_id})).content[0].text
    assert "a reviewer checked the target: it took effect (note: It is live.). Do not do it again." in text
