"""Policies: ordered rules, conditions, effects, floors no rule can lower, versions, YAML, the simulator,
multi-approval counting and reminders."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core import mail
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.utils import timezone

from agents.services import grant_capability
from approvals import services
from approvals.models import ActionRequest, ActionStatus, OutboxMessage, PolicyVersion, Review
from approvals.outbox import dispatcher as outbox
from approvals.policies import store as policy_store
from audit.chain import Actor
from audit.models import AuditEvent
from tests.api.test_api import assert_problem
from tests.conftest import CLI, token_client
from tests.factories import api_propose

pytestmark = pytest.mark.django_db

STAFF = Actor("user", "ada", "admin")


def rule(name, **fields):
    return policy_store.save_rule({"name": name, **fields}, actor=STAFF)


# The rule language on its own (conditions, malformed rules, first match): tests/unit/test_policy_rules.py.

# --- effects on real proposals -----------------------------------------------------------------


def test_require_routes_to_the_named_group_with_its_count_and_ttl(agent_api):
    rule(
        "restarts",
        action_type="decision.only",
        required_approvals=2,
        reviewer_group="sre",
        ttl_seconds=600,
        conditions=[{"path": "params.command", "op": "equals", "value": "restart"}],
    )
    body = api_propose(agent_api)
    action = ActionRequest.objects.get(id=body["id"])
    assert (body["required_approvals"], action.reviewer_group.name) == (2, "sre")
    assert body["policy"] == {
        "rule": "restarts",
        "effect": "require",
        "explanation": "rule `restarts`: command is restart needs 2 approvals from sre",
    }
    assert 590 <= (action.expires_at - action.created_at).total_seconds() <= 600
    proposed = AuditEvent.objects.get(verb="action.proposed", action_id=action.id)
    assert proposed.data["policy"]["rule"] == "restarts" and proposed.data["policy"]["version"] == 1
    assert action.policy_version == 1


def test_deny_rejects_at_once_and_tells_the_agent_why(agent_api):
    rule(
        "no-billing",
        action_type="decision.only",
        effect="deny",
        reason="Billing is frozen this week.",
        conditions=[{"path": "params.service", "op": "equals", "value": "billing"}],
    )
    body = api_propose(agent_api)
    assert body["status"] == "rejected"
    assert body["decision"]["reason"] == "Billing is frozen this week."
    assert body["decision"]["reviews"] == []
    assert "denied" in body["policy"]["explanation"]


def test_auto_approve_needs_no_human(agent_api):
    rule("harmless", action_type="decision.only", effect="auto_approve")
    body = api_propose(agent_api)
    assert body["status"] == "approved"
    assert body["decision"]["reviews"][0]["via"] == "policy"


@pytest.mark.parametrize("effect", ["require", "auto_approve", "deny"])
def test_the_proposal_response_is_what_a_later_read_returns(agent_api, effect):
    # The response is presented from the objects the proposal wrote, not read back: it must not differ.
    rule("the-rule", action_type="decision.only", effect=effect, reason="No." if effect == "deny" else "")
    created = api_propose(agent_api)
    assert created == agent_api.get(f"/api/v1/actions/{created['id']}").json()


def test_agent_and_risk_filters(agent_api):
    rule("others", agent="other-*", action_type="decision.only", effect="deny")
    rule("high-only", action_type="decision.only", effect="deny", risks=["high", "critical"])
    assert api_propose(agent_api)["status"] == "pending"  # neither matches helper-bot's medium-risk action


# --- floors ------------------------------------------------------------------------------------


@pytest.fixture
def scim_capability(agent):
    grant_capability(agent=agent, action_type="scim.group_membership", actor=CLI)


def scim_params():
    from approvals.services.credentials import create_credential

    create_credential(
        name="idp", kind="scim_bearer", secret="t", scope={"base_url": "https://idp.internal/scim/v2"}, actor=CLI
    )
    return {"credential": "idp", "group": "admins", "add": ["mallory"]}


@pytest.mark.parametrize("fields", [{"effect": "auto_approve"}, {"effect": "require", "required_approvals": 1}])
def test_no_rule_lowers_the_two_human_floor_for_access_changes(agent_api, scim_capability, fields):
    rule("sneaky", action_type="scim.*", **fields)
    # An access change must name a known requester (approvals.policies.people); the agent's owner will do here.
    body = api_propose(agent_api, action_type="scim.group_membership", params=scim_params(), on_behalf_of="olivia")
    assert body["status"] == "pending"
    assert body["required_approvals"] == 2
    assert "changes access" in body["policy"]["explanation"] and "(floor)" in body["policy"]["explanation"]


def test_a_deny_rule_still_denies_access_changes(agent_api, scim_capability):
    rule("no-access", action_type="scim.*", effect="deny", reason="Access changes go through the IAM team.")
    body = api_propose(agent_api, action_type="scim.group_membership", params=scim_params(), on_behalf_of="olivia")
    assert body["status"] == "rejected"


# --- multi-approval ----------------------------------------------------------------------------


def test_two_approvals_count_separately_and_one_rejection_rejects(agent_api, reviewer, second_reviewer, outsider):
    rule("two", action_type="decision.only", required_approvals=2)
    first = api_propose(agent_api)
    rita, sam = token_client(reviewer), token_client(second_reviewer)

    body = rita.post(f"/api/v1/actions/{first['id']}/approve", {}, format="json").json()
    assert (body["status"], body["approvals"], body["approved_by"]) == ("pending", 1, ["rita"])
    assert_problem(rita.post(f"/api/v1/actions/{first['id']}/approve", {}, format="json"), 409)

    page = Client()
    page.force_login(second_reviewer)
    html = page.get(f"/actions/{first['id']}").content.decode()
    assert "1 of 2 approvals" in html and "Approved by</span> rita" in html
    assert "Can still approve</span>\n    sam" in html or "sam" in html.split("Can still approve", 1)[1][:200]

    body = sam.post(f"/api/v1/actions/{first['id']}/approve", {}, format="json").json()
    assert (body["status"], body["approvals"]) == ("approved", 2)

    second = api_propose(agent_api, summary="another")
    rita.post(f"/api/v1/actions/{second['id']}/approve", {}, format="json")
    body = sam.post(f"/api/v1/actions/{second['id']}/reject", {"reason": "no"}, format="json").json()
    assert body["status"] == "rejected"


# --- versions, YAML, admin ---------------------------------------------------------------------


def test_every_change_is_a_new_audited_version():
    rule("a", action_type="decision.only", effect="deny")
    rule("a", action_type="decision.only", effect="deny")  # no change: no new version
    rule("a", action_type="decision.only", effect="auto_approve")
    policy_store.delete_rule("a", actor=STAFF)
    assert list(PolicyVersion.objects.order_by("number").values_list("number", flat=True)) == [1, 2, 3]
    events = list(AuditEvent.objects.filter(verb="policy.changed").order_by("seq"))
    assert [e.data["version"] for e in events] == [1, 2, 3]
    assert events[1].data["before"]["effect"] == "deny" and events[1].data["after"]["effect"] == "auto_approve"
    assert PolicyVersion.objects.get(number=3).rules == []


def test_yaml_round_trip_and_dry_run(tmp_path):
    rule(
        "prod-slack",
        action_type="slack.*",
        required_approvals=2,
        reviewer_group="sre",
        position=10,
        conditions=[{"path": "params.channel", "op": "matches", "value": "#prod-*"}],
        notify=["slack:#sre"],
    )
    out = io.StringIO()
    call_command("export_policies", stdout=out)
    exported = out.getvalue()
    assert "prod-slack" in exported and "#prod-*" in exported

    path = tmp_path / "policy.yaml"
    path.write_text(exported)
    out = io.StringIO()
    call_command("import_policies", str(path), stdout=out)
    assert out.getvalue().strip() == "no changes"

    path.write_text(
        exported.replace("required_approvals: 2", "required_approvals: 3")
        + "- name: freeze\n  position: 20\n  effect: deny\n  reason: frozen\n"
    )
    out = io.StringIO()
    call_command("import_policies", str(path), "--dry-run", stdout=out)
    assert out.getvalue().split() == ["would", "change:", "+", "freeze", "~", "prod-slack"]
    assert PolicyVersion.objects.count() == 1

    call_command("import_policies", str(path), stdout=io.StringIO())
    assert PolicyVersion.objects.count() == 2
    assert policy_store.active_rules()[1][0].required_approvals == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [", "not valid YAML"),
        ("- name: x", "one key"),
        ("rules:\n- name: x\n  effect: maybe\n", "'x'"),
        ("rules:\n- name: x\n- name: x\n", "twice"),
        ("rules:\n- name: x\n  conditions: [{path: params.a, op: nearly, value: 1}]\n", "unknown operator"),
        ("rules:\n- name: x\n  notify: ['carrier-pigeon:#x']\n", "channel"),
    ],
)
def test_bad_policy_files_are_refused_and_change_nothing(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CommandError, match=message):
        call_command("import_policies", str(path), stdout=io.StringIO())
    assert not PolicyVersion.objects.exists()


def test_staff_edit_rules_in_the_admin_with_validation():
    User.objects.create_superuser("ada", "ada@example.com", "pw")
    client = Client()
    client.login(username="ada", password="pw")
    form = {
        "name": "sre-slack",
        "position": 10,
        "enabled": "on",
        "agent": "*",
        "action_type": "slack.*",
        "risks": "[]",
        "effect": "require",
        "required_approvals": 2,
        "reviewer_group": "sre",
        "notify": '["slack:#sre"]',
        "escalate_to": "[]",
        "description": "",
        "reason": "",
        "conditions": '[{"path": "params.channel", "op": "sounds_like", "value": "#prod"}]',
    }
    response = client.post("/admin/approvals/policyrule/add/", form)
    assert response.status_code == 200 and "unknown operator" in response.content.decode()
    assert not PolicyVersion.objects.exists()

    form["conditions"] = '[{"path": "params.channel", "op": "matches", "value": "#prod-*"}]'
    response = client.post("/admin/approvals/policyrule/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert AuditEvent.objects.get(verb="policy.changed").actor == "ada"


# --- simulator ---------------------------------------------------------------------------------


def test_simulator_answers_without_creating_anything(reviewer_api, agent, reviewer):
    rule(
        "restarts",
        action_type="decision.only",
        required_approvals=2,
        reviewer_group="sre",
        conditions=[{"path": "params.command", "op": "equals", "value": "restart"}],
    )
    body = {"agent": agent.name, "action_type": "decision.only", "params": {"command": "restart"}}
    answer = reviewer_api.post("/api/v1/policies/simulate", body, format="json").json()
    assert answer["rule"] == "restarts" and answer["required_approvals"] == 2 and answer["reviewer_group"] == "sre"
    assert answer["explanation"] == "rule `restarts`: command is restart needs 2 approvals from sre"
    assert answer["agent_may_propose"] is True
    assert not ActionRequest.objects.exists()

    answer = reviewer_api.post(
        "/api/v1/policies/simulate", {**body, "action_type": "http.request"}, format="json"
    ).json()
    assert answer["rule"] == "default"
    assert "params.credential" in answer["params_errors"]

    assert_problem(
        reviewer_api.post("/api/v1/policies/simulate", {**body, "agent": "ghost"}, format="json"), 400, "agent"
    )

    page = Client()
    page.force_login(reviewer)
    html = page.get(
        "/policies", {"agent": agent.name, "action_type": "decision.only", "params": '{"command": "restart"}'}
    ).content.decode()
    assert "command is restart needs 2 approvals from sre" in html
    assert "not valid" not in html
    assert (
        "must be a JSON object"
        in page.get(
            "/policies", {"agent": agent.name, "action_type": "decision.only", "params": "[1]"}
        ).content.decode()
    )


def test_agents_cannot_use_the_simulator(agent_api, agent):
    body = {"agent": agent.name, "action_type": "decision.only"}
    assert_problem(agent_api.post("/api/v1/policies/simulate", body, format="json"), 403)


# --- expiry and reminders ----------------------------------------------------------------------


@override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend")
def test_reminders_go_to_the_policy_channel_and_the_escalation_channel(agent_api, agent):
    rule(
        "remind",
        action_type="decision.only",
        notify=["email:sre@example.com"],
        reminder_after_seconds=60,
        escalate_to=["email:lead@example.com"],
    )
    action_id = api_propose(agent_api)["id"]
    deliver_all()
    assert [m.to for m in mail.outbox] == [["sre@example.com"]]
    assert mail.outbox[0].subject == "Approval needed: Restart the billing service"
    assert f"/actions/{action_id}" in mail.outbox[0].body

    assert services.send_due_reminders() == 0  # not yet due
    ActionRequest.objects.filter(id=action_id).update(remind_at=timezone.now() - timedelta(seconds=1))
    assert services.send_due_reminders() == 1
    assert services.send_due_reminders() == 0  # once
    deliver_all()
    assert sorted(m.to[0] for m in mail.outbox[1:]) == ["lead@example.com", "sre@example.com"]
    assert all(m.subject.startswith("Reminder") for m in mail.outbox[1:])
    assert AuditEvent.objects.filter(verb="notification.sent").count() == 3


def deliver_all():
    for message_id in OutboxMessage.objects.filter(
        kind=OutboxMessage.Kind.NOTIFY, delivered_at__isnull=True
    ).values_list("id", flat=True):
        outbox.deliver(message_id, in_worker=True)


@override_settings(COUNTERSIGN_CALLBACK_ALLOWED_HOSTS=["agent.internal"])
def test_expiry_tells_the_agent(agent_api, agent):
    action_id = api_propose(agent_api, callback_url="https://agent.internal/hook")["id"]
    ActionRequest.objects.filter(id=action_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.expire_due_actions() == 1
    assert agent_api.get(f"/api/v1/actions/{action_id}").json()["status"] == "expired"
    webhooks = OutboxMessage.objects.filter(action_id=action_id, kind=OutboxMessage.Kind.WEBHOOK)
    assert [m.payload["action"]["status"] for m in webhooks.order_by("id")] == ["pending", "expired"]
    assert ActionRequest.objects.get(id=action_id).status == ActionStatus.EXPIRED


def test_a_reviewer_outside_the_rules_group_sees_no_buttons_and_gets_403(agent_api, reviewer):
    Group.objects.get_or_create(name="sre")
    rule("sre-only", action_type="decision.only", reviewer_group="sre")
    action_id = api_propose(agent_api)["id"]
    assert_problem(token_client(reviewer).post(f"/api/v1/actions/{action_id}/approve", {}, format="json"), 403)
    reviewer.is_staff = True  # staff may look, not decide
    reviewer.save()
    page = Client()
    page.force_login(reviewer)
    html = page.get(f"/actions/{action_id}").content.decode()
    assert 'class="primary approve"' not in html and "only members of sre" in html
    assert Review.objects.count() == 0


def test_the_readme_policy_example_imports(tmp_path):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = re.search(r"```yaml\n(rules:.*?)```", readme, re.S).group(1)
    path = tmp_path / "policy.yaml"
    path.write_text(example)
    call_command("import_policies", str(path), stdout=io.StringIO())
    names = [r.name for r in policy_store.active_rules()[1]]
    assert names == ["prod-slack", "harmless-reads", "no-deletes-on-friday"]
