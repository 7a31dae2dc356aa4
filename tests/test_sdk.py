"""The Python SDK (sdk/python, package ``countersign``) against a live Countersign (uvicorn on the test database).

A reviewer decides through the API from a background thread while the SDK call blocks.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta

import countersign
import httpx
import pytest
from countersign import (
    Action,
    ActionType,
    AsyncCountersign,
    Cancelled,
    Conflict,
    Countersign,
    CountersignError,
    ExecutionFailed,
    Expired,
    InvalidInput,
    NotAllowed,
    NotAuthenticated,
    NotFound,
    RateLimited,
    Rejected,
    Unavailable,
    WaitTimeout,
    require_approval,
)
from django.utils import timezone

from approvals import services
from approvals.models import ActionRequest, ActionStatus, Review
from tests.live_reviewer import LiveReviewer
from tests.servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cs(web_server, agent_key):
    with Countersign(web_server.url, agent_key, timeout=15) as client:
        yield client


@pytest.fixture
def rita(web_server, reviewer):
    person = LiveReviewer(web_server.url, reviewer)
    yield person
    person.close()


def restart(cs, **options) -> Action:
    return cs.propose("decision.only", {"command": "restart", "service": "billing"}, "Restart billing", **options)


# --- the client ---------------------------------------------------------------------


def test_propose_get_and_wait_for_an_approval(cs, rita):
    action = restart(cs, reasoning="It is stuck.", on_behalf_of="alice@example.com")
    assert isinstance(action, Action)
    assert (action.status, action.action_type) == ("pending", "decision.only")
    assert action.params == {"command": "restart", "service": "billing"}
    assert isinstance(action.created_at, datetime) and action.decision is None and action.is_pending
    assert ActionRequest.objects.get(id=action.id).context == {"reasoning": "It is stuck."}

    decided = rita.decide_next("approve", comment="go ahead")
    done = cs.wait(action.id, timeout=30, until="decision")
    assert decided.result(timeout=10)["status"] == "approved"

    assert done.status == "approved" and done.approved and done.is_finished
    assert done.decision.outcome == "approved"
    assert [(r.reviewer, r.verdict, r.via, r.comment) for r in done.decision.reviews] == [
        ("rita", "approve", "api", "go ahead")
    ]
    assert done.decision.reviews[0].at is not None and done.decided_at is not None
    assert cs.get(action.id) == done
    assert cs.get(action.id).approved_by == ["rita"]
    assert [a.id for a in cs.actions(status="approved")] == [action.id]


def test_the_same_idempotency_key_returns_the_first_proposal(cs):
    key = str(uuid.uuid4())
    first = restart(cs, idempotency_key=key)
    again = restart(cs, idempotency_key=key)
    assert again.id == first.id
    assert ActionRequest.objects.count() == 1
    with pytest.raises(Conflict) as caught:
        cs.propose("decision.only", {"command": "stop"}, "Stop billing", idempotency_key=key)
    assert caught.value.status == 409 and caught.value.problem["type"].endswith("idempotency-conflict")


def test_action_types_are_typed_and_limited_to_the_agents_capabilities(cs):
    found = cs.action_types()
    assert all(isinstance(t, ActionType) for t in found)
    assert sorted(t.name for t in found) == ["decision.only", "http.request"]
    decision = next(t for t in found if t.name == "decision.only")
    assert decision.params_schema["type"] == "object" and decision.risk == "medium"


def test_a_rejection_raises_rejected_with_the_reviewers_reason(cs, rita):
    action = restart(cs)
    rita.decide_next("reject", reason="Not during the quarter close.")
    with pytest.raises(Rejected) as caught:
        cs.wait(action.id, timeout=30, until="decision")
    assert caught.value.reason == "Not during the quarter close."
    assert caught.value.action.status == "rejected" and caught.value.action.decision.outcome == "rejected"
    assert isinstance(caught.value, CountersignError)
    # check=False hands the outcome back instead.
    assert cs.wait(action.id, timeout=5, check=False).decision.reason == "Not during the quarter close."


def test_expiry_raises_expired(cs):
    action = restart(cs)
    ActionRequest.objects.filter(id=action.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.expire_due_actions() == 1
    with pytest.raises(Expired) as caught:
        cs.wait(action.id, timeout=10)
    assert caught.value.action.status == "expired"


def test_cancel_withdraws_and_wait_raises_cancelled(cs):
    action = restart(cs)
    cancelled = cs.cancel(action.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(Cancelled):
        cs.wait(action.id, timeout=10)
    with pytest.raises(Conflict) as caught:
        cs.cancel(action.id)
    assert caught.value.problem["status"] == 409 and "no longer be decided" in caught.value.detail


def test_a_failed_execution_raises_execution_failed(cs, reviewer, target, credential):
    target.status = 500
    action = cs.propose(
        "http.request", {"credential": "internal-api", "method": "POST", "path": "/deploy"}, "Deploy billing"
    )
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
    services.execute_action(action.id)  # a worker in this session may win the race; either way it fails
    with pytest.raises(ExecutionFailed) as caught:
        cs.wait(action.id, timeout=30)
    assert caught.value.action.status == "failed"
    assert "500" in caught.value.error


def test_errors_carry_the_problem(cs, web_server):
    with pytest.raises(NotAllowed) as not_allowed:
        cs.propose("slack.post_message", {"channel": "#x", "text": "hi"}, "Post")
    assert not_allowed.value.status == 403 and not_allowed.value.problem["title"] == "Not allowed"

    with pytest.raises(InvalidInput) as invalid:
        cs.propose("decision.only", {}, "x" * 281)
    assert list(invalid.value.errors) == ["summary"]
    assert invalid.value.problem["type"].endswith("invalid-input")
    with pytest.raises(InvalidInput) as invalid:
        cs.propose("http.request", {"method": "TELEPORT", "path": "/"}, "Teleport")
    assert "params.method" in invalid.value.errors and "params.method" in str(invalid.value)

    with pytest.raises(NotFound):
        cs.get(str(uuid.uuid4()))

    with Countersign(web_server.url, "cs_nope_nope") as stranger, pytest.raises(NotAuthenticated) as caught:
        stranger.action_types()
    assert caught.value.status == 401
    assert ActionRequest.objects.count() == 0  # bad input left nothing behind


def test_over_the_proposal_rate_raises_rate_limited_with_retry_after(cs):
    # Invalid proposals still count against the budget (60/min) and leave nothing behind.
    limited = None
    for _ in range(130):  # two fixed windows at most
        try:
            cs.propose("decision.only", {}, "")
        except InvalidInput:
            continue
        except RateLimited as exc:
            limited = exc
            break
    assert limited is not None, "never rate limited"
    assert limited.status == 429 and limited.retry_after and 0 < limited.retry_after <= 60
    assert limited.problem["type"].endswith("rate-limited")


def test_wait_gives_up_at_the_overall_timeout_with_the_last_state(cs):
    action = restart(cs)
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        cs.wait(action.id, timeout=1.5, poll=1)
    assert 1.4 <= time.monotonic() - started < 10
    assert caught.value.action.id == action.id and caught.value.action.status == "pending"


def test_wait_retries_network_errors_and_5xx_then_succeeds(cs, agent_key, web_server, reviewer, monkeypatch):
    monkeypatch.setattr(countersign.client, "backoff", lambda attempt: 0.05)
    action = restart(cs)
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
    real = httpx.Client(timeout=30)
    answers = []

    def flaky(request: httpx.Request) -> httpx.Response:
        answers.append(request.url.path)
        if len(answers) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        if len(answers) == 2:
            return httpx.Response(503, json={"title": "Unavailable", "status": 503})
        forwarded = real.send(real.build_request(request.method, request.url, headers=request.headers))
        return httpx.Response(forwarded.status_code, headers=forwarded.headers, content=forwarded.content)

    with Countersign(web_server.url, agent_key, http_client=httpx.Client(transport=httpx.MockTransport(flaky))) as c:
        assert c.wait(action.id, timeout=20).status == "approved"
    assert answers == [f"/api/v1/actions/{action.id}/wait"] * 3
    real.close()


def test_an_unreachable_service_is_unavailable_after_the_timeout(agent_key, monkeypatch):
    monkeypatch.setattr(countersign.client, "backoff", lambda attempt: 0.05)
    with Countersign(f"http://127.0.0.1:{free_port()}", agent_key) as c:
        with pytest.raises(Unavailable):
            c.wait(str(uuid.uuid4()), timeout=0.5)
        with pytest.raises(Unavailable):
            c.get(str(uuid.uuid4()))


def test_the_async_client(web_server, agent_key, rita):
    async def scenario():
        async with AsyncCountersign(web_server.url, agent_key) as client:
            assert "decision.only" in [t.name for t in await client.action_types()]
            action = await client.propose("decision.only", {"n": 1}, "First")
            rita.decide_next("reject", reason="No.")
            with pytest.raises(Rejected) as caught:
                await client.wait(action.id, timeout=30, until="decision")
            second = await client.propose("decision.only", {"n": 2}, "Second")
            assert (await client.get(second.id)).is_pending
            assert (await client.cancel(second.id)).status == "cancelled"
            listed = [a.id async for a in client.actions()]
            return caught.value.reason, listed, action.id, second.id

    reason, listed, first, second = asyncio.run(scenario())
    assert reason == "No."
    assert listed == [second, first]  # newest first


def test_ask_returns_the_reviewers_answer(cs, agent, rita):
    from agents.services import grant_capability
    from tests.conftest import CLI

    grant_capability(agent=agent, action_type="human.question", actor=CLI)
    rita.decide_next("approve", comment="Yes, use the EU region.")
    assert cs.ask("Which region should the new bucket live in?", subject="Bucket region", timeout=30) == (
        "Yes, use the EU region."
    )
    assert rita.seen[0]["action_type"] == "human.question"
    assert rita.seen[0]["params"] == {
        "question": "Which region should the new bucket live in?",
        "subject": "Bucket region",
    }


# --- the decorator ------------------------------------------------------------------


def test_decorator_runs_the_function_only_after_approval(cs, rita):
    calls = []

    @require_approval(cs, summary="Refund {amount} EUR to {customer}", reasoning="The order never arrived.")
    def refund(customer: str, amount: int, note: str = "") -> str:
        calls.append((customer, amount, note))
        return f"refunded {amount} to {customer}"

    decision = rita.decide_next("approve")
    assert refund("c-42", 30) == "refunded 30 to c-42"
    decision.result(timeout=10)
    assert calls == [("c-42", 30, "")]
    proposed = rita.seen[0]
    assert proposed["summary"] == "Refund 30 EUR to c-42"
    assert proposed["params"] == {"function": "refund", "kwargs": {"customer": "c-42", "amount": 30, "note": ""}}
    assert ActionRequest.objects.get(id=proposed["id"]).context == {"reasoning": "The order never arrived."}


def test_decorator_runs_with_the_reviewers_edited_arguments(cs, rita):
    calls = []

    @require_approval(cs, summary=lambda customer, amount: f"Refund {customer}")
    def refund(customer: str, amount: int) -> int:
        calls.append((customer, amount))
        return amount

    rita.decide_next("approve", params={"function": "refund", "kwargs": {"customer": "c-42", "amount": 10}})
    assert refund(customer="c-42", amount=300) == 10
    assert calls == [("c-42", 10)]
    assert rita.seen[0]["summary"] == "Refund c-42"


def test_decorator_returns_the_rejection_for_the_model_and_does_not_run(cs, rita):
    calls = []

    @require_approval(cs)
    def delete_branch(name: str) -> str:
        calls.append(name)
        return "deleted"

    rita.decide_next("reject", reason="main is protected; delete the feature branch instead.")
    assert delete_branch("main") == "Not approved by a human: main is protected; delete the feature branch instead."
    assert calls == []
    assert rita.seen[0]["summary"] == "Call delete_branch(name='main')"


def test_decorator_with_a_callback_and_a_timeout_withdraws_the_request(cs):
    refusals = []

    @require_approval(cs, timeout=1, on_reject=lambda error: refusals.append(error) or {"denied": str(error)})
    def deploy(version: str) -> str:
        raise AssertionError("must not run")

    assert deploy("v2")["denied"].startswith("Still pending")
    assert isinstance(refusals[0], WaitTimeout)
    action = ActionRequest.objects.get()
    assert action.status == ActionStatus.CANCELLED  # nobody can approve a call that will never run


def test_decorator_on_async_functions(web_server, agent_key, cs, rita):
    calls = []

    async def scenario():
        async with AsyncCountersign(web_server.url, agent_key) as client:

            @require_approval(client)
            async def send(to: str, text: str) -> str:
                calls.append((to, text))
                return "sent"

            # A blocking client also serves async functions (it waits in a worker thread).
            @require_approval(cs)
            async def archive(ticket: int) -> str:
                calls.append(ticket)
                return "archived"

            rita.decide_next("approve", params={"function": "send", "kwargs": {"to": "ops", "text": "Hello ops"}})
            sent = await send("ops", "hello")
            rita.decide_next("reject", reason="Keep it open.")
            archived = await archive(7)
            return sent, archived

    assert asyncio.run(scenario()) == ("sent", "Not approved by a human: Keep it open.")
    assert calls == [("ops", "Hello ops")]


def test_decorating_a_blocking_function_with_the_async_client_is_refused(web_server, agent_key):
    client = AsyncCountersign(web_server.url, agent_key)
    with pytest.raises(TypeError):

        @require_approval(client)
        def blocking() -> None:
            pass

    asyncio.run(client.aclose())
