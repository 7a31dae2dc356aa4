"""Revocation bites and the kill switches hold, tried as the agent (or a hurried operator) would.

After its key or capability is taken away, an agent's pending http.request cannot be approved into a run:
it is cancelled (and everyone is told), or, approved before the revocation, its grant is refused at
redemption and it fails as revoked. A frozen agent's key stops working and its attempts are audited; freeze
stops executions that have not started. Pausing executions holds them (approvals still recorded) and
resuming runs each once.
"""

from __future__ import annotations

import io
import json

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.test import APIClient

from agents.models import Agent, AgentKey
from agents.services import issue_key
from approvals import services
from approvals.models import ActionRequest, ActionStatus, ExecutionGrant, OutboxMessage, Review
from approvals.services import containment
from audit.models import AuditEvent
from tests.conftest import CLI, token_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(reviewers_group):
    user = User.objects.create_user("stella", email="stella@example.com", password="pw-stella", is_staff=True)
    user.groups.add(reviewers_group)
    return user


@pytest.fixture
def staff_api(staff):
    return token_client(staff)


@pytest.fixture
def staff_browser(staff):
    client = Client()
    client.force_login(staff)
    return client


def cli(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip()


def propose_http(agent_api, credential, *, method="POST", path="/tickets") -> str:
    response = agent_api.post(
        "/api/v1/actions",
        {
            "action_type": "http.request",
            "params": {"credential": credential.name, "method": method, "path": path, "json": {"n": 1}},
            "summary": "Open a ticket",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


def approve(reviewer, action_id) -> ActionRequest:
    services.approve_action(action_id=action_id, reviewer=reviewer, via=Review.Via.API)
    return ActionRequest.objects.get(id=action_id)


def status_of(action_id) -> str:
    return ActionRequest.objects.values_list("status", flat=True).get(id=action_id)


def verbs(action_id) -> list[str]:
    return list(AuditEvent.objects.filter(action_id=action_id).order_by("seq").values_list("verb", flat=True))


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    return response.json()


def watched_by_everyone(action_id) -> None:
    """As if the agent gave a callback URL and the policy a Slack channel: transitions tell both."""
    ActionRequest.objects.filter(id=action_id).update(
        callback_url="https://agent.example.com/hooks/countersign", notify_channels=["slack:#ops"]
    )


# --- revocation cancels what is pending ------------------------------------------------------------------


def test_revoking_the_capability_cancels_the_pending_request_and_tells_the_agent_and_slack(
    agent, agent_api, reviewer, reviewer_api, credential, target
):
    action_id = propose_http(agent_api, credential)
    watched_by_everyone(action_id)
    before = OutboxMessage.objects.filter(action_id=action_id).count()

    assert cli("grant_capability", "helper-bot", "http.request", "--revoke") == "revoked http.request from helper-bot"

    assert status_of(action_id) == ActionStatus.CANCELLED
    [cancelled] = AuditEvent.objects.filter(verb="action.cancelled", action_id=action_id)
    assert (cancelled.actor, cancelled.data["reason"]) == ("cli", "capability revoked")
    # The outbox carries the news: live pages, the agent's webhook, the Slack message.
    news = OutboxMessage.objects.filter(action_id=action_id).order_by("id")[before:]
    kinds = {m.kind: m.payload for m in news}
    assert kinds[OutboxMessage.Kind.PUSH]["status"] == "cancelled"
    assert kinds[OutboxMessage.Kind.WEBHOOK]["action"]["status"] == "cancelled"
    assert kinds[OutboxMessage.Kind.NOTIFY] == {"event": "status", "channel": "slack:#ops"}
    # The agent reading its action (wait answers the same presentation) learns why.
    seen = agent_api.get(f"/api/v1/actions/{action_id}").json()
    assert seen["status"] == "cancelled" and "capability revoked" in seen["result"]["error"]

    # The side road: approve it anyway.
    assert_problem(reviewer_api.post(f"/api/v1/actions/{action_id}/approve", {}, format="json"), 409)
    assert services.execute_action(action_id) == ActionStatus.CANCELLED
    assert target.requests == []


def test_revoking_the_last_key_cancels_pending_actions_but_rotating_does_not(agent, agent_api, credential):
    kept = propose_http(agent_api, credential)
    new_key = AgentKey.objects.get(agent=agent)
    cli("rotate_agent_key", "helper-bot")
    assert status_of(kept) == ActionStatus.PENDING  # a rotation keeps the agent's standing

    live = AgentKey.objects.filter(agent=agent, revoked_at__isnull=True).exclude(pk=new_key.pk).get()
    cli("revoke_agent_key", live.public_id)
    assert status_of(kept) == ActionStatus.CANCELLED
    [event] = AuditEvent.objects.filter(verb="action.cancelled", action_id=kept)
    assert event.data["reason"] == containment.NO_KEY_LEFT


def test_revoking_one_of_two_keys_leaves_pending_actions_alone(agent, agent_api, credential):
    action_id = propose_http(agent_api, credential)
    issue_key(agent=agent, actor=CLI)
    containment.revoke_key(key=AgentKey.objects.filter(agent=agent).order_by("created_at").first(), actor=CLI)
    assert status_of(action_id) == ActionStatus.PENDING


def test_disabling_the_agent_in_the_admin_cancels_its_pending_actions(agent, agent_api, credential, staff):
    action_id = propose_http(agent_api, credential)
    admin = Client()
    admin.force_login(User.objects.create_superuser("ada", "ada@example.com", "pw-ada"))
    response = admin.post(
        f"/admin/agents/agent/{agent.pk}/change/",
        {
            "owner": agent.owner.pk,
            "description": "",
            "capabilities-TOTAL_FORMS": "2",
            "capabilities-INITIAL_FORMS": "2",
            **{
                f"capabilities-{i}-{k}": v
                for i, c in enumerate(agent.capabilities.order_by("action_type"))
                for k, v in {"id": c.pk, "agent": agent.pk, "action_type": c.action_type, "constraints": "{}"}.items()
            },
            "keys-TOTAL_FORMS": "1",
            "keys-INITIAL_FORMS": "1",
            "keys-0-id": agent.keys.get().pk,
            "keys-0-agent": agent.pk,
        },
    )
    assert response.status_code == 302, response.content[:3000]
    assert status_of(action_id) == ActionStatus.CANCELLED
    [event] = AuditEvent.objects.filter(verb="action.cancelled", action_id=action_id)
    assert (event.actor, event.via, event.data["reason"]) == ("ada", "admin", containment.AGENT_DISABLED)


def test_revoking_all_keys_in_the_admin_cancels_pending_actions(agent, agent_api, credential):
    action_id = propose_http(agent_api, credential)
    admin = Client()
    admin.force_login(User.objects.create_superuser("ada", "ada@example.com", "pw-ada"))
    response = admin.post("/admin/agents/agent/", {"action": "revoke_all_keys", "_selected_action": [agent.pk]})
    assert response.status_code == 302
    assert status_of(action_id) == ActionStatus.CANCELLED


# --- approved before the revocation: refused at redemption -----------------------------------------------


def test_approved_before_the_capability_was_revoked_fails_as_revoked_at_redemption(
    agent, agent_api, reviewer, credential, target
):
    action_id = propose_http(agent_api, credential)
    assert approve(reviewer, action_id).status == ActionStatus.APPROVED
    containment.revoke_capability(agent=agent, action_type="http.request", actor=CLI)

    assert services.execute_action(action_id) == ActionStatus.FAILED
    assert target.requests == []
    action = ActionRequest.objects.get(id=action_id)
    assert "revoked" in action.result["error"]
    [refused] = AuditEvent.objects.filter(verb="grant.refused", action_id=action_id)
    assert refused.data["reason"].startswith("revoked:") and "http.request" in refused.data["reason"]


def test_a_narrowed_capability_refuses_approved_params_it_no_longer_admits(
    agent, agent_api, reviewer, credential, target
):
    allowed = propose_http(agent_api, credential, method="GET", path="/tickets/1")
    refused = propose_http(agent_api, credential, method="POST", path="/tickets")
    pending = propose_http(agent_api, credential, method="POST", path="/admin")
    approve(reviewer, allowed)
    approve(reviewer, refused)
    cli("grant_capability", "helper-bot", "http.request", "--only", "method=GET")

    assert status_of(pending) == ActionStatus.CANCELLED  # no longer within what the agent may propose
    assert services.execute_action(refused) == ActionStatus.FAILED
    assert "revoked" in ActionRequest.objects.get(id=refused).result["error"]
    assert services.execute_action(allowed) == ActionStatus.SUCCEEDED
    assert [(r.method, r.path) for r in target.requests] == [("GET", "/tickets/1")]


def test_a_disabled_agents_approved_action_is_refused_at_redemption(agent, agent_api, reviewer, credential, target):
    action_id = propose_http(agent_api, credential)
    approve(reviewer, action_id)
    Agent.objects.filter(pk=agent.pk).update(is_active=False)  # even behind the services' back
    assert services.execute_action(action_id) == ActionStatus.FAILED
    assert target.requests == []
    assert "agent disabled" in ActionRequest.objects.get(id=action_id).result["error"]


# --- freeze ---------------------------------------------------------------------------------------------


def test_freeze_over_the_api_suspends_the_key_and_the_agents_attempts_are_audited(
    agent, agent_api, staff_api, staff_browser, credential
):
    pending = propose_http(agent_api, credential)
    response = staff_api.post("/api/v1/agents/helper-bot/freeze", {"reason": "answering forum posts"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() | {"frozen_at": None} == {
        "agent": "helper-bot",
        "frozen": True,
        "frozen_at": None,
        "reason": "answering forum posts",
        "cancelled": 1,
        "stopped": 0,
    }
    assert status_of(pending) == ActionStatus.CANCELLED
    assert AuditEvent.objects.filter(verb="agent.frozen", actor="stella", agent_name="helper-bot").exists()

    # The frozen agent tries again: its key is refused, and the attempt is in the log.
    assert agent_api.get("/api/v1/actions").status_code == 401
    assert agent_api.post("/api/v1/actions", {}, format="json").status_code == 401
    assert agent_api.get(f"/api/v1/actions/{pending}").status_code == 401
    [refused] = AuditEvent.objects.filter(verb="access.refused", agent_name="helper-bot")
    assert (refused.actor_type, refused.actor) == ("agent", "helper-bot")
    assert refused.data["reason"] == "agent frozen: answering forum posts"
    assert not AgentKey.objects.usable().filter(agent=agent).exists()

    # Every reviewer page says so.
    page = staff_browser.get("/").content.decode()
    assert "Agent <strong>helper-bot</strong> is frozen: answering forum posts" in page

    assert staff_api.post("/api/v1/agents/helper-bot/unfreeze").json()["frozen"] is False
    assert agent_api.get("/api/v1/actions").status_code == 200
    assert "is frozen" not in staff_browser.get("/").content.decode()
    assert AuditEvent.objects.filter(verb="agent.unfrozen").exists()


def test_freeze_stops_an_approved_execution_that_has_not_started(agent, agent_api, reviewer, credential, target):
    approved = propose_http(agent_api, credential)
    approve(reviewer, approved)
    pending = propose_http(agent_api, credential)

    with pytest.raises(CommandError, match="reason"):
        cli("freeze_agent", "helper-bot")  # a freeze says why
    assert cli("freeze_agent", "helper-bot", "--reason", "incident 42") == (
        "froze helper-bot: keys suspended, 1 pending action(s) cancelled, 1 execution(s) stopped"
    )

    assert status_of(pending) == ActionStatus.CANCELLED
    assert status_of(approved) == ActionStatus.FAILED
    assert ActionRequest.objects.get(id=approved).result == {"error": "execution refused: revoked: agent frozen"}
    grant = ExecutionGrant.objects.get(action_id=approved)
    [refused] = AuditEvent.objects.filter(verb="grant.refused", action_id=approved)
    assert refused.data == {"reason": "agent frozen", "grant": str(grant.id)}
    # The execute task still in the broker arrives afterwards: nothing runs.
    assert services.execute_action(approved) == ActionStatus.FAILED
    assert target.requests == []
    assert cli("freeze_agent", "helper-bot", "--unfreeze") == "unfroze helper-bot: its keys work again"
    assert status_of(approved) == ActionStatus.FAILED  # what was stopped stays stopped


def test_a_frozen_agents_execution_that_slipped_through_is_refused_at_redemption(
    agent, agent_api, reviewer, credential, target
):
    action_id = propose_http(agent_api, credential)
    approve(reviewer, action_id)
    Agent.objects.filter(pk=agent.pk).update(frozen_at="2026-01-01T00:00:00Z", frozen_reason="x")
    assert services.execute_action(action_id) == ActionStatus.FAILED
    assert target.requests == []


def test_only_staff_freeze_and_bad_requests_are_problems(agent, agent_api, reviewer_api, staff_api):
    body = assert_problem(reviewer_api.post("/api/v1/agents/helper-bot/freeze", {"reason": "x"}, format="json"), 403)
    assert "staff" in body["detail"].lower()
    assert_problem(agent_api.post("/api/v1/agents/helper-bot/freeze", {"reason": "x"}, format="json"), 403)
    assert_problem(APIClient().post("/api/v1/agents/helper-bot/freeze", {"reason": "x"}, format="json"), 401)
    refusals = AuditEvent.objects.filter(verb="access.refused").order_by("seq")
    assert [(e.actor, e.data["reason"]) for e in refusals] == [
        ("rita", "only staff may use this endpoint"),
        ("helper-bot", "an agent key on a reviewer endpoint"),
    ]
    problem = assert_problem(staff_api.post("/api/v1/agents/helper-bot/freeze", {}, format="json"), 400)
    assert "reason" in problem["errors"]
    assert_problem(staff_api.post("/api/v1/agents/nobody/freeze", {"reason": "x"}, format="json"), 404)
    assert not Agent.objects.get(name="helper-bot").frozen_at


def test_freeze_from_the_detail_page_is_for_staff_only(agent, agent_api, credential, staff_browser, reviewer):
    action_id = propose_http(agent_api, credential)
    page = staff_browser.get(f"/actions/{action_id}").content.decode()
    assert 'id="freeze-form"' in page
    rita = Client()
    rita.force_login(reviewer)
    assert 'id="freeze-form"' not in rita.get(f"/actions/{action_id}").content.decode()
    assert rita.post("/agents/helper-bot/freeze", {"reason": "x", "action_id": action_id}).status_code == 403
    assert not Agent.objects.get(name="helper-bot").frozen_at

    response = staff_browser.post("/agents/helper-bot/freeze", {"reason": "runaway", "action_id": action_id})
    assert response.status_code == 302 and response["Location"] == f"/actions/{action_id}"
    assert Agent.objects.get(name="helper-bot").frozen_reason == "runaway"
    assert status_of(action_id) == ActionStatus.CANCELLED


def test_freeze_from_the_admin(agent, agent_api, credential):
    action_id = propose_http(agent_api, credential)
    admin = Client()
    admin.force_login(User.objects.create_superuser("ada", "ada@example.com", "pw-ada"))
    assert "Freeze agent" in admin.get(f"/admin/agents/agent/{agent.pk}/change/").content.decode()
    response = admin.post(f"/admin/agents/agent/{agent.pk}/freeze/", {"reason": "from the admin"})
    assert response.status_code == 302
    assert status_of(action_id) == ActionStatus.CANCELLED
    assert AuditEvent.objects.get(verb="agent.frozen").via == "admin"
    assert "Unfreeze" in admin.get(f"/admin/agents/agent/{agent.pk}/change/").content.decode()

    admin.post("/admin/agents/agent/", {"action": "unfreeze_agents", "_selected_action": [agent.pk]})
    assert Agent.objects.get(pk=agent.pk).frozen_at is None


# --- pause executions -----------------------------------------------------------------------------------


def test_pause_holds_executions_and_resume_runs_each_once(
    agent, agent_api, reviewer, staff_api, staff_browser, credential, target
):
    response = staff_api.post("/api/v1/executions/pause", {"reason": "target under maintenance"}, format="json")
    assert response.status_code == 200 and response.json()["paused"] is True

    action_id = propose_http(agent_api, credential)
    assert approve(reviewer, action_id).status == ActionStatus.APPROVED  # the approval is still recorded
    assert services.execute_action(action_id) == ActionStatus.APPROVED  # held, not failed
    assert target.requests == []
    assert "execution.held" in verbs(action_id)
    page = staff_browser.get("/history").content.decode()
    assert "Executions are paused</strong> by stella since" in page and "target under maintenance" in page

    response = staff_api.post("/api/v1/executions/resume")
    assert response.status_code == 200
    assert (response.json()["paused"], response.json()["dispatched"]) == (False, 1)
    assert ExecutionGrant.objects.filter(action_id=action_id).count() == 2  # a fresh grant: the old may expire
    # The first execute message arrives late, the new one too: it runs once.
    assert services.execute_action(action_id) == ActionStatus.SUCCEEDED
    assert services.execute_action(action_id) == ActionStatus.SUCCEEDED
    assert len(target.requests) == 1
    assert "Executions are paused" not in staff_browser.get("/history").content.decode()
    assert list(
        AuditEvent.objects.filter(verb__startswith="executions.").order_by("seq").values_list("verb", "actor")
    ) == [("executions.paused", "stella"), ("executions.resumed", "stella")]


def test_pause_and_resume_from_the_command_line_and_the_desk(agent_api, reviewer, credential, staff_browser, target):
    cli("pause_executions", "--reason", "change freeze")
    action_id = propose_http(agent_api, credential)
    approve(reviewer, action_id)
    assert services.execute_action(action_id) == ActionStatus.APPROVED
    queue = staff_browser.get("/").content.decode()
    assert 'id="resume-form"' in queue
    assert staff_browser.post("/executions/switch", {"resume": "1"}).status_code == 302
    assert services.execute_action(action_id) == ActionStatus.SUCCEEDED
    assert len(target.requests) == 1

    rita = Client()
    rita.force_login(reviewer)
    assert 'id="pause-form"' not in rita.get("/").content.decode()
    assert rita.post("/executions/switch", {"reason": "mischief"}).status_code == 403
    assert not containment.executions_paused()


def test_the_kill_switch_endpoints_are_in_the_openapi_schema():
    paths = json.loads(Client().get("/api/schema/?format=json").content)["paths"]
    for path in [
        "/api/v1/agents/{name}/freeze",
        "/api/v1/agents/{name}/unfreeze",
        "/api/v1/executions/pause",
        "/api/v1/executions/resume",
    ]:
        assert "post" in paths[path], path


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
def test_through_the_worker_a_paused_execution_waits_and_resuming_runs_it_once(
    agent_api, reviewer_api, staff_api, credential, target
):
    from tests.support.servers import wait_until

    assert staff_api.post("/api/v1/executions/pause", {"reason": "hold"}, format="json").status_code == 200
    action_id = propose_http(agent_api, credential)
    assert reviewer_api.post(f"/api/v1/actions/{action_id}/approve", {}, format="json").status_code == 200
    # The worker got the execute message and held it (no sleeping: wait for its trace).
    wait_until(lambda: "execution.held" in verbs(action_id), timeout=20, message="the worker holding the execution")
    assert status_of(action_id) == ActionStatus.APPROVED and target.requests == []

    assert staff_api.post("/api/v1/executions/resume").json()["dispatched"] == 1
    wait_until(lambda: status_of(action_id) == ActionStatus.SUCCEEDED, timeout=20, message="the execution")
    assert len(target.requests) == 1
    assert verbs(action_id).count("execution.started") == 1


def test_pause_and_resume_from_the_admin():
    admin = Client()
    admin.force_login(User.objects.create_superuser("ada", "ada@example.com", "pw-ada"))
    page = admin.get("/admin/approvals/executionswitch/", follow=True)
    assert page.status_code == 200 and "paused" in page.content.decode()
    change = "/admin/approvals/executionswitch/1/change/"
    assert admin.post(change, {"paused": "on", "reason": ""}).status_code == 200  # a pause needs a reason
    assert not containment.executions_paused()
    assert admin.post(change, {"paused": "on", "reason": "from the admin"}).status_code == 302
    assert containment.executions_paused()
    assert admin.post(change, {"reason": ""}).status_code == 302
    assert not containment.executions_paused()
    assert list(AuditEvent.objects.filter(verb__startswith="executions.").values_list("verb", "actor", "via")) == [
        ("executions.paused", "ada", "admin"),
        ("executions.resumed", "ada", "admin"),
    ]


def test_freeze_several_agents_with_the_admin_action(agent, owner):
    from agents.services import create_agent

    other, _, _ = create_agent(name="other-bot", owner=owner, actor=CLI)
    admin = Client()
    admin.force_login(User.objects.create_superuser("ada", "ada@example.com", "pw-ada"))
    selected = {"action": "freeze_agents", "_selected_action": [agent.pk, other.pk]}
    page = admin.post("/admin/agents/agent/", selected)
    assert page.status_code == 200 and 'name="reason"' in page.content.decode()  # asks why first
    assert not Agent.objects.filter(frozen_at__isnull=False).exists()
    response = admin.post("/admin/agents/agent/", {**selected, "apply": "1", "reason": "both misbehaved"})
    assert response.status_code == 302
    assert set(Agent.objects.filter(frozen_reason="both misbehaved").values_list("name", flat=True)) == {
        "helper-bot",
        "other-bot",
    }
