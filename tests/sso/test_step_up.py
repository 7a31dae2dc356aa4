# ruff: noqa: F811 - pytest fixtures come from tests/support/slack_helpers
"""Step-up: a rule can want a fresh sign-in at the provider before a high or critical approval.

The web page sends the reviewer through the provider (prompt=login, max_age) and back to the decision; the API
and Slack cannot, so they refuse with a message saying to approve on the web page. Every refusal is audited."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model

from approvals import services
from approvals.errors import FreshAuthenticationRequired
from approvals.models import ActionStatus
from approvals.policies import store as policy_store
from approvals.policies.rules import PolicyError
from approvals.services.credentials import create_credential
from approvals.slack.blocks import APPROVE
from approvals.sso import session as sso_session
from audit.models import AuditEvent
from tests.conftest import token_client
from tests.factories import CLI, propose
from tests.support.slack_helpers import (  # noqa: F401 - fixtures
    APPROVALS,
    click_payload,
    deliver_due,
    form,
    post_interaction,
    posted,
    signed,
    slack,
    slack_id,
    worker,
)

pytestmark = pytest.mark.django_db

User = get_user_model()


@pytest.fixture
def step_up_rule(db):
    return policy_store.save_rule({"name": "step-up-for-prod", "action_type": "*", "fresh_auth_minutes": 5}, actor=CLI)


@pytest.fixture
def risky(agent, target, step_up_rule):
    create_credential(
        name="prod-api", kind="http_bearer", secret="t", scope={"base_url": target.url}, actor=CLI, min_risk="high"
    )
    action = propose(agent, "http.request", params={"credential": "prod-api", "method": "POST", "path": "/x"})
    assert action.risk == "high" and action.policy_rule == "step-up-for-prod"
    return action


@pytest.fixture
def rita(directory_browser, sso):
    sso.person("rita", password="pw-rita", email="rita@example.com", email_verified=True, groups=["approvers"])
    directory_browser.sign_in("rita", "pw-rita")
    return User.objects.get(username="rita")


def refusals() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(verb="decision.refused").order_by("seq"))


def age_the_sign_in(client, seconds: int) -> None:
    session = client.session
    session[sso_session.AUTH_TIME] = time.time() - seconds
    session.save()


def test_the_web_page_sends_a_stale_sign_in_through_the_provider_and_back_to_the_decision(
    directory_browser, rita, risky
):
    client = directory_browser.client
    age_the_sign_in(client, 10 * 60)  # signed in at the provider ten minutes ago; the rule wants five
    approve = client.post(f"/actions/{risky.id}/approve", {"confirm_risk": "yes", "comment": "checked"})
    assert approve.status_code == 302
    redirect = urlsplit(approve["Location"])
    assert redirect.path == "/oidc/authenticate/"
    assert parse_qs(redirect.query) == {"next": [f"/actions/{risky.id}"], "max_age": ["300"]}
    risky.refresh_from_db()
    assert risky.status == ActionStatus.PENDING and risky.reviews.count() == 0
    assert "sign in again" in refusals()[-1].data["reason"]

    # Through the provider, which asks for the password again although its session holds (prompt=login) ...
    start = client.get(approve["Location"])
    authorize = parse_qs(urlsplit(start["Location"]).query)
    assert authorize["prompt"] == ["login"] and authorize["max_age"] == ["300"]
    back = directory_browser.follow(start["Location"], "rita", "pw-rita")
    assert directory_browser.password_asked
    # ... and back to the decision, where the approval now goes through.
    assert back.status_code == 302 and back["Location"] == f"/actions/{risky.id}"
    assert client.post(f"/actions/{risky.id}/approve", {"confirm_risk": "yes"}).status_code == 302
    risky.refresh_from_db()
    assert risky.reviews.filter(reviewer=rita).count() == 1


def test_a_fresh_sign_in_approves_at_once(directory_browser, rita, risky):
    response = directory_browser.client.post(f"/actions/{risky.id}/approve", {"confirm_risk": "yes"})
    assert response["Location"] == f"/actions/{risky.id}"
    assert risky.reviews.filter(reviewer=rita).count() == 1


def test_the_api_and_slack_refuse_and_say_to_approve_on_the_web_page(rita, risky):
    response = token_client(rita).post(f"/api/v1/actions/{risky.id}/approve", {}, format="json")
    assert response.status_code == 403
    problem = response.json()
    assert problem["type"].endswith("fresh-authentication-required")
    assert "approve it on the web page" in problem["detail"] and problem["fresh_auth_minutes"] == 5
    assert refusals()[-1].via == "api"

    with pytest.raises(FreshAuthenticationRequired, match="approve it on the web page"):
        services.approve_action(action_id=risky.id, reviewer=rita, via="slack")
    assert refusals()[-1].via == "slack"
    assert risky.reviews.count() == 0


def test_a_slack_click_is_refused_with_a_pointer_to_the_web_page(slack, worker, rita, agent, target):
    # Slack knows rita by the email her provider verified (approvals.slack.users), so the click is hers.
    policy_store.save_rule(
        {
            "name": "step-up-in-slack",
            "action_type": "http.request",
            "fresh_auth_minutes": 5,
            "notify": ["slack:#approvals"],
        },
        actor=CLI,
    )
    create_credential(
        name="prod-api", kind="http_bearer", secret="t", scope={"base_url": target.url}, actor=CLI, min_risk="high"
    )
    action = propose(agent, "http.request", params={"credential": "prod-api", "method": "POST", "path": "/x"})
    deliver_due()
    message = slack.message(APPROVALS, posted(action).external_id)
    rita_in_slack = slack_id()
    slack.add_user(rita_in_slack, email="rita@example.com")

    body = form(click_payload(message, APPROVALS, APPROVE, rita_in_slack))
    assert post_interaction(body, signed(body)).status_code == 200
    assert worker.run() == ["not_allowed"]
    [note] = slack.ephemerals
    assert "approve it on the web page" in note["text"] and "Nothing was changed" in note["text"]
    assert action.reviews.count() == 0
    assert refusals()[-1].via == "slack" and refusals()[-1].actor == "rita"


def test_step_up_is_for_high_and_critical_only(rita, agent, step_up_rule):
    plain = propose(agent)  # decision.only: medium risk, under the same rule
    response = token_client(rita).post(f"/api/v1/actions/{plain.id}/approve", {}, format="json")
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("minutes", [0, -5, "5", True, 24 * 60 + 1])
def test_the_rule_takes_a_whole_number_of_minutes_up_to_a_day(db, minutes):
    with pytest.raises(PolicyError, match="fresh_auth_minutes"):
        policy_store.save_rule({"name": "bad", "fresh_auth_minutes": minutes}, actor=CLI)


def test_step_up_is_policy_like_any_other_field(step_up_rule):
    text = policy_store.to_yaml()
    assert "fresh_auth_minutes: 5" in text
    assert policy_store.plan_replace(policy_store.from_yaml(text))[1].empty
