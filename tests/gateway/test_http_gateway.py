"""The HTTP gateway with unmodified clients (httpx, requests, slack_sdk) against a live Countersign (uvicorn on the
test database, a real Celery worker) and loopback targets: each call is an ``http.request`` action, reads
auto-approved and run at once under a single-use grant, writes held for a reviewer, the target's answer returned
scrubbed, nothing executed twice."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import requests
from django.utils import timezone
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from approvals import services
from approvals.models import ActionRequest, ActionStatus, ExecutionGrant, OutboxMessage
from approvals.outbox import dispatcher
from approvals.outbox.dispatcher import keep_executions
from approvals.policies import store as policy_store
from approvals.services import containment, gateway
from approvals.services.credentials import create_credential
from approvals.services.proposals import propose_action
from audit.models import AuditEvent
from tests.conftest import TARGET_SECRET
from tests.factories import CLI
from tests.gateway.conftest import STAFF
from tests.support.fake_slack import FakeSlack
from tests.support.servers import RecordingServer, start_web, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def verbs(action_id) -> list[str]:
    return list(AuditEvent.objects.filter(action_id=action_id).order_by("seq").values_list("verb", flat=True))


def approve_soon(action_filter, reviewer, *, delay=0.5, edited_params=None):
    """A reviewer approving from another thread once the held call's action exists."""

    def run():
        action = wait_until(lambda: ActionRequest.objects.filter(**action_filter).first(), timeout=20)
        time.sleep(delay)
        services.approve_action(action_id=action.id, reviewer=reviewer, via="api", edited_params=edited_params)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# --- auto-approved reads ----------------------------------------------------------------------------------------


def test_an_auto_approved_get_returns_the_targets_answer_and_runs_exactly_once(
    gateway_url, gw_key, credential, target, reads_auto_approved, celery_worker
):
    target.resources["/tickets/42"] = {"id": 42, "title": "Disk full"}
    target.response_headers = lambda req: {"ETag": '"v7"', "Set-Cookie": "session=target", "X-Internal": "1"}
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {gw_key}"}) as client:
        response = client.get("/tickets/42", params={"expand": "comments"})

    assert response.status_code == 200, response.text
    assert response.json() == {"id": 42, "title": "Disk full"}
    assert response.headers["content-type"] == "application/json"
    action = ActionRequest.objects.get(id=response.headers["Countersign-Action"])
    assert action.status == ActionStatus.SUCCEEDED and action.policy_effect == "auto_approve"
    assert action.params == {
        "credential": "internal-api",
        "method": "GET",
        "path": "/tickets/42",
        "query": {"expand": "comments"},
        "headers": {"accept": "*/*"},
    }
    # The target saw the stored secret, never the agent's key, and none of the client's own headers.
    [seen] = target.requests
    assert seen.path == "/tickets/42?expand=comments"
    assert seen.headers["Authorization"] == f"Bearer {TARGET_SECRET}"
    assert gw_key not in str(seen.headers)
    # The credential shows status and body only (its default): no target header reaches the agent.
    assert "etag" not in response.headers and "set-cookie" not in response.headers
    assert verbs(action.id) == [
        "action.proposed",
        "action.approved",
        "grant.minted",
        "grant.redeemed",
        "execution.started",
        "execution.succeeded",
    ]
    # The approval's execute message was kept from the broker and settled once the call ran here: no worker task.
    grant = ExecutionGrant.objects.get(action=action)
    message = OutboxMessage.objects.get(action_id=action.id, kind=OutboxMessage.Kind.EXECUTE)
    assert message.delivered_at is not None and grant.dispatches == 0
    time.sleep(0.5)
    assert f"execute-{grant.id}" not in celery_worker.log()
    assert len(target.requests) == 1
    assert ExecutionGrant.objects.filter(action=action).count() == 1
    assert ActionRequest.objects.get(id=action.id).status == ActionStatus.SUCCEEDED


def test_a_call_whose_process_died_before_running_it_is_run_once_by_a_worker(
    gw_agent, gw_key, credential, target, reads_auto_approved, celery_worker
):
    """The execute message kept from the broker is written with the approval: if the process that was to run the
    call dies first, the sweep hands it to a worker once the writer's lease has passed, and the call runs once."""
    call = gateway.GatewayCall(
        credential="internal-api",
        method="GET",
        path="/tickets/7",
        query_string="",
        headers=(("host", "127.0.0.1"), ("authorization", f"Bearer {gw_key}"), ("accept", "*/*")),
    )
    with keep_executions():  # the process dies here: it neither runs the call nor settles the message
        action, _ = propose_action(agent=gw_agent, proposal=gateway.proposal_for(gw_agent, call))
    assert action.status == ActionStatus.APPROVED and target.requests == []
    message = OutboxMessage.objects.get(action_id=action.id, kind=OutboxMessage.Kind.EXECUTE)
    assert message.delivered_at is None
    assert dispatcher.sweep() == 0  # still the writer's, within its lease

    past = timezone.now() - dispatcher.WRITER_LEASE
    OutboxMessage.objects.filter(id=message.id).update(created_at=past, claimed_until=past)  # the lease has passed
    assert dispatcher.sweep() == 1
    wait_until(lambda: ActionRequest.objects.get(id=action.id).status == ActionStatus.SUCCEEDED, timeout=30)
    assert len(target.requests) == 1 and target.requests[0].path == "/tickets/7"
    assert ExecutionGrant.objects.get(action=action).dispatches == 1


def test_allowed_target_headers_pass_when_the_credential_shows_headers(
    gateway_url, gw_key, credential, target, reads_auto_approved
):
    credential.result_visibility = ["status", "headers", "body"]
    credential.save(update_fields=["result_visibility"])
    target.response_headers = lambda req: {
        "ETag": '"v7"',
        "Set-Cookie": "session=target",
        "Location": f"{target.url}/elsewhere",
        "X-RateLimit-Remaining": "41",
    }
    response = requests.get(f"{gateway_url}/tickets", headers={"Authorization": f"Bearer {gw_key}"}, timeout=20)
    assert response.status_code == 200
    assert response.headers["ETag"] == '"v7"' and response.headers["X-RateLimit-Remaining"] == "41"
    assert "Set-Cookie" not in response.headers and "Location" not in response.headers


def test_secrets_the_target_echoes_are_scrubbed(gateway_url, gw_key, credential, target, reads_auto_approved):
    target.resources["/whoami"] = lambda req: {"you_sent": req.headers.get("Authorization"), "token": TARGET_SECRET}
    response = requests.get(f"{gateway_url}/whoami", auth=("anyone", gw_key), timeout=20)  # Basic, key as password
    assert response.status_code == 200
    assert TARGET_SECRET not in response.text
    assert response.json() == {"you_sent": "[redacted]", "token": "[redacted]"}


def test_the_targets_error_status_and_body_come_back(gateway_url, gw_key, credential, target, reads_auto_approved):
    target.status = 404
    target.resources["/tickets/9"] = {"error": "no such ticket"}
    response = httpx.get(f"{gateway_url}/tickets/9", headers={"Authorization": f"Bearer {gw_key}"}, timeout=20)
    assert response.status_code == 404
    assert response.json() == {"error": "no such ticket"}
    assert ActionRequest.objects.get(id=response.headers["Countersign-Action"]).status == ActionStatus.FAILED


def test_redirects_are_returned_not_followed(gateway_url, gw_key, credential, reads_auto_approved):
    elsewhere = RecordingServer().start()
    redirecting = RecordingServer(status=302, response_headers=lambda req: {"Location": f"{elsewhere.url}/x"}).start()
    try:
        credential.scope = {"base_url": redirecting.url}
        credential.save(update_fields=["scope"])
        response = requests.get(f"{gateway_url}/moved", headers={"Authorization": f"Bearer {gw_key}"}, timeout=20)
        assert response.status_code == 302 and "Location" not in response.headers
        assert len(redirecting.requests) == 1 and elsewhere.requests == []
    finally:
        redirecting.stop()
        elsewhere.stop()


def test_an_unreachable_target_is_a_bad_gateway(gateway_url, gw_key, credential, reads_auto_approved):
    credential.scope = {"base_url": "http://127.0.0.1:9"}
    credential.save(update_fields=["scope"])
    response = httpx.get(f"{gateway_url}/x", headers={"Authorization": f"Bearer {gw_key}"}, timeout=20)
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    assert "could not reach" in response.json()["detail"]


# --- denied and held --------------------------------------------------------------------------------------------


def test_a_denied_call_is_a_403_with_the_rules_reason(gateway_url, gw_key, credential, target):
    policy_store.save_rule(
        {
            "name": "no-deletes",
            "action_type": "http.request",
            "effect": "deny",
            "reason": "Nothing is deleted through the gateway.",
            "conditions": [{"path": "params.method", "op": "equals", "value": "DELETE"}],
        },
        actor=STAFF,
    )
    response = httpx.delete(f"{gateway_url}/tickets/1", headers={"Authorization": f"Bearer {gw_key}"}, timeout=20)
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "Nothing is deleted through the gateway."
    assert ActionRequest.objects.get(id=response.headers["Countersign-Action"]).status == ActionStatus.REJECTED
    assert target.requests == []


def test_a_held_write_runs_once_decided_within_the_wait(
    gateway_url, gw_key, credential, target, reviewer, celery_worker
):
    approve_soon({"params__method": "POST"}, reviewer)
    response = requests.post(
        f"{gateway_url}/tickets",
        json={"title": "Disk full"},
        headers={"Authorization": f"Bearer {gw_key}", "Countersign-Wait": "30"},
        timeout=40,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "method": "POST"}
    [seen] = target.requests
    assert (seen.method, seen.path, seen.json()) == ("POST", "/tickets", {"title": "Disk full"})
    action = ActionRequest.objects.get(id=response.headers["Countersign-Action"])
    assert action.status == ActionStatus.SUCCEEDED and action.policy_effect == "require"


def test_a_reviewers_edit_is_what_runs(gateway_url, gw_key, credential, target, reviewer, celery_worker):
    edited = {"credential": "internal-api", "method": "POST", "path": "/tickets", "json": {"title": "Disk full (db-2)"}}
    approve_soon({"params__method": "POST"}, reviewer, edited_params=edited)
    response = httpx.post(
        f"{gateway_url}/tickets",
        json={"title": "Disk full"},
        headers={"Authorization": f"Bearer {gw_key}", "Countersign-Wait": "30"},
        timeout=40,
    )
    assert response.status_code == 200, response.text
    [seen] = target.requests
    assert seen.json() == {"title": "Disk full (db-2)"}


def test_a_call_not_decided_in_time_is_202_and_its_replay_returns_the_result_once(
    gateway_url, gw_key, credential, target, reviewer, celery_worker
):
    headers = {"Authorization": f"Bearer {gw_key}", "Countersign-Wait": "0"}
    held = requests.post(f"{gateway_url}/tickets", json={"title": "Disk full"}, headers=headers, timeout=20)
    assert held.status_code == 202
    action_id = held.headers["Countersign-Action"]
    assert held.headers["Location"] == f"/api/v1/actions/{action_id}"
    assert int(held.headers["Retry-After"]) > 0
    assert held.json()["status"] == "pending"
    assert target.requests == []

    replay = {**headers, "Countersign-Action": action_id}
    still = requests.post(f"{gateway_url}/tickets", json={"title": "Disk full"}, headers=replay, timeout=20)
    assert still.status_code == 202 and still.headers["Countersign-Action"] == action_id
    assert ActionRequest.objects.filter(agent__name="gateway-bot").count() == 1  # a replay proposes nothing

    services.approve_action(action_id=action_id, reviewer=reviewer, via="api")
    wait_until(lambda: ActionRequest.objects.get(id=action_id).status == ActionStatus.SUCCEEDED, timeout=20)
    for _ in range(2):
        done = requests.post(f"{gateway_url}/tickets", json={"title": "Disk full"}, headers=replay, timeout=20)
        assert done.status_code == 200 and done.json() == {"ok": True, "method": "POST"}
    assert len(target.requests) == 1


def test_a_different_request_naming_a_held_action_is_refused_and_audited(gateway_url, gw_key, credential, target):
    headers = {"Authorization": f"Bearer {gw_key}", "Countersign-Wait": "0"}
    held = httpx.post(f"{gateway_url}/tickets", json={"title": "Disk full"}, headers=headers, timeout=20)
    action_id = held.headers["Countersign-Action"]
    other = httpx.post(
        f"{gateway_url}/tickets",
        json={"title": "Drop the database"},
        headers={**headers, "Countersign-Action": action_id},
        timeout=20,
    )
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"
    event = AuditEvent.objects.get(verb="gateway.refused")
    assert event.agent_name == "gateway-bot" and event.data["named_action"] == action_id
    assert ActionRequest.objects.count() == 1 and target.requests == []


# --- the agent's standing ---------------------------------------------------------------------------------------


def test_no_key_or_a_wrong_one_is_a_401(gateway_url, credential, target, reads_auto_approved):
    assert httpx.get(f"{gateway_url}/x", timeout=20).status_code == 401
    wrong = httpx.get(f"{gateway_url}/x", headers={"Authorization": "Bearer cs_0000000000000000_nope"}, timeout=20)
    assert wrong.status_code == 401 and "Bearer" in wrong.headers["WWW-Authenticate"]
    assert target.requests == [] and ActionRequest.objects.count() == 0


def test_a_frozen_agent_is_refused_and_audited(gateway_url, gw_agent, gw_key, credential, target, reads_auto_approved):
    containment.freeze_agent(gw_agent, "investigating", actor=STAFF)
    response = httpx.get(f"{gateway_url}/x", headers={"Authorization": f"Bearer {gw_key}"}, timeout=20)
    assert response.status_code == 401
    assert AuditEvent.objects.filter(verb="access.refused", agent_name="gateway-bot").exists()
    assert target.requests == []


def test_paused_executions_hold_even_an_auto_approved_call(
    gateway_url, gw_key, credential, target, reads_auto_approved
):
    containment.pause_executions("maintenance", actor=STAFF)
    headers = {"Authorization": f"Bearer {gw_key}", "Countersign-Wait": "1"}
    response = httpx.get(f"{gateway_url}/x", headers=headers, timeout=20)
    assert response.status_code == 202 and response.json()["status"] == "approved"
    assert target.requests == []
    assert "execution.held" in verbs(response.headers["Countersign-Action"])


def test_another_credential_is_refused_by_the_capability_and_audited(
    web_server, gw_key, credential, other_credential, target, reads_auto_approved
):
    response = httpx.get(
        f"{web_server.url}/gateway/payroll-api/salaries", headers={"Authorization": f"Bearer {gw_key}"}, timeout=20
    )
    assert response.status_code == 403
    assert AuditEvent.objects.filter(verb="action.refused", agent_name="gateway-bot").exists()
    assert target.requests == []


def test_the_gateway_rate_is_per_agent_key(stack_env, gw_key, credential, target, reads_auto_approved, tmp_path):
    web, url = start_web({**stack_env, "COUNTERSIGN_AGENT_GATEWAY_RATE": "2/min"}, tmp_path, name="web-rate")
    # The budget is a fixed minute (agents.ratelimit): three calls straddling one's end would all fit. Start in the
    # first 40 s of a minute (it failed once, its third call in the next minute).
    into_minute = time.time() % 60
    if into_minute > 40:
        time.sleep(60 - into_minute)
    try:
        codes = [
            httpx.get(f"{url}/gateway/internal-api/x", headers={"Authorization": f"Bearer {gw_key}"}, timeout=20)
            for _ in range(3)
        ]
    finally:
        web.stop()
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert int(codes[-1].headers["Retry-After"]) >= 1
    assert len(target.requests) == 2


# --- slack_sdk, unmodified --------------------------------------------------------------------------------------


@pytest.fixture
def fake_slack():
    with FakeSlack(token="xoxb-real-slack-token") as slack:
        slack.add_channel("C0INFRA01", "infra-help")
        yield slack


SLACK_READS = ["/api/auth.test", "/api/conversations.*", "/api/users.info", "/api/users.list"]


@pytest.fixture
def slack_credential(db, fake_slack, gw_agent):
    from agents.services import grant_capability

    # slack_sdk POSTs every method, reads included: Slack's reads are told apart by their method name (the path).
    policy_store.save_rule(
        {
            "name": "slack-reads",
            "action_type": "http.request",
            "effect": "auto_approve",
            "conditions": [
                {"path": "params.credential", "op": "equals", "value": "slack"},
                {"path": "params.path", "op": "matches", "value": SLACK_READS},
            ],
        },
        actor=STAFF,
    )
    grant_capability(
        agent=gw_agent, action_type="http.request", actor=CLI, constraints={"credential": ["internal-api", "slack"]}
    )
    return create_credential(
        name="slack",
        kind="http_bearer",
        secret="xoxb-real-slack-token",
        scope={"base_url": fake_slack.url.rstrip("/").removesuffix("/api")},
        actor=CLI,
    )


def test_slack_sdk_reads_freely_and_its_writes_wait_for_a_reviewer(
    web_server, gw_key, fake_slack, slack_credential, reviewer, celery_worker
):
    slack = WebClient(
        token=gw_key, base_url=f"{web_server.url}/gateway/slack/api/", headers={"Countersign-Wait": "30"}, timeout=40
    )
    history = slack.conversations_history(channel="C0INFRA01")
    assert history["ok"] is True and history["messages"] == []
    [read] = fake_slack.calls_to("conversations.history")
    assert read.authorization == "Bearer xoxb-real-slack-token" and read.params == {"channel": "C0INFRA01"}

    approve_soon({"params__method": "POST", "params__path": "/api/chat.postMessage"}, reviewer)
    posted = slack.chat_postMessage(channel="C0INFRA01", text="Disk full on db-2: cleaning up")
    assert posted["ok"] is True
    assert [m["text"] for m in fake_slack.channel_messages("C0INFRA01")] == ["Disk full on db-2: cleaning up"]
    action = ActionRequest.objects.get(params__path="/api/chat.postMessage")
    assert action.params["json"] == {"channel": "C0INFRA01", "text": "Disk full on db-2: cleaning up"}
    assert action.reviews.get().reviewer == reviewer
    assert all(call.authorization == "Bearer xoxb-real-slack-token" for call in fake_slack.calls)


def test_slack_sdk_sees_a_rejection_as_an_error(web_server, gw_key, fake_slack, slack_credential, reviewer):
    def reject():
        action = wait_until(
            lambda: ActionRequest.objects.filter(params__path="/api/chat.postMessage").first(), timeout=20
        )
        services.reject_action(action_id=action.id, reviewer=reviewer, via="api", reason="Not in this channel.")

    threading.Thread(target=reject, daemon=True).start()
    slack = WebClient(
        token=gw_key, base_url=f"{web_server.url}/gateway/slack/api/", headers={"Countersign-Wait": "30"}, timeout=40
    )
    with pytest.raises(SlackApiError) as raised:
        slack.chat_postMessage(channel="C0INFRA01", text="hello")
    assert raised.value.response.status_code == 403
    assert "Not in this channel." in raised.value.response.data["detail"]
    assert fake_slack.calls_to("chat.postMessage") == []
