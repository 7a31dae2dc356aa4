# ruff: noqa: F811 - pytest fixtures come from tests/support/slack_helpers
"""``POST /slack/interactivity``: Approve / Reject from Slack, and everything that must be refused.

Requests are built and signed as Slack does (slack_sdk's signature scheme)
from the message Countersign really posted to the fake Slack; the web
process hands the work to "Celery" (recorded, then run in this process).
"""

from __future__ import annotations

import json
import time

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from approvals import services
from approvals.models import ActionRequest, ActionStatus, Review, SlackIdentity
from approvals.slack.blocks import APPROVE, OPEN, REJECT
from approvals.slack.interactions import TASK
from approvals.slack.users import link
from audit.chain import Actor
from audit.models import AuditEvent
from config.celery_app import app
from tests.factories import propose
from tests.support.slack_helpers import (
    APPROVALS,
    all_text,
    block,
    buttons,
    click_payload,
    deliver_due,
    form,
    post_interaction,
    posted,
    signed,
    slack,  # noqa: F401 - fixture
    slack_id,
    submission_payload,
    worker,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def announced(slack, agent):
    """A pending action, posted to #approvals; returns (action, the message as Slack holds it)."""
    action = propose(agent)
    deliver_due()
    row = posted(action)
    return action, slack.message(APPROVALS, row.external_id)


@pytest.fixture
def rita_in_slack(slack, reviewer):
    user_id = slack_id()
    slack.add_user(user_id, email="Rita@Example.com")  # linked by email, case-insensitively
    return user_id


def click(message, action_id, slack_user):
    body = form(click_payload(message, APPROVALS, action_id, slack_user))
    return post_interaction(body, signed(body))


def nothing_changed(action) -> None:
    fresh = ActionRequest.objects.get(id=action.id)
    assert fresh.status == ActionStatus.PENDING
    assert not Review.objects.filter(action=action).exists()


def refusals(action) -> list[dict]:
    return list(
        AuditEvent.objects.filter(verb="slack.interaction_refused", action_id=action.id).values_list("data", flat=True)
    )


# --- valid decisions go through the service layer, via=slack ---------------------------------------


def test_approve_in_slack_goes_through_services_is_audited_via_slack_and_updates_the_message(
    slack, worker, announced, rita_in_slack, reviewer
):
    action, message = announced
    response = click(message, APPROVE, rita_in_slack)
    assert response.status_code == 200 and response.content == b""  # acknowledged at once …
    assert ActionRequest.objects.get(id=action.id).status == ActionStatus.PENDING  # … the work is the worker's
    [[interaction]] = worker.tasks(TASK)
    assert (interaction["kind"], interaction["action"], interaction["slack_user"]) == (
        "approve",
        str(action.id),
        rita_in_slack,
    )

    assert worker.run() == ["approved"]
    action.refresh_from_db()
    assert action.status == ActionStatus.APPROVED
    [review] = action.reviews.all()
    assert (review.reviewer, review.verdict, review.via) == (reviewer, "approve", "slack")
    approved = AuditEvent.objects.get(action_id=action.id, verb="action.approved")
    assert (approved.actor, approved.via) == ("rita", "slack")

    deliver_due()
    [update] = slack.calls_to("chat.update")
    assert update.params["ts"] == message["ts"]
    after = slack.message(APPROVALS, message["ts"])
    assert buttons(after["blocks"]) == {}
    assert "Approved by *rita* (via slack)" in all_text(after["blocks"])


def test_reject_opens_a_modal_and_its_reason_rejects_through_services(
    slack, worker, announced, rita_in_slack, reviewer
):
    action, message = announced
    assert click(message, REJECT, rita_in_slack).status_code == 200
    [[interaction]] = worker.tasks(TASK)
    assert worker.run() == ["modal_opened"]
    [opened] = slack.calls_to("views.open")
    assert opened.params["trigger_id"] == interaction["trigger_id"]  # the click's own trigger, as Slack requires
    view = opened.params["view"]
    assert view["type"] == "modal" and view["submit"]["text"] == "Reject"
    [reason_input] = [b for b in view["blocks"] if b["type"] == "input"]
    assert reason_input["element"]["type"] == "plain_text_input" and reason_input["element"]["min_length"] == 1
    assert json.loads(view["private_metadata"]) == {"action": str(action.id), "channel": APPROVALS, "ts": message["ts"]}
    nothing_changed(action)  # opening the form decides nothing

    body = form(submission_payload(view, rita_in_slack, "Not during the freeze.\nAsk again Monday."))
    response = post_interaction(body, signed(body))
    assert response.status_code == 200 and response.content == b""  # closes the modal
    assert worker.run() == ["rejected"]
    action.refresh_from_db()
    assert (
        action.status == ActionStatus.REJECTED and action.decision_reason == "Not during the freeze.\nAsk again Monday."
    )
    [review] = action.reviews.all()
    assert (review.reviewer, review.verdict, review.via) == (reviewer, "reject", "slack")
    rejected = AuditEvent.objects.get(action_id=action.id, verb="action.rejected")
    assert (rejected.actor, rejected.via, rejected.data["reason"]) == ("rita", "slack", action.decision_reason)

    deliver_due()
    after = slack.message(APPROVALS, message["ts"])
    assert block(after["blocks"], "header")[0]["text"]["text"].startswith(":x: Rejected: ")
    assert "Rejected by *rita* (via slack)" in all_text(after["blocks"])
    assert "Reason: Not during the freeze.\nAsk again Monday." in all_text(after["blocks"])  # plain_text, as written


def test_an_empty_reason_is_answered_in_the_modal_and_decides_nothing(slack, worker, announced, rita_in_slack):
    action, message = announced
    click(message, REJECT, rita_in_slack)
    worker.run()
    view = slack.calls_to("views.open")[0].params["view"]
    body = form(submission_payload(view, rita_in_slack, "   "))
    response = post_interaction(body, signed(body))
    assert response.status_code == 200
    assert response.json() == {
        "response_action": "errors",
        "errors": {"countersign_reason": "Say why, so the agent can adapt."},
    }
    assert worker.tasks(TASK) == []
    nothing_changed(action)


def test_an_explicit_link_from_the_admin_wins_over_email(slack, worker, announced, second_reviewer):
    action, message = announced
    user_id = slack_id()
    slack.add_user(user_id)  # no email visible to the bot
    link(slack_user_id=user_id, user=second_reviewer, actor=Actor("user", "admin", "admin"))
    click(message, APPROVE, user_id)
    assert worker.run() == ["approved"]
    assert ActionRequest.objects.get(id=action.id).reviews.get().reviewer == second_reviewer
    assert AuditEvent.objects.filter(verb="slack.identity_linked", object_id=user_id).exists()


def test_a_changed_target_refuses_the_slack_approval_and_refreshes_the_preview(
    slack, worker, agent, credential, target, rita_in_slack
):
    target.resources["/users/7"] = {"name": "Ann", "groups": ["staff"]}
    action = propose(
        agent,
        action_type="http.request",
        params={
            "credential": credential.name,
            "method": "PUT",
            "path": "/users/7",
            "json": {"name": "Ann", "groups": ["staff", "admin"]},
        },
        summary="Give Ann admin",
    )
    deliver_due()
    message = slack.message(APPROVALS, posted(action).external_id)
    target.resources["/users/7"] = {"name": "Ann", "groups": ["staff", "ops"]}  # someone changed it meanwhile

    click(message, APPROVE, rita_in_slack)
    assert worker.run() == ["target_changed"]
    nothing_changed(action)
    [note] = slack.ephemerals
    assert note["user"] == rita_in_slack and "The target changed since this message was posted" in note["text"]

    deliver_due()  # the refresh the refusal asked for
    refreshed = slack.message(APPROVALS, message["ts"])
    assert '"ops"' in all_text(refreshed["blocks"])  # the fresh state of the target is what the message now shows
    assert buttons(refreshed["blocks"])[APPROVE]["value"] != buttons(message["blocks"])[APPROVE]["value"]

    click(refreshed, APPROVE, rita_in_slack)
    assert worker.run() == ["approved"]
    assert ActionRequest.objects.get(id=action.id).status == ActionStatus.APPROVED


# --- refused, and nothing changes -----------------------------------------------------------------


def test_a_forged_request_is_refused(slack, worker, announced, rita_in_slack):
    action, message = announced
    body = form(click_payload(message, APPROVALS, APPROVE, rita_in_slack))
    response = post_interaction(body, signed(body, secret="not-the-signing-secret"))
    assert response.status_code == 401 and b"bad signature" in response.content
    tampered = body.replace("countersign_approve", "countersign_reject")
    assert post_interaction(tampered, signed(body)).status_code == 401  # signed, then changed
    assert post_interaction(body, {}).status_code == 401  # unsigned
    assert worker.tasks(TASK) == [] and slack.ephemerals == []
    nothing_changed(action)


def test_an_expired_request_is_refused(slack, worker, announced, rita_in_slack):
    action, message = announced
    body = form(click_payload(message, APPROVALS, APPROVE, rita_in_slack))
    response = post_interaction(body, signed(body, timestamp=int(time.time()) - 301))
    assert response.status_code == 401 and b"5-minute window" in response.content
    assert worker.tasks(TASK) == []
    nothing_changed(action)


def test_a_replayed_request_is_refused(slack, worker, announced, rita_in_slack):
    action, message = announced
    body = form(click_payload(message, APPROVALS, REJECT, rita_in_slack))
    headers = signed(body)
    assert post_interaction(body, headers).status_code == 200
    replay = post_interaction(body, headers)
    assert replay.status_code == 409
    assert len(worker.tasks(TASK)) == 1  # only the first was handed on
    [refused] = refusals(action)
    assert (refused["reason"], refused["slack_user"]) == ("replayed", rita_in_slack)
    worker.run()
    assert len(slack.calls_to("views.open")) == 1
    nothing_changed(action)


def test_an_unmapped_slack_user_is_told_why_and_nothing_changes(slack, worker, announced):
    action, message = announced
    stranger = slack_id()
    slack.add_user(stranger, email="stranger@elsewhere.example")
    click(message, APPROVE, stranger)
    assert worker.run() == ["unmapped"]
    nothing_changed(action)
    [note] = slack.ephemerals
    assert (note["channel"], note["user"]) == (APPROVALS, stranger)
    assert "not linked to a Countersign reviewer" in note["text"] and "Nothing was changed" in note["text"]
    [refused] = refusals(action)
    assert (refused["reason"], refused["slack_user"], refused["interaction"]) == ("unmapped", stranger, "approve")
    assert slack.calls_to("chat.update") == [] and deliver_due() == 0


def test_a_slack_user_outside_the_reviewer_group_is_refused(slack, worker, announced, outsider):
    action, message = announced
    oscar = slack_id()
    slack.add_user(oscar, email=outsider.email)
    for button in (APPROVE, REJECT):
        click(message, button, oscar)
    assert worker.run() == ["not_allowed", "not_allowed"]
    assert slack.calls_to("views.open") == []  # not even the form
    nothing_changed(action)
    assert [e["text"] for e in slack.ephemerals] == [
        "You cannot decide this action: only members of reviewers may decide this action. Nothing was changed."
    ] * 2
    assert [r["reason"] for r in refusals(action)] == ["not_allowed", "not_allowed"]


def test_a_modal_submitted_by_someone_not_allowed_is_refused(slack, worker, announced, rita_in_slack, outsider):
    """The modal's submission is checked again: it could come from anyone who holds the view."""
    action, message = announced
    click(message, REJECT, rita_in_slack)
    worker.run()
    view = slack.calls_to("views.open")[0].params["view"]
    oscar = slack_id()
    slack.add_user(oscar, email=outsider.email)
    body = form(submission_payload(view, oscar, "I say no"))
    post_interaction(body, signed(body))
    assert worker.run() == ["not_allowed"]
    nothing_changed(action)


def test_an_inactive_linked_reviewer_is_refused(slack, worker, announced, reviewer, rita_in_slack):
    action, message = announced
    User.objects.filter(pk=reviewer.pk).update(is_active=False)
    click(message, APPROVE, rita_in_slack)
    assert worker.run() == ["not_allowed"]
    nothing_changed(action)


def test_a_click_on_a_decided_action_changes_nothing_and_says_so(
    slack, worker, announced, rita_in_slack, second_reviewer
):
    action, message = announced
    services.reject_action(action_id=action.id, reviewer=second_reviewer, via=Review.Via.WEB, reason="No")
    click(message, APPROVE, rita_in_slack)
    assert worker.run() == ["conflict"]
    assert ActionRequest.objects.get(id=action.id).status == ActionStatus.REJECTED
    assert "it can no longer be decided" in slack.ephemerals[0]["text"]


# --- the endpoint itself ----------------------------------------------------------------------------


def test_clicks_that_are_not_decisions_are_acknowledged_and_ignored(slack, worker, announced, rita_in_slack):
    action, message = announced
    payload = click_payload(message, APPROVALS, OPEN, rita_in_slack)  # the link button also reports its click
    body = form(payload)
    assert post_interaction(body, signed(body)).status_code == 200
    assert worker.tasks(TASK) == []
    nothing_changed(action)


def test_without_a_signing_secret_the_endpoint_refuses_everything(slack, worker, announced, rita_in_slack):
    _, message = announced
    body = form(click_payload(message, APPROVALS, APPROVE, rita_in_slack))
    with override_settings(SLACK_SIGNING_SECRET=""):
        assert post_interaction(body, signed(body)).status_code == 503
    assert worker.tasks(TASK) == []


def test_the_endpoint_is_post_only_and_needs_no_csrf_token(slack, worker, announced, rita_in_slack):
    from django.test import Client

    assert Client().get("/slack/interactivity").status_code == 405
    _, message = announced
    body = form(click_payload(message, APPROVALS, APPROVE, rita_in_slack))
    strict = Client(enforce_csrf_checks=True)
    response = strict.post(
        "/slack/interactivity", data=body, content_type="application/x-www-form-urlencoded", headers=signed(body)
    )
    assert response.status_code == 200


def test_the_worker_knows_the_interaction_task():
    """The web process hands interactions to Celery by name; a worker must have the task registered."""
    app.loader.import_default_modules()
    assert TASK in app.tasks


def test_slack_identities_are_kept_in_the_admin_and_audited(client, admin_user, reviewer):
    client.force_login(admin_user)
    response = client.post(
        "/admin/approvals/slackidentity/add/", {"slack_user_id": "U0RITA0001", "user": reviewer.pk, "note": "rita"}
    )
    assert response.status_code == 302
    identity = SlackIdentity.objects.get(slack_user_id="U0RITA0001")
    assert identity.user == reviewer
    linked = AuditEvent.objects.get(verb="slack.identity_linked", object_id="U0RITA0001")
    assert (linked.actor, linked.via, linked.data["user"]) == ("admin", "admin", "rita")
    bad = client.post("/admin/approvals/slackidentity/add/", {"slack_user_id": "rita", "user": reviewer.pk})
    assert bad.status_code == 200 and not SlackIdentity.objects.filter(slack_user_id="rita").exists()

    client.post(f"/admin/approvals/slackidentity/{identity.pk}/delete/", {"post": "yes"})
    assert not SlackIdentity.objects.exists()
    assert AuditEvent.objects.filter(verb="slack.identity_unlinked", object_id="U0RITA0001").exists()
