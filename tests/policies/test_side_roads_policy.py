"""Side roads around the policy, tried as an attacker would (issue 15, points 2 and 3).

- Risk follows the credential: a plain ``http.request`` through a credential for the identity provider is
  an access change, whatever its type says: two different humans, never auto-approved, never the agent's
  owner or the person it acts for.
- An edit is a new proposal for the policy: approving with edits re-evaluates the rules on the edited
  parameters; a stricter rule raises what is needed and who may give it, a deny rule refuses the edit, a
  lenient rule never lowers anything; the simulator and the decision agree.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from agents.services import grant_capability
from approvals.models import ActionRequest, ActionStatus, Review
from approvals.policies import store as policy_store
from approvals.services.credentials import create_credential
from audit.chain import Actor
from audit.models import AuditEvent
from tests.api.test_api import assert_problem
from tests.conftest import CLI, propose_body, token_client

pytestmark = pytest.mark.django_db

STAFF = Actor("user", "ada", "admin")


def rule(name, **fields):
    return policy_store.save_rule({"name": name, **fields}, actor=STAFF)


def person(username: str, *groups: Group) -> User:
    user = User.objects.create_user(username=username, email=f"{username}@example.com", password="pw")
    user.groups.add(*groups)
    return user


def approve(user, action_id, **body):
    return token_client(user).post(f"/api/v1/actions/{action_id}/approve", body, format="json")


def status_of(action_id) -> str:
    return ActionRequest.objects.get(id=action_id).status


# --- risk follows the credential ------------------------------------------------------------------


@pytest.fixture
def idp_admin(target, db):
    """An admin API of the identity provider: any call through it can change who has access."""
    return create_credential(
        name="idp-admin",
        kind="http_bearer",
        secret="idp-token-never-shown",
        scope={"base_url": target.url},
        actor=CLI,
        access_control=True,
    )


def add_admin_via_http(agent_api, **overrides):
    body = propose_body(
        action_type="http.request",
        params={"credential": "idp-admin", "method": "POST", "path": "/groups/admins/members", "json": {"u": "eve"}},
        summary="Add eve to admins",
        on_behalf_of="ivan",
    )
    body.update(overrides)
    return agent_api.post("/api/v1/actions", body, format="json")


def test_a_plain_http_request_through_an_access_control_credential_needs_two_others(
    agent_api, idp_admin, owner, reviewers_group, reviewer, second_reviewer
):
    owner.groups.add(reviewers_group)  # the owner is a reviewer too: the colluding case
    ivan = person("ivan", reviewers_group)
    rule("http-one-is-enough", action_type="http.request", required_approvals=1)

    response = add_admin_via_http(agent_api)
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["risk"], body["modifies_access"], body["required_approvals"]) == ("high", True, 2)
    assert body["on_behalf_of_user"] == "ivan"
    explanation = body["policy"]["explanation"]
    assert "credential `idp-admin` changes access" in explanation and "(floor)" in explanation
    proposed = AuditEvent.objects.get(verb="action.proposed", action_id=body["id"])
    assert "access-needs-two-humans" in proposed.data["policy"]["floors"]
    assert proposed.data["modifies_access"] is True

    # The owner alone, and the person it acts for, are refused, whatever the rule said.
    assert "own the agent" in assert_problem(approve(owner, body["id"]), 403)["detail"]
    assert "on your behalf" in assert_problem(approve(ivan, body["id"]), 403)["detail"]
    assert status_of(body["id"]) == ActionStatus.PENDING

    assert approve(reviewer, body["id"]).json()["approvals"] == 1
    assert status_of(body["id"]) == ActionStatus.PENDING  # one human is not enough
    assert approve(second_reviewer, body["id"]).status_code == 200
    assert status_of(body["id"]) == ActionStatus.APPROVED


def test_an_auto_approve_rule_cannot_auto_approve_an_access_control_credential(agent_api, idp_admin):
    person("ivan")
    rule("wave-it-through", action_type="http.request", effect="auto_approve")
    body = add_admin_via_http(agent_api).json()
    assert body["status"] == "pending" and body["required_approvals"] == 2
    assert not Review.objects.filter(action_id=body["id"]).exists()


def test_a_credential_raises_the_risk_the_rules_match_on(agent_api, target, owner, reviewers_group):
    create_credential(
        name="payments",
        kind="http_bearer",
        secret="pay-token",
        scope={"base_url": target.url},
        actor=CLI,
        min_risk="critical",
    )
    sre = Group.objects.create(name="sre")
    rule("critical-needs-sre", risks=["critical"], required_approvals=3, reviewer_group="sre")
    body = agent_api.post(
        "/api/v1/actions",
        propose_body(action_type="http.request", params={"credential": "payments", "method": "POST", "path": "/pay"}),
        format="json",
    ).json()
    assert (body["risk"], body["modifies_access"], body["required_approvals"]) == ("critical", False, 3)
    assert body["policy"]["rule"] == "critical-needs-sre"
    owner.groups.add(sre)
    assert "own the agent" in assert_problem(approve(owner, body["id"]), 403)["detail"]  # high+: SoD


def test_the_simulator_shows_the_floor_and_why(agent, idp_admin, reviewer, reviewer_api):
    person("ivan")
    params = {"credential": "idp-admin", "method": "POST", "path": "/groups/admins/members"}
    response = reviewer_api.post(
        "/api/v1/policies/simulate",
        {"agent": agent.name, "action_type": "http.request", "params": params, "on_behalf_of": "ivan"},
        format="json",
    )
    assert response.status_code == 200, response.content
    result = response.json()
    assert result["required_approvals"] == 2 and result["risk"] == "high" and result["modifies_access"] is True
    assert {"access-needs-two-humans", "separation-of-duties", "known-requester"} <= set(result["floors"])
    assert any("credential `idp-admin` changes access" in why for why in result["floor_reasons"])
    assert result["on_behalf_of_user"] == "ivan" and result["requester_refusal"] == ""

    browser = Client()
    browser.force_login(reviewer)
    page = browser.get(
        "/policies",
        {"agent": agent.name, "action_type": "http.request", "params": json.dumps(params), "on_behalf_of": "nobody"},
    ).content.decode()
    assert "access floor" in page and "credential `idp-admin` changes access" in page
    assert "refused at submit (400)" in page  # nobody known: the proposal would be refused


# --- an edit is a new proposal for the policy ------------------------------------------------------


@pytest.fixture
def slack_world(agent, reviewers_group):
    """A Slack bot; #prod-* needs two from sre, #exec is denied, #quiet is auto-approved."""
    grant_capability(agent=agent, action_type="slack.post_message", actor=CLI)
    create_credential(
        name="slack-bot",
        kind="slack_bot",
        secret="xoxb-never-shown",
        scope={"channels": ["#general", "#prod-payments", "#exec", "#quiet"]},
        actor=CLI,
    )
    sre = Group.objects.create(name="sre")
    rule("no-exec", position=5, action_type="slack.*", effect="deny", reason="Nobody posts to #exec.",
         conditions=[{"path": "params.channel", "op": "equals", "value": "#exec"}])  # fmt: skip
    rule(
        "prod-slack",
        position=10,
        action_type="slack.*",
        required_approvals=2,
        reviewer_group="sre",
        conditions=[{"path": "params.channel", "op": "matches", "value": "#prod-*"}],
    )
    rule("quiet-auto", position=20, action_type="slack.*", effect="auto_approve",
         conditions=[{"path": "params.channel", "op": "equals", "value": "#quiet"}])  # fmt: skip
    return {"sre": sre, "sre1": person("sre1", sre), "sre2": person("sre2", sre)}


def post(channel: str, text: str = "Deploying billing now.") -> dict:
    return {"credential": "slack-bot", "channel": channel, "text": text}


def propose_post(agent_api, channel: str) -> dict:
    response = agent_api.post(
        "/api/v1/actions",
        propose_body(action_type="slack.post_message", params=post(channel), summary=f"Post to {channel}"),
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_an_edit_into_prod_needs_two_from_sre_and_the_editors_approval_does_not_count(
    agent, agent_api, slack_world, reviewer, reviewer_api
):
    body = propose_post(agent_api, "#general")
    assert (body["required_approvals"], body["policy"]["rule"]) == (1, "default")

    # rita (reviewers, not sre) moves the post into #prod-payments and approves it in the same breath.
    response = approve(reviewer, body["id"], params=post("#prod-payments"))
    assert response.status_code == 200, response.content
    after = response.json()
    assert after["status"] == "pending"
    assert (after["required_approvals"], after["approvals"], after["policy"]["rule"]) == (2, 0, "prod-slack")
    assert after["uncounted_approvals"] == [
        {"reviewer": "rita", "reason": "not a member of sre, the group the rule now in force requires"}
    ]
    action = ActionRequest.objects.get(id=body["id"])
    assert action.reviewer_group.name == "sre" and action.policy_rule == "prod-slack"

    # The simulator, asked about the edited action, says the same thing the decision did.
    simulated = reviewer_api.post(
        "/api/v1/policies/simulate",
        {"agent": agent.name, "action_type": "slack.post_message", "params": post("#prod-payments")},
        format="json",
    ).json()
    assert (simulated["rule"], simulated["required_approvals"], simulated["reviewer_group"]) == (
        action.policy_rule,
        action.required_approvals,
        action.reviewer_group.name,
    )

    reevaluated = AuditEvent.objects.get(verb="action.policy_reevaluated", action_id=action.id)
    assert reevaluated.actor == "rita"
    assert reevaluated.data["changes"]["required_approvals"] == [1, 2]
    assert reevaluated.data["changes"]["reviewer_group"] == ["reviewers", "sre"]
    reviewed = AuditEvent.objects.get(verb="action.reviewed", action_id=action.id)
    assert reviewed.data["counts"] is False and reviewed.data["approvals"] == 0

    # The detail page, for sre, says which rule now applies and that rita's approval does not count.
    browser = Client()
    browser.force_login(slack_world["sre1"])
    page = browser.get(f"/actions/{action.id}").content.decode()
    assert "rule now in force: <code>prod-slack</code>" in page and "re-evaluated on the edited parameters" in page
    assert "Not counted" in page and "rita (not a member of sre" in page
    assert "0 of 2 approvals" in page

    assert approve(slack_world["sre1"], action.id).json()["approvals"] == 1
    assert status_of(action.id) == ActionStatus.PENDING
    assert approve(slack_world["sre2"], action.id).status_code == 200
    assert status_of(action.id) == ActionStatus.APPROVED


def test_the_web_approval_says_when_it_does_not_count(agent_api, slack_world, reviewer):
    body = propose_post(agent_api, "#general")
    browser = Client()
    browser.force_login(reviewer)
    response = browser.post(
        f"/actions/{body['id']}/approve", {"params": json.dumps(post("#prod-payments"))}, follow=True
    )
    page = response.content.decode()
    assert "Your approval is recorded but does not count" in page
    assert status_of(body["id"]) == ActionStatus.PENDING


def test_an_edit_into_a_deny_rule_is_refused_and_audited(agent_api, slack_world, reviewer):
    body = propose_post(agent_api, "#general")
    problem = assert_problem(approve(reviewer, body["id"], params=post("#exec")), 403)
    assert "denied by rule `no-exec`" in problem["detail"] and "Nobody posts to #exec." in problem["detail"]

    action = ActionRequest.objects.get(id=body["id"])
    assert action.status == ActionStatus.PENDING and action.edited_params is None
    assert action.policy_rule == "default" and not action.reviews.exists()  # nothing written
    refused = AuditEvent.objects.get(verb="action.edit_refused", action_id=action.id)
    assert refused.actor == "rita" and refused.data["policy"]["rule"] == "no-exec"
    assert not AuditEvent.objects.filter(verb="action.reviewed", action_id=action.id).exists()


def test_a_lenient_edit_never_lowers_what_was_required(agent_api, slack_world):
    sre1, sre2 = slack_world["sre1"], slack_world["sre2"]
    body = propose_post(agent_api, "#prod-payments")
    assert body["required_approvals"] == 2

    # Into the default rule (1 from reviewers): still two from sre.
    response = approve(sre1, body["id"], params=post("#general"))
    assert response.status_code == 200, response.content
    action = ActionRequest.objects.get(id=body["id"])
    assert (action.required_approvals, action.reviewer_group.name, action.status) == (2, "sre", "pending")
    assert action.policy_rule == "prod-slack" and "never lowers" in action.policy_explanation
    assert response.json()["approvals"] == 1  # sre1 is eligible under the rule still in force
    assert approve(sre2, body["id"]).status_code == 200
    assert status_of(body["id"]) == ActionStatus.APPROVED


def test_an_edit_into_an_auto_approve_rule_approves_nothing_by_itself(agent_api, slack_world):
    body = propose_post(agent_api, "#prod-payments")
    response = approve(slack_world["sre1"], body["id"], params=post("#quiet"))
    assert response.status_code == 200, response.content
    after = response.json()
    assert (after["status"], after["required_approvals"], after["approvals"]) == ("pending", 2, 1)
    assert after["policy"]["rule"] == "prod-slack" and after["policy"]["effect"] == "require"


def test_the_live_check_shows_the_reevaluated_policy(agent_api, slack_world, reviewer):
    body = propose_post(agent_api, "#general")
    browser = Client()
    browser.force_login(reviewer)
    url = f"/actions/{body['id']}/check-params"

    prod = browser.post(url, {"params": json.dumps(post("#prod-payments"))}).json()
    assert prod["ok"] is True and prod["policy"]["rule"] == "prod-slack"
    assert prod["policy"]["required_approvals"] == 2 and prod["policy"]["your_approval_counts"] is False
    assert "would not count" in prod["policy"]["message"]

    denied = browser.post(url, {"params": json.dumps(post("#exec"))}).json()
    assert denied["ok"] is False and "no-exec" in json.dumps(denied["errors"])
    assert not AuditEvent.objects.filter(verb="action.edit_refused").exists()  # checking is not trying
    assert status_of(body["id"]) == ActionStatus.PENDING


def test_an_edit_onto_an_access_control_credential_reaches_the_floor(
    agent, agent_api, credential, idp_admin, owner, reviewers_group, reviewer, second_reviewer
):
    owner.groups.add(reviewers_group)
    body = agent_api.post(
        "/api/v1/actions",
        propose_body(
            action_type="http.request",
            params={"credential": "internal-api", "method": "POST", "path": "/v1/x"},
            on_behalf_of="rita",
        ),
        format="json",
    ).json()
    assert body["required_approvals"] == 1
    # The owner swaps in the identity provider's credential and approves: now it is an access change.
    response = approve(owner, body["id"], params={"credential": "idp-admin", "method": "POST", "path": "/v1/x"})
    assert response.status_code == 200, response.content
    after = response.json()
    assert (after["risk"], after["modifies_access"], after["required_approvals"], after["approvals"]) == (
        "high",
        True,
        2,
        0,
    )
    assert "separation of duties" in after["uncounted_approvals"][0]["reason"]
    # rita is the person it acts for: refused; sam alone is not enough.
    assert_problem(approve(reviewer, body["id"]), 403)
    approve(second_reviewer, body["id"])
    assert status_of(body["id"]) == ActionStatus.PENDING


# --- deciding on the web page only (the policy side of point 9) -----------------------------------


def test_a_rule_can_keep_high_risk_decisions_on_the_web_page(agent_api, target, reviewers_group):
    create_credential(
        name="prod-api", kind="http_bearer", secret="t", scope={"base_url": target.url}, actor=CLI, min_risk="high"
    )
    rule("web-for-the-risky", action_type="http.request", web_decision_only=True)
    rule("web-for-decisions", action_type="decision.only", web_decision_only=True)
    risky = agent_api.post(
        "/api/v1/actions",
        propose_body(action_type="http.request", params={"credential": "prod-api", "method": "POST", "path": "/x"}),
        format="json",
    ).json()
    plain = agent_api.post("/api/v1/actions", propose_body(), format="json").json()
    assert ActionRequest.objects.get(id=risky["id"]).web_decision_only is True
    assert ActionRequest.objects.get(id=plain["id"]).web_decision_only is False  # medium: Slack may decide

    # Both new flags are policy like any other field: versioned, exported, imported.
    text = policy_store.to_yaml()
    assert "web_decision_only: true" in text
    rules = policy_store.from_yaml(text)
    assert policy_store.plan_replace(rules)[1].empty
    assert policy_store.snapshot()[0]["web_decision_only"] is True
