"""The HumanLayer drop-in (/humanlayer/v1): the real, unmodified ``humanlayer`` SDK from PyPI against a live
Countersign. Code written for HumanLayer changes two environment variables and nothing else."""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from django.db import connections
from django.test import Client
from django.utils import timezone
from humanlayer import AsyncHumanLayer, FunctionCallSpec, HumanLayer, ResponseOption
from humanlayer.core.models import FunctionCallStatus, HumanContactSpec, HumanContactStatus
from humanlayer.core.protocol import HumanLayerException

from agents.services import create_agent, grant_capability
from approvals import services
from approvals.models import ActionRequest, ActionStatus, ReviewerToken
from tests.conftest import CLI
from tests.support.servers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

POLL = 0.1  # the SDK's poll interval is a constructor field (default 3 s); shortened so the suite stays quick


@pytest.fixture
def hl_env(monkeypatch, web_server, agent, agent_key):
    """What a HumanLayer user changes: the base URL, and the key (now a Countersign agent key)."""
    grant_capability(agent=agent, action_type="human.question", actor=CLI)
    monkeypatch.setenv("HUMANLAYER_API_BASE", f"{web_server.url}/humanlayer/v1")
    monkeypatch.setenv("HUMANLAYER_API_KEY", agent_key)
    monkeypatch.delenv("HUMANLAYER_RUN_ID", raising=False)


@pytest.fixture
def hl(hl_env):
    return HumanLayer(run_id="billing-agent-run-1", sleep=lambda _: time.sleep(POLL))


@pytest.fixture
def pool():
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


@pytest.fixture
def web(reviewer):
    client = Client()
    client.force_login(reviewer)
    return client


def pending_action(kind: str = "fc") -> ActionRequest:
    return wait_until(
        lambda: ActionRequest.objects.filter(
            status="pending", idempotency_key__startswith=f"humanlayer:{kind}:"
        ).first(),
        message="the HumanLayer request to reach Countersign",
    )


def csrf(page) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)


def test_require_approval_blocks_until_a_reviewer_approves_then_runs(hl, pool, web):
    calls = []

    @hl.require_approval()
    def transfer(account: str, amount: int) -> str:
        calls.append((account, amount))
        return f"moved {amount} from {account}"

    running = pool.submit(transfer, account="ops-reserve", amount=250)
    action = pending_action()
    assert calls == [] and not running.done()  # blocked on a person
    assert action.action_type == "decision.only"
    assert action.params == {"function": "transfer", "kwargs": {"account": "ops-reserve", "amount": 250}}
    assert action.summary == 'transfer(account="ops-reserve", amount=250)'
    assert action.context["humanlayer"]["run_id"] == "billing-agent-run-1"

    # The reviewer sees the call on the detail page and approves it there.
    page = web.get(f"/actions/{action.id}")
    assert "ops-reserve" in page.content.decode()
    web.post(f"/actions/{action.id}/approve", {"comment": "ok", "csrfmiddlewaretoken": csrf(page)})

    assert running.result(timeout=30) == "moved 250 from ops-reserve"
    assert calls == [("ops-reserve", 250)]
    polled = hl.get_function_call(action.idempotency_key.removeprefix("humanlayer:fc:"))
    assert polled.status.approved is True and polled.status.comment == "ok"
    assert polled.status.responded_at is not None


def test_a_rejections_comment_reaches_the_caller_and_reject_options_are_quick_picks(hl, pool, web):
    calls = []
    options = [
        ResponseOption(name="too_much", title="Amount too high", prompt_fill="The amount is too high; ask for less."),
        ResponseOption(name="wrong_account", title="Wrong account", description="Use the operating account."),
    ]

    @hl.require_approval(reject_options=options)
    def transfer(account: str, amount: int) -> str:
        calls.append(account)
        return "moved"

    running = pool.submit(transfer, account="ops-reserve", amount=1_000_000)
    action = pending_action()
    assert [o["name"] for o in action.context["reject_options"]] == ["too_much", "wrong_account"]

    page = web.get(f"/actions/{action.id}")
    html = page.content.decode()
    assert 'value="The amount is too high; ask for less."' in html and ">Amount too high</button>" in html
    assert 'value="Wrong account"' in html  # no prompt_fill: the title is the reason
    # The quick pick is a submit button of the reject form: its value is the reason that is sent.
    web.post(
        f"/actions/{action.id}/reject",
        {"reason": ["", "The amount is too high; ask for less."], "csrfmiddlewaretoken": csrf(page)},
    )

    assert running.result(timeout=30) == "User denied transfer with message: The amount is too high; ask for less."
    assert calls == []
    status = hl.get_function_call(action.idempotency_key.removeprefix("humanlayer:fc:")).status
    assert (status.approved, status.reject_option_name) == (False, "too_much")


def test_a_contact_request_is_answered_by_a_reviewer(hl, pool, web):
    ask = hl.human_as_tool(
        response_options=[ResponseOption(name="eu", title="EU", prompt_fill="Use eu-west-1.")],
    )
    answer = pool.submit(ask, "Which region should the new bucket live in?")
    action = pending_action("hc")
    assert action.action_type == "human.question"
    assert action.params == {"question": "Which region should the new bucket live in?"}

    page = web.get(f"/actions/{action.id}")
    html = page.content.decode()
    assert '<label for="approve-comment">Answer (sent to the agent)</label>' in html
    assert 'value="Use eu-west-1."' in html  # a quick answer from response_options
    web.post(
        f"/actions/{action.id}/approve",
        {"comment": "eu-west-1, next to the data.", "csrfmiddlewaretoken": csrf(page)},
    )
    assert answer.result(timeout=30) == "eu-west-1, next to the data."
    assert ActionRequest.objects.get(id=action.id).status == ActionStatus.APPROVED


def test_the_async_sdk_waits_for_a_reviewer_too(hl_env, rita_token, web_server, pool):
    reviewer = httpx.Client(base_url=web_server.url, headers={"Authorization": f"Token {rita_token}"})

    def decide_when_asked():
        try:
            action = pending_action()
            assert (
                reviewer.post(f"/api/v1/actions/{action.id}/reject", json={"reason": "Use staging."}).status_code == 200
            )
            action = pending_action()
            assert reviewer.post(f"/api/v1/actions/{action.id}/approve", json={}).status_code == 200
        finally:
            connections.close_all()  # this thread's own database connection

    async def scenario():
        hl = AsyncHumanLayer(run_id="async-run", sleep=lambda _: asyncio.sleep(POLL))
        calls = []

        @hl.require_approval()
        async def migrate(database: str) -> str:
            calls.append(database)
            return f"migrated {database}"

        refused = await migrate(database="prod")
        done = await migrate(database="staging")
        return refused, done, calls

    person = pool.submit(decide_when_asked)
    refused, done, calls = asyncio.run(scenario())
    person.result(timeout=10)
    assert refused == "User denied migrate with message: Use staging."
    assert (done, calls) == ("migrated staging", ["staging"])


def test_fetch_human_response_with_a_subject_and_a_declined_question(hl, pool, rita_token, web_server):
    waiting = pool.submit(hl.fetch_human_response, HumanContactSpec(msg="May I page the on-call?", subject="Paging"))
    action = pending_action("hc")
    assert action.summary == "Paging" and action.params["subject"] == "Paging"
    reviewer = httpx.Client(base_url=web_server.url, headers={"Authorization": f"Token {rita_token}"})
    assert reviewer.post(f"/api/v1/actions/{action.id}/reject", json={"reason": "Not for this."}).status_code == 200
    assert waiting.result(timeout=30).as_completed() == "A person declined to answer: Not for this."


def test_an_approval_with_edited_arguments_does_not_run_the_original_call(hl, pool, rita_token, web_server):
    calls = []

    @hl.require_approval()
    def transfer(account: str, amount: int) -> str:
        calls.append(amount)
        return "moved"

    running = pool.submit(transfer, account="ops", amount=900)
    action = pending_action()
    reviewer = httpx.Client(base_url=web_server.url, headers={"Authorization": f"Token {rita_token}"})
    edited = {"function": "transfer", "kwargs": {"account": "ops", "amount": 90}}
    assert reviewer.post(f"/api/v1/actions/{action.id}/approve", json={"params": edited}).status_code == 200

    said = running.result(timeout=30)
    assert calls == []  # the SDK would run its own arguments, so it is told no, with the approved ones
    assert said.startswith("User denied transfer with message: A reviewer approved this call only with changed")
    assert '{"account": "ops", "amount": 90}' in said


def test_server_side_expiry_answers_as_a_rejection_with_a_comment(hl):
    call = hl.create_function_call(FunctionCallSpec(fn="rotate_keys", kwargs={"env": "prod"}))
    contact = hl.create_human_contact(HumanContactSpec(msg="Anyone there?"))
    assert call.status.approved is None and contact.status.response is None
    ActionRequest.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.expire_due_actions() == 2

    expired = hl.get_function_call(call.call_id).status.as_completed()
    assert expired.approved is False and expired.comment.startswith("Expired: nobody decided before ")
    assert hl.get_human_contact(contact.call_id).status.response.startswith("No answer: the question expired")


def test_creates_are_idempotent_per_call_id_and_lookups_are_per_agent(hl, web_server, owner):
    spec = FunctionCallSpec(fn="restart", kwargs={"service": "billing"})
    first = hl.create_function_call(spec, call_id="call-fixed-1")
    again = hl.create_function_call(spec, call_id="call-fixed-1")
    assert (first.call_id, again.call_id) == ("call-fixed-1", "call-fixed-1")
    assert ActionRequest.objects.count() == 1
    assert hl.get_function_call("call-fixed-1").spec.kwargs == {"service": "billing"}

    with pytest.raises(HumanLayerException, match="409"):
        hl.create_function_call(FunctionCallSpec(fn="restart", kwargs={"service": "auth"}), call_id="call-fixed-1")
    with pytest.raises(HumanLayerException, match="404"):
        hl.get_function_call("call-nobody-made")
    # Another agent's lookup of the same call id finds nothing.
    _, _, other_key = create_agent(name="other-bot", owner=owner, actor=CLI, allow=["decision.only"])
    other = HumanLayer(api_key=other_key, run_id="other")
    with pytest.raises(HumanLayerException, match="404"):
        other.get_function_call("call-fixed-1")
    assert ActionRequest.objects.count() == 1


def test_none_arguments_and_hostile_call_ids_through_the_sdk(hl, rita_token, web_server):
    """``send_email(cc=None)`` is an ordinary call; a NUL in a call id, or an offset past bigint, is a JSON 400."""
    call = hl.create_function_call(FunctionCallSpec(fn="send_email", kwargs={"to": "ops@example.com", "cc": None}))
    assert hl.get_function_call(call.call_id).spec.kwargs == {"to": "ops@example.com", "cc": None}
    with pytest.raises(HumanLayerException, match="400"):
        hl.get_function_call("a\x00b")
    approver = {"Authorization": f"Bearer {rita_token}"}
    base = f"{web_server.url}/humanlayer/v1"
    for path in ("function_calls/a%00b", "contact_requests/a%00b", "agent/function_calls/a%00b/respond"):
        response = httpx.request("POST" if path.endswith("respond") else "GET", f"{base}/{path}", headers=approver)
        assert response.status_code == 400 and response.headers["Content-Type"] == "application/json", path
    pending = httpx.get(f"{base}/agent/function_calls/pending", params={"offset": 2**63}, headers=approver)
    assert pending.status_code == 400 and "offset" in pending.json()["errors"]


def test_approver_side_clients_list_pending_and_respond_with_a_reviewer_token(hl, rita_token, web_server):
    call = hl.create_function_call(
        FunctionCallSpec(fn="restart", kwargs={"service": "billing"}, reject_options=[ResponseOption(name="later")])
    )
    contact = hl.create_human_contact(HumanContactSpec(msg="Deploy window?"))
    base = f"{web_server.url}/humanlayer/v1"
    approver = HumanLayer(api_key=rita_token, api_base_url=base, run_id="approver")

    listing = httpx.get(f"{base}/agent/function_calls/pending", headers={"Authorization": f"Bearer {rita_token}"})
    assert listing.status_code == 200
    body = listing.json()
    assert (body["total"], body["has_more"], body["offset"]) == (1, False, 0)
    assert [item["call_id"] for item in body["items"]] == [call.call_id]
    contacts = httpx.get(f"{base}/agent/human_contacts/pending", headers={"Authorization": f"Bearer {rita_token}"})
    assert [item["spec"]["msg"] for item in contacts.json()["items"]] == ["Deploy window?"]

    decided = approver.respond_to_function_call(
        call.call_id, FunctionCallStatus(approved=False, reject_option_name="later")
    )
    assert (decided.status.approved, decided.status.comment, decided.status.reject_option_name) == (
        False,
        "later",
        "later",
    )
    answered = approver.respond_to_human_contact(contact.call_id, HumanContactStatus(response="Thursday 10:00"))
    assert answered.status.response == "Thursday 10:00"
    assert hl.get_human_contact(contact.call_id).status.response == "Thursday 10:00"

    with pytest.raises(HumanLayerException, match="409"):  # already decided
        approver.respond_to_function_call(call.call_id, FunctionCallStatus(approved=True))
    # The agent's own key never decides.
    fresh = hl.create_function_call(FunctionCallSpec(fn="restart", kwargs={}))
    with pytest.raises(HumanLayerException, match="403"):
        hl.respond_to_function_call(fresh.call_id, FunctionCallStatus(approved=True))
    assert ActionRequest.objects.get(idempotency_key=f"humanlayer:fc:{fresh.call_id}").status == "pending"


def test_every_answer_is_json_even_errors(web_server, agent_key, owner):
    base = f"{web_server.url}/humanlayer/v1"
    no_key = httpx.post(f"{base}/function_calls", json={})
    assert no_key.status_code == 401 and no_key.json()["status"] == 401
    # Plain application/json even for errors: the async SDK (aiohttp) parses no other content type.
    assert no_key.headers["Content-Type"] == "application/json"
    bad_key = httpx.get(f"{base}/function_calls/x", headers={"Authorization": "Bearer cs_no_such"})
    assert bad_key.status_code == 401 and bad_key.json()["title"] == "Not authenticated"
    auth = {"Authorization": f"Bearer {agent_key}"}
    invalid = httpx.post(f"{base}/function_calls", json={"run_id": "r", "call_id": "c", "spec": {}}, headers=auth)
    assert invalid.status_code == 400 and "spec.fn" in invalid.json()["errors"]
    elsewhere = httpx.get(f"{base}/no/such/endpoint", headers=auth)
    assert elsewhere.status_code == 404 and elsewhere.json()["detail"] == "No such HumanLayer endpoint."
    assert elsewhere.headers["Content-Type"] == "application/json"
    # human.question is a capability like any other: without it, contact requests are refused.
    _, _, key = create_agent(name="no-questions", owner=owner, actor=CLI, allow=["decision.only"])
    refused = httpx.post(
        f"{base}/contact_requests",
        json={"run_id": "r", "call_id": "call-1", "spec": {"msg": "hi"}},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert refused.status_code == 403 and refused.json()["title"] == "Not allowed"
    escalate = httpx.post(f"{base}/agent/function_calls/call-1/escalate_email", json={}, headers=auth)
    assert escalate.status_code == 404 and escalate.json()["status"] == 404
    assert ActionRequest.objects.count() == 0


@pytest.fixture
def rita_token(reviewer):
    return ReviewerToken.issue(reviewer)[1]


# --- escalate_email -------------------------------------------------------------------------------


def test_escalation_reminds_the_policy_channels_and_reviewers_the_agent_names(hl, reviewer, outsider):
    from humanlayer.core.models import EmailRecipient, Escalation

    from approvals.models import OutboxMessage
    from audit.models import AuditEvent

    call = hl.create_function_call(FunctionCallSpec(fn="restart", kwargs={"service": "billing"}), call_id="call-esc")
    action = ActionRequest.objects.get(idempotency_key__endswith="call-esc")

    # Countersign does not mail people an agent picks who have no part in the decision.
    with pytest.raises(HumanLayerException, match="400"):
        hl.escalate_email_function_call(
            call.call_id,
            Escalation(escalation_msg="look", additional_recipients=[EmailRecipient(address=outsider.email)]),
        )
    assert not OutboxMessage.objects.filter(action_id=action.id, kind=OutboxMessage.Kind.NOTIFY).exists()

    escalated = hl.escalate_email_function_call(
        call.call_id,
        Escalation(
            escalation_msg="The deploy is blocked", additional_recipients=[EmailRecipient(address="RITA@example.com")]
        ),
    )
    assert escalated.call_id == call.call_id and escalated.status.approved is None
    sent = OutboxMessage.objects.filter(action_id=action.id, kind=OutboxMessage.Kind.NOTIFY)
    assert [m.payload for m in sent] == [{"event": "reminder", "channel": f"email:{reviewer.email}"}]
    event = AuditEvent.objects.get(action_id=action.id, verb="action.escalated")
    assert (event.actor, event.data["message"]) == ("helper-bot", "The deploy is blocked")

    # Once a minute per call; and never once decided.
    with pytest.raises(HumanLayerException, match="429"):
        hl.escalate_email_function_call(call.call_id, Escalation(escalation_msg="again"))
    services.reject_action(action_id=action.id, reviewer=reviewer, via="web", reason="not now")
    from django.core.cache import cache

    cache.delete(f"humanlayer:escalated:{action.id}")
    with pytest.raises(HumanLayerException, match="409"):
        hl.escalate_email_function_call(call.call_id, Escalation(escalation_msg="still?"))


def test_escalation_by_another_channel_or_by_a_reviewer_is_refused(hl, web_server, reviewer):
    call = hl.create_function_call(FunctionCallSpec(fn="restart", kwargs={"service": "auth"}), call_id="call-esc-2")
    url = f"{web_server.url}/humanlayer/v1/agent/function_calls/{call.call_id}/escalate_email"
    agent_auth = {"Authorization": f"Bearer {hl.backend.connection.api_key}"}
    slack = httpx.post(
        url, json={"escalation_msg": "x", "channel": {"slack": {"channel_or_user_id": "C1"}}}, headers=agent_auth
    )
    assert slack.status_code == 400 and slack.headers["content-type"] == "application/json"
    assert "email only" in str(slack.json())
    missing = httpx.post(url, json={}, headers=agent_auth)
    assert missing.status_code == 400 and "escalation_msg" in missing.json()["errors"]
    _, token = ReviewerToken.issue(reviewer)
    by_reviewer = httpx.post(url, json={"escalation_msg": "x"}, headers={"Authorization": f"Bearer {token}"})
    assert by_reviewer.status_code in (401, 403) and by_reviewer.headers["content-type"] == "application/json"
