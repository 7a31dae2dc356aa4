# ruff: noqa: F811 - pytest fixtures come from tests/support/slack_helpers and tests/access/desk_support
"""Time-boxed access in Slack (issue 23): the request message says for how long; a granted access carries "End
access early", which only staff may use. Clicks are built and signed as Slack sends them, from the message
Countersign really posted to the fake Slack; the web process hands the work to "Celery" (run in this process).
Attacks: a reviewer who is not staff, ending twice, a forged button id: each refused, audited, nothing changed."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from approvals.models import AccessLease, ActionRequest, ActionStatus
from approvals.slack.blocks import APPROVE, END_ACCESS, REJECT
from approvals.slack.interactions import TASK
from audit.models import AuditEvent
from tests.access.desk_support import (
    approve_by,
    execute,
    idp,  # noqa: F401 - fixture
    propose_grant,
    requester,  # noqa: F401 - fixture
    revert_of,
    scim,  # noqa: F401 - fixture
    staff,  # noqa: F401 - fixture
)
from tests.support.fake_slack import TEAM_ID
from tests.support.slack_helpers import (
    APPROVALS,
    all_text,
    buttons,
    click_payload,
    deliver_due,
    form,
    post_interaction,
    posted,
    signed,
    slack,  # noqa: F401 - fixture
    slack_id,
    worker,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.django_db


def in_slack(slack, user) -> str:
    """A Slack member linked to ``user`` by e-mail."""
    member = slack_id()
    slack.add_user(member, email=user.email)
    return member


def message_of(slack, action) -> dict:
    return slack.message(APPROVALS, posted(action).external_id)


def click(message, action_id, slack_user):
    body = form(click_payload(message, APPROVALS, action_id, slack_user))
    return post_interaction(body, signed(body))


def fields_text(message) -> str:
    [fields] = [b for b in message["blocks"] if b["type"] == "section" and "fields" in b]
    return "\n".join(f["text"] for f in fields["fields"])


@pytest.fixture
def granted_in_slack(slack, idp, reviewer, second_reviewer):
    """A two-hour grant, announced in #approvals, approved by two people and executed; the message as it is now."""
    action = propose_grant(idp, duration="PT2H")
    deliver_due()
    action = execute(approve_by(action, reviewer, second_reviewer))
    assert action.status == ActionStatus.SUCCEEDED
    deliver_due()
    return action, message_of(slack, action)


def refusals(action, reason: str) -> list[dict]:
    events = AuditEvent.objects.filter(verb="slack.interaction_refused", action_id=action.id)
    return [e.data for e in events if e.data.get("reason") == reason]


def test_the_request_message_shows_for_how_long_the_access_is_asked(slack, idp):
    action = propose_grant(idp, duration="PT2H")
    deliver_due()
    message = message_of(slack, action)
    assert "Access for\n2 h, then taken back by Countersign" in fields_text(message)
    assert set(buttons(message["blocks"])) >= {APPROVE, REJECT}
    assert END_ACCESS not in buttons(message["blocks"])  # nothing to end while it is only asked for

    untimed = propose_grant(idp, duration=None, add=("carol",))
    deliver_due()
    assert "Access for" not in fields_text(message_of(slack, untimed))


def test_a_granted_access_message_offers_end_access_early_and_staff_end_it(
    slack, worker, granted_in_slack, staff, scim
):
    action, message = granted_in_slack
    button = buttons(message["blocks"])[END_ACCESS]
    assert button["style"] == "danger" and button["confirm"]["confirm"]["text"] == "End it now"
    assert "Access held until" in all_text(message["blocks"])

    assert click(message, END_ACCESS, in_slack(slack, staff)).status_code == 200
    [[interaction]] = worker.tasks(TASK)
    assert interaction["kind"] == "end_access"
    assert worker.run() == ["ended"]
    assert AccessLease.objects.get(action=action).state == AccessLease.State.REVERTING
    ended = AuditEvent.objects.get(action_id=action.id, verb="access.end_requested")
    assert (ended.actor, ended.via) == ("stella", "slack")

    execute(revert_of(action))
    assert scim.members(scim.group_id) == {"bob"}
    deliver_due()
    after = message_of(slack, action)
    assert END_ACCESS not in buttons(after["blocks"])
    assert "Access taken back on" in all_text(after["blocks"])


def test_a_reviewer_who_is_not_staff_is_refused_and_audited(slack, worker, granted_in_slack, reviewer):
    action, message = granted_in_slack
    click(message, END_ACCESS, in_slack(slack, reviewer))
    assert worker.run() == ["not_staff"]
    assert AccessLease.objects.get(action=action).state == AccessLease.State.ACTIVE
    assert not ActionRequest.objects.filter(reverts=action).exists()
    [refused] = refusals(action, "not_staff")
    assert refused["interaction"] == "end_access"
    [note] = slack.ephemerals
    assert "Only staff may end access early" in note["text"]


def test_ending_twice_is_refused_audited_and_reverts_once(slack, worker, granted_in_slack, staff):
    action, message = granted_in_slack
    member = in_slack(slack, staff)
    click(message, END_ACCESS, member)
    time.sleep(0)  # a second click is another signed request (its own trigger and action_ts)
    click(message, END_ACCESS, member)
    assert worker.run() == ["ended", "not_ended"]
    assert ActionRequest.objects.filter(reverts=action).count() == 1
    [refused] = refusals(action, "not_ended")
    assert "no longer active" in refused["detail"]


def test_a_forged_button_id_is_refused_and_audited(slack, worker, granted_in_slack, staff):
    action, message = granted_in_slack
    payload = click_payload(message, APPROVALS, END_ACCESS, in_slack(slack, staff))
    payload["actions"][0]["action_id"] = "countersign_end_access_and_grant_admin"
    body = form(payload)
    response = post_interaction(body, signed(body))
    assert response.status_code == 400
    assert worker.tasks(TASK) == []  # nothing handed to a worker
    [refused] = refusals(action, "unknown_button")
    assert "countersign_end_access_and_grant_admin" in refused["detail"]
    assert AccessLease.objects.get(action=action).state == AccessLease.State.ACTIVE


def test_end_access_on_an_action_that_granted_nothing_time_boxed_is_refused(slack, worker, idp, staff):
    action = propose_grant(idp, duration="PT2H")
    deliver_due()
    message = message_of(slack, action)
    # A hand-made click, signed with the app's secret, on the pending request's message.
    payload = click_payload(message, APPROVALS, APPROVE, in_slack(slack, staff))
    payload["actions"][0].update(action_id=END_ACCESS, value=json.dumps({"action": str(action.id)}))
    payload["trigger_id"] = f"{int(time.time())}.1.{uuid.uuid4().hex[:8]}"
    body = form(payload)
    assert post_interaction(body, signed(body)).status_code == 200
    assert worker.run() == ["not_ended"]
    assert ActionRequest.objects.get(id=action.id).status == ActionStatus.PENDING
    assert refusals(action, "not_ended")
    assert TEAM_ID  # the payload names the workspace the fake Slack serves
