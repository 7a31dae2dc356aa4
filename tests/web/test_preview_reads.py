"""Previews read only when allowed (issue 15, point 7).

The attack: "looking is acting". An agent proposes a PUT to a path of its choosing; before anyone
decides, a reviewer opening the page, the Slack notification or the approval's stale-target check
made Countersign send a credentialed GET there. Now a credential reads the target for a diff only
when staff allowed it (``allow_preview_reads``, off for new credentials), the read stays inside what
the execution could do, and it is written into the action's timeline (at most once a minute).
"""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import call_command
from django.test import Client, override_settings

from agents.services import grant_capability
from approvals import services
from approvals.models import ActionStatus, Credential, Review
from approvals.presentation.previews import compute_preview, fingerprint
from approvals.services.credentials import create_credential, update_scope, update_settings
from audit.models import AuditEvent
from tests import factories
from tests.conftest import CLI, TARGET_SECRET, token_client
from tests.support.fake_slack import FakeSlack
from tests.support.slack_helpers import deliver_due, posted, slack  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db


@pytest.fixture
def closed(target):
    """A credential as staff create one by default: preview reads off."""
    target.resources["/users/7"] = {"name": "Ann", "groups": ["staff"]}
    return create_credential(
        name="closed-api", kind="http_bearer", secret=TARGET_SECRET, scope={"base_url": target.url}, actor=CLI
    )


@pytest.fixture
def browser(reviewer):
    client = Client()
    client.force_login(reviewer)
    return client


def propose_put(agent, credential, path="/users/7"):
    return factories.propose(
        agent,
        "http.request",
        {"credential": credential.name, "method": "PUT", "path": path, "json": {"name": "Ann", "x": 1}},
        summary="Give Ann admin",
    )


def preview_reads(action) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action_id=action.id, verb="preview.read"))


def test_new_credentials_do_not_allow_preview_reads(closed):
    assert closed.allow_preview_reads is False


def test_without_preview_reads_looking_at_a_pending_put_sends_nothing_to_the_target(
    agent,
    reviewer,
    closed,
    target,
    browser,
    slack,  # noqa: F811
):
    action = propose_put(agent, closed)

    page = browser.get(f"/actions/{action.id}").content.decode()
    api = token_client(reviewer).get(f"/api/v1/actions/{action.id}/preview").json()
    deliver_due()  # the Slack request for approval
    assert posted(action).external_id  # the Slack message went out, without a diff

    assert target.requests == []  # nobody chose to read the target: nothing was read
    assert "preview reads are off for the credential closed-api" in page
    assert "Countersign did not read the target" in page
    assert api["kind"] == "unavailable" and api["reads_off"] is True
    assert "preview reads are off" in api["error"]
    assert preview_reads(action) == []

    # Approving from the page (with the fingerprint of what it showed) reads nothing either.
    seen = re.search(r'id="preview"[^>]*data-fingerprint="([0-9a-f]{64})"', page).group(1)
    response = browser.post(f"/actions/{action.id}/approve", {"preview_fingerprint": seen, "confirm_risk": "yes"})
    assert response.status_code in (200, 302)
    action.refresh_from_db()
    assert action.status == ActionStatus.APPROVED, action.status
    assert target.requests == []

    # The execution itself is what the reviewer approved: one PUT, the only request the target ever saw.
    services.execute_action(action.id)
    assert [(r.method, r.path) for r in target.requests] == [("PUT", "/users/7")]


def test_with_preview_reads_the_read_is_in_the_timeline_once_a_minute(agent, credential, target, browser):
    assert credential.allow_preview_reads is True
    target.resources["/users/7"] = {"name": "Ann", "groups": ["staff"]}
    action = propose_put(agent, credential)

    first = browser.get(f"/actions/{action.id}").content.decode()
    for _ in range(3):  # a reviewer refreshing the page
        page = browser.get(f"/actions/{action.id}").content.decode()

    assert [(r.method, r.path) for r in target.requests] == [("GET", "/users/7")] * 4
    assert "Computed by Countersign from the target just now" in first
    [event] = preview_reads(action)
    assert event.actor == "rita" and event.via == "web"
    assert event.data == {
        "credential": "internal-api",
        "method": "GET",
        "path": "/users/7",
        "reads": ["GET /users/7"],
        "outcome": "read",
    }
    assert "Countersign read the target to compute the diff: GET /users/7 with the credential internal-api" in page


def test_a_preview_read_never_goes_where_the_execution_could_not(agent, credential, target, browser):
    action = propose_put(agent, credential)
    # Staff narrowed the credential after the proposal: a PUT is no longer something it may do.
    update_scope(credential=credential, scope={"base_url": target.url, "methods": ["GET"]}, actor=CLI)
    page = browser.get(f"/actions/{action.id}").content.decode()
    assert target.requests == []
    assert "outside the credential" in page
    assert preview_reads(action) == []

    # The same for a capability narrowed after the proposal.
    update_scope(credential=credential, scope={"base_url": target.url}, actor=CLI)
    grant_capability(agent=agent, action_type="http.request", actor=CLI, constraints={"path": ["/groups/*"]})
    page = browser.get(f"/actions/{action.id}").content.decode()
    assert target.requests == []
    assert "outside the agent" in page


def test_turning_preview_reads_on_is_a_staff_decision_that_takes_effect_at_once(agent, closed, target, browser):
    action = propose_put(agent, closed)
    browser.get(f"/actions/{action.id}")
    assert target.requests == []
    update_settings(credential=closed, actor=CLI, allow_preview_reads=True)
    page = browser.get(f"/actions/{action.id}").content.decode()
    assert [r.method for r in target.requests] == ["GET"]
    assert '"staff"' in page or "staff" in page
    assert AuditEvent.objects.filter(verb="credential.settings_changed", object_id=str(closed.pk)).exists()


def test_a_slack_post_without_preview_reads_shows_the_message_and_reads_nothing_from_slack(agent, reviewer):
    token = "xoxb-preview-reads-off-0001"
    with FakeSlack(token=token) as fake:
        fake.add_channel("C0INFRA01", "infra-help")
        with override_settings(COUNTERSIGN_SLACK_API_URL=fake.url):
            create_credential(name="quiet-bot", kind="slack_bot", secret=token, scope={}, actor=CLI)
            params = {"credential": "quiet-bot", "channel": "C0INFRA01", "text": "Restarting billing"}
            preview = compute_preview("slack.post_message", params)
            assert fake.calls == []
            assert preview.kind == "message" and preview.after["text"] == "Restarting billing"
            assert preview.reads_off and "preview reads are off for the credential quiet-bot" in preview.notes[0]
            update_settings(credential=Credential.objects.get(name="quiet-bot"), actor=CLI, allow_preview_reads=True)
            assert "infra-help" in compute_preview("slack.post_message", params).title
            assert [c.method for c in fake.calls] == ["conversations.info"]


def test_types_without_a_credential_are_unaffected(agent, reviewer):
    preview = compute_preview("decision.only", {"anything": 1})
    assert preview.kind == "none" and not preview.reads_off


def test_the_demo_credential_allows_preview_reads():
    call_command("seed_demo", stdout=io.StringIO())
    assert Credential.objects.get(name="countersign-self").allow_preview_reads is True
    call_command("seed_demo", stdout=io.StringIO())  # run again: still on
    assert Credential.objects.get(name="countersign-self").allow_preview_reads is True


def test_the_approval_rejects_nothing_for_a_credential_without_reads(agent, reviewer, closed, target):
    # The stale-target check compares what the reviewer saw with a fresh preview: both read nothing.
    action = propose_put(agent, closed)
    seen = fingerprint(compute_preview(action.action_type, action.params, action=action))
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API, preview_fingerprint=seen)
    assert target.requests == []
