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
from tests.support.live_reviewer import LiveReviewer
from tests.support.servers import free_port

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


def test_one_async_client_serves_successive_event_loops(web_server, agent_key, rita):
    # docs/agents.md makes the client at module level; every asyncio.run is a new event loop.
    client = AsyncCountersign(web_server.url, agent_key)
    first = asyncio.run(client.propose("decision.only", {"n": 1}, "First"))
    rita.decide_next("approve", comment="fine")
    assert asyncio.run(client.wait(first.id, timeout=30, until="decision")).status == "approved"

    @require_approval(client)
    async def send(to: str) -> str:
        return f"sent to {to}"

    rita.decide_next("approve")
    assert asyncio.run(send("ops")) == "sent to ops"

    async def in_context() -> str:
        async with client:  # closes this loop's connections only; the client stays usable
            return (await client.get(first.id)).status

    assert asyncio.run(in_context()) == "approved"
    assert asyncio.run(client.get(first.id)).status == "approved"
    assert asyncio.run(client.aclose()) is None


def test_a_closed_loops_connections_are_forgotten_not_reused(web_server, agent_key):
    client = AsyncCountersign(web_server.url, agent_key)
    loop = asyncio.new_event_loop()
    assert "decision.only" in [t.name for t in loop.run_until_complete(client.action_types())]
    loop.close()  # without aclose(): its keep-alive connection is dead with it

    action = asyncio.run(client.propose("decision.only", {"n": 1}, "After a closed loop"))
    assert asyncio.run(client.get(action.id)).is_pending
    assert loop not in client._pools


def test_errors_without_an_answer_are_wrapped_and_the_decorator_withdraws(web_server, agent_key):
    # A client closed by its owner: httpx raises RuntimeError; the SDK's callers see a CountersignError.
    with Countersign(web_server.url, agent_key) as closed:
        pass
    with pytest.raises(Unavailable) as caught:
        closed.action_types()
    assert "closed" in str(caught.value) and isinstance(caught.value, CountersignError)

    async def on_a_closed_client():
        given = httpx.AsyncClient()
        await given.aclose()
        with pytest.raises(Unavailable):
            await AsyncCountersign(web_server.url, agent_key, http_client=given).get(str(uuid.uuid4()))

    asyncio.run(on_a_closed_client())

    # Too many redirects (or anything else httpx raises) is wrapped too, and a success that is not JSON is an
    # APIError. When the wait breaks after proposing, the decorator withdraws the proposal instead of leaving it
    # pending for a reviewer to approve a call that will never run.
    real = httpx.Client(timeout=30)

    def broken_wait(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/wait"):
            return httpx.Response(200, html="<html>Sign in to the proxy</html>")
        forwarded = real.send(
            real.build_request(request.method, request.url, headers=request.headers, content=request.content)
        )
        return httpx.Response(forwarded.status_code, headers=forwarded.headers, content=forwarded.content)

    def redirect_loop(request: httpx.Request) -> httpx.Response:
        return httpx.Response(307, headers={"Location": str(request.url)})

    with (
        Countersign(
            web_server.url,
            agent_key,
            http_client=httpx.Client(transport=httpx.MockTransport(redirect_loop), follow_redirects=True),
        ) as looping,
        pytest.raises(Unavailable) as caught,
    ):
        looping.action_types()
    assert "TooManyRedirects" in str(caught.value)

    with Countersign(
        web_server.url, agent_key, http_client=httpx.Client(transport=httpx.MockTransport(broken_wait))
    ) as c:

        @require_approval(c)
        def deploy(version: str) -> str:
            raise AssertionError("must not run")

        with pytest.raises(countersign.APIError) as caught:
            deploy("v2")
    assert "not JSON" in str(caught.value)
    assert ActionRequest.objects.get().status == ActionStatus.CANCELLED
    real.close()


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


# --- verify_webhook: the agent's side of a signed webhook ---------------------------------------------------


def _signature(secret: str, body: bytes, t: int) -> str:
    import hashlib
    import hmac

    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


WEBHOOK_SECRET = "0f" * 32
WEBHOOK_BODY = b'{"event":{"at":"2026-12-04T20:00:00Z","sequence":2,"type":"action.approved"},"status":"approved"}'


def test_verify_webhook_returns_the_event_for_a_signature_made_with_the_secret():
    t = int(time.time())
    good = _signature(WEBHOOK_SECRET, WEBHOOK_BODY, t)
    event = countersign.verify_webhook(WEBHOOK_BODY, f"t={t},v1={good}", WEBHOOK_SECRET)
    assert event["status"] == "approved" and event["event"]["sequence"] == 2
    # During a secret rotation the header carries one v1 per secret: any one matching is enough.
    other = _signature("another-secret", WEBHOOK_BODY, t)
    assert countersign.verify_webhook(WEBHOOK_BODY.decode(), f"t={t}, v1={other}, v1={good}", WEBHOOK_SECRET)


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        (WEBHOOK_BODY.replace(b"approved", b"rejected"), None, "signature"),  # body changed on the way
        (WEBHOOK_BODY, "wrong-secret", "signature"),  # signed by someone without the secret
        (WEBHOOK_BODY, "", "missing"),
        (WEBHOOK_BODY, "t=soon,v1=00", "timestamp"),
        (WEBHOOK_BODY, "v1=00", "missing"),
        (WEBHOOK_BODY, "stale", "timestamp"),  # a captured delivery replayed an hour later
        (b"[1, 2]", None, "object"),
    ],
)
def test_verify_webhook_refuses_what_the_secret_did_not_sign_now(body, header, message):
    t = int(time.time())
    if header is None:
        header = f"t={t},v1={_signature(WEBHOOK_SECRET, body if body == b'[1, 2]' else WEBHOOK_BODY, t)}"
    elif header == "wrong-secret":
        header = f"t={t},v1={_signature('guessed', body, t)}"
    elif header == "stale":
        header = f"t={t - 3600},v1={_signature(WEBHOOK_SECRET, body, t - 3600)}"
    with pytest.raises(countersign.InvalidWebhook, match=message) as caught:
        countersign.verify_webhook(body, header, WEBHOOK_SECRET)
    assert isinstance(caught.value, CountersignError)


def test_verify_webhook_tolerance_is_the_callers_choice():
    t = int(time.time()) - 3600
    header = f"t={t},v1={_signature(WEBHOOK_SECRET, WEBHOOK_BODY, t)}"
    assert countersign.verify_webhook(WEBHOOK_BODY, header, WEBHOOK_SECRET, tolerance=None)["status"] == "approved"
    assert countersign.verify_webhook(WEBHOOK_BODY, header, WEBHOOK_SECRET, tolerance=7200)
    with pytest.raises(countersign.InvalidWebhook):
        countersign.verify_webhook(WEBHOOK_BODY, header, WEBHOOK_SECRET, tolerance=60)
