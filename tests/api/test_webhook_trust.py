# ruff: noqa: F811 - the worker fixture comes from tests/support/slack_helpers
"""Webhooks an agent can trust: the secret is shown once (CLI and admin), the SDK's ``verify_webhook`` checks
every delivery with it, and one action's events arrive in order, numbered, even when a delivery failed.

The callback is a real HTTP server on loopback (allow-listed, as an operator would).
"""

from __future__ import annotations

import io
import re
import time
from datetime import timedelta

import pytest
from countersign import InvalidWebhook, verify_webhook
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.utils import timezone

from agents.models import Agent
from approvals import services
from approvals.models import ActionRequest, OutboxMessage, Review
from approvals.notify.webhooks import sign
from approvals.outbox import dispatcher as outbox
from audit.models import AuditEvent
from tests import factories
from tests.support.slack_helpers import deliver_due, time_passes, worker  # noqa: F401

pytestmark = pytest.mark.django_db
WEBHOOKS = (OutboxMessage.Kind.WEBHOOK,)
SECRET_PATTERN = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture(autouse=True)
def _loopback_callbacks_allowed():
    with override_settings(COUNTERSIGN_CALLBACK_ALLOWED_HOSTS=["127.0.0.1"], COUNTERSIGN_DEFAULT_NOTIFY=[]):
        yield


def run(command: str, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(command, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def propose(agent: Agent, callback_url: str) -> ActionRequest:
    return factories.propose(agent, params={"x": 1}, summary="Do x", callback_url=callback_url)


def verified(request, secret: str) -> dict:
    return verify_webhook(request.body, request.headers["Countersign-Signature"], secret)


def secrets_in_audit() -> str:
    return str(list(AuditEvent.objects.values_list("data", flat=True)))


def test_create_agent_shows_the_webhook_secret_once_and_the_agent_verifies_its_webhooks_with_it(owner, target):
    out, err = run("create_agent", "hook-bot", "--owner", owner.username, "--allow", "decision.only")
    assert out.count("\n") == 1 and out.startswith("cs_")  # the key stays alone on stdout
    secret = err.strip().rsplit(" ", 1)[-1]
    assert SECRET_PATTERN.match(secret) and "shown once" in err
    agent = Agent.objects.get(name="hook-bot")
    assert secret not in secrets_in_audit()

    propose(agent, f"{target.url}/hook")
    assert deliver_due(WEBHOOKS) == 1
    event = verified(target.requests[0], secret)
    assert event["status"] == "pending" and event["agent"] == "hook-bot"
    assert event["event"]["type"] == "action.pending" and event["event"]["sequence"] == 1

    out, err = run("create_agent", "other-bot", "--owner", owner.username, "--show-webhook-secret")
    key, shown = out.splitlines()
    assert key.startswith("cs_") and shown == Agent.objects.get(name="other-bot").webhook_secret and err == ""


def test_a_forged_tampered_or_replayed_webhook_is_refused(agent, target):
    """Someone who found the callback URL posts "approved" to the agent; or replays a real delivery later."""
    action = propose(agent, f"{target.url}/hook")
    deliver_due(WEBHOOKS)
    [real] = target.requests
    header = real.headers["Countersign-Signature"]
    assert verified(real, agent.webhook_secret)["id"] == str(action.id)

    forged = real.body.replace(b'"status":"pending"', b'"status":"approved"')
    assert forged != real.body
    with pytest.raises(InvalidWebhook, match="signature"):
        verify_webhook(forged, header, agent.webhook_secret)  # the real header on a changed body
    with pytest.raises(InvalidWebhook, match="signature"):
        verify_webhook(forged, sign("a-guessed-secret", forged), agent.webhook_secret)
    with pytest.raises(InvalidWebhook):
        verify_webhook(forged, "", agent.webhook_secret)

    replayed = sign(agent.webhook_secret, real.body, timestamp=int(time.time()) - 3600)
    with pytest.raises(InvalidWebhook, match="timestamp"):
        verify_webhook(real.body, replayed, agent.webhook_secret)


def test_rotating_the_webhook_secret_prints_it_alone_audits_without_it_and_overlaps_the_old(owner, agent, target):
    old = agent.webhook_secret
    out, err = run("rotate_webhook_secret", agent.name)
    new = out.strip()
    assert SECRET_PATTERN.match(new) and out == new + "\n" and new != old and err == ""
    agent.refresh_from_db()
    assert agent.webhook_secret == new

    [event] = AuditEvent.objects.filter(verb="agent.webhook_secret_rotated", object_id=str(agent.id))
    assert (event.actor, event.via) == ("cli", "cli")
    assert event.data["previous_secret_valid_until"]
    assert new not in secrets_in_audit() and old not in secrets_in_audit()

    # During the overlap a webhook carries a v1 for each secret: an agent still on the old one keeps working.
    propose(agent, f"{target.url}/hook")
    deliver_due(WEBHOOKS)
    request = target.requests[-1]
    assert request.headers["Countersign-Signature"].count("v1=") == 2
    assert verified(request, new)["status"] == verified(request, old)["status"] == "pending"

    # Once the overlap is over, only the new secret signs: the old one no longer verifies anything.
    Agent.objects.filter(pk=agent.pk).update(previous_webhook_secret_until=timezone.now() - timedelta(seconds=1))
    propose(agent, f"{target.url}/hook")
    deliver_due(WEBHOOKS)
    request = target.requests[-1]
    assert request.headers["Countersign-Signature"].count("v1=") == 1
    assert verified(request, new)["status"] == "pending"
    with pytest.raises(InvalidWebhook):
        verified(request, old)


def test_rotating_with_no_overlap_stops_the_old_secret_at_once(agent, target):
    old = agent.webhook_secret
    new = run("rotate_webhook_secret", agent.name, "--overlap-hours", "0")[0].strip()
    propose(agent, f"{target.url}/hook")
    deliver_due(WEBHOOKS)
    assert verified(target.requests[-1], new)
    with pytest.raises(InvalidWebhook):
        verified(target.requests[-1], old)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["no-such-bot"], "no agent named"), (["helper-bot", "--overlap-hours", "-1"], "between 0 and 720")],
)
def test_rotate_webhook_secret_refuses_bad_input_and_changes_nothing(agent, args, message):
    with pytest.raises(CommandError, match=message):
        run("rotate_webhook_secret", *args)
    assert Agent.objects.get(pk=agent.pk).webhook_secret == agent.webhook_secret
    assert not AuditEvent.objects.filter(verb="agent.webhook_secret_rotated").exists()


@pytest.fixture
def staff():
    admin = User.objects.create_superuser("ada", "ada@example.com", "pw-ada")
    client = Client()
    client.force_login(admin)
    return client


def secret_on_page(html: str) -> str:
    match = re.search(r'id="new-webhook-secret"[^>]*>([0-9a-f]{64})<', html)
    assert match, html
    return match.group(1)


def test_the_admin_rotates_the_webhook_secret_with_a_button_and_shows_it_once(staff, agent, target):
    change = f"/admin/agents/agent/{agent.pk}/change/"
    rotate = f"/admin/agents/agent/{agent.pk}/rotate-webhook-secret/"
    page = staff.get(change).content.decode()
    assert rotate in page and agent.webhook_secret not in page

    assert staff.get(rotate).status_code == 302  # a link followed by accident rotates nothing
    assert Agent.objects.get(pk=agent.pk).webhook_secret == agent.webhook_secret

    response = staff.post(rotate)
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    secret = secret_on_page(response.content.decode())
    assert secret == Agent.objects.get(pk=agent.pk).webhook_secret != agent.webhook_secret
    assert secret not in staff.get(change).content.decode()
    [event] = AuditEvent.objects.filter(verb="agent.webhook_secret_rotated")
    assert (event.actor, event.via) == ("ada", "admin") and secret not in str(event.data)

    propose(agent, f"{target.url}/hook")
    deliver_due(WEBHOOKS)
    assert verified(target.requests[-1], secret)["status"] == "pending"


def test_someone_without_change_permission_cannot_rotate_the_secret(agent):
    viewer = User.objects.create_user("val", password="pw", is_staff=True)
    client = Client()
    client.force_login(viewer)
    response = client.post(f"/admin/agents/agent/{agent.pk}/rotate-webhook-secret/")
    assert response.status_code == 403
    assert Agent.objects.get(pk=agent.pk).webhook_secret == agent.webhook_secret


def test_adding_an_agent_in_the_admin_shows_its_webhook_secret_with_its_key(staff, owner):
    response = staff.post(
        "/admin/agents/agent/add/",
        {
            "name": "admin-bot",
            "owner": owner.pk,
            "is_active": "on",
            "capabilities-TOTAL_FORMS": "0",
            "capabilities-INITIAL_FORMS": "0",
            "keys-TOTAL_FORMS": "0",
            "keys-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    assert secret_on_page(response.content.decode()) == Agent.objects.get(name="admin-bot").webhook_secret


def statuses_and_sequences(requests, secret: str) -> list[tuple[str, int]]:
    return [(e["status"], e["event"]["sequence"]) for e in (verified(r, secret) for r in requests)]


def test_after_a_failed_delivery_a_later_event_waits_for_the_earlier_ones_retry(agent, reviewer, target):
    target.status = 500
    action = propose(agent, f"{target.url}/hook")
    assert deliver_due(WEBHOOKS) == 0
    assert len(target.requests) == 1  # "pending" failed; it is retried with backoff

    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
    approved = OutboxMessage.objects.filter(kind="webhook", action_id=action.id).order_by("id").last()
    assert approved.payload["action"]["status"] == "approved" and approved.next_attempt_at <= timezone.now()
    # Due, but an earlier webhook of its action is undelivered: neither the dispatcher nor a worker takes it.
    assert outbox._claim(approved.id) is None and outbox._claim(approved.id, take_over=True) is None
    assert deliver_due(WEBHOOKS) == 0
    assert len(target.requests) == 1

    time_passes(3)
    target.status = 200
    deliver_due(WEBHOOKS)
    received = statuses_and_sequences(target.requests, agent.webhook_secret)
    assert received == [("pending", 1), ("pending", 1), ("approved", 2)]  # a retry is the same event
    assert target.requests[0].body == target.requests[1].body
    first, retry, later = target.requests
    assert first.headers["Countersign-Delivery"] == retry.headers["Countersign-Delivery"]
    assert later.headers["Countersign-Delivery"] != retry.headers["Countersign-Delivery"]
    times = [verified(r, agent.webhook_secret)["event"]["at"] for r in (retry, later)]
    assert times == sorted(times)


def test_events_of_one_action_are_numbered_in_order_and_each_is_delivered_once(agent, reviewer, target):
    action = propose(agent, f"{target.url}/hook")
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
    deliver_due(WEBHOOKS)
    other = propose(agent, f"{target.url}/hook")  # another action counts from 1 on its own
    services.cancel_action(action_id=other.id, agent=agent)
    deliver_due(WEBHOOKS)

    events = [verified(r, agent.webhook_secret) for r in target.requests]
    mine = [(e["status"], e["event"]["sequence"]) for e in events if e["id"] == str(action.id)]
    theirs = [(e["status"], e["event"]["sequence"]) for e in events if e["id"] == str(other.id)]
    assert [s for _, s in mine] == list(range(1, len(mine) + 1)) and mine[0] == ("pending", 1)
    assert ("approved", 2) in mine
    assert theirs == [("pending", 1), ("cancelled", 2)]
    assert all(e["event"]["type"] == f"action.{e['status']}" for e in events)
    assert ActionRequest.objects.get(id=action.id).webhook_sequence == len(mine)


def test_an_event_that_waited_goes_out_right_after_the_earlier_one_not_at_the_next_sweep(
    agent, reviewer, target, worker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        action = propose(agent, f"{target.url}/hook")  # "pending" handed to a worker, not yet run
    with django_capture_on_commit_callbacks(execute=True):
        services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
    # "approved" was written while "pending" was still on its way: it was not dispatched after its commit.
    assert len(worker.tasks("approvals.deliver_outbox")) == 1
    worker.run()
    assert statuses_and_sequences(target.requests, agent.webhook_secret) == [("pending", 1), ("approved", 2)]
    assert not OutboxMessage.objects.filter(kind="webhook", delivered_at__isnull=True).exists()


def test_webhooks_waiting_their_turn_never_crowd_the_sweep_out(agent, reviewer, target, worker):
    """A dead callback's queue of waiting events must not fill the sweep's batch and hold up everything else."""
    target.status = 500
    stuck = propose(agent, f"{target.url}/dead")
    deliver_due(WEBHOOKS)  # its "pending" failed and backs off
    services.approve_action(action_id=stuck.id, reviewer=reviewer, via=Review.Via.API)  # "approved" waits for it
    target.status = 200
    other = propose(agent, f"{target.url}/alive")
    time_passes(3)
    now = timezone.now()
    OutboxMessage.objects.exclude(kind="webhook").update(delivered_at=now)
    OutboxMessage.objects.filter(action_id=stuck.id, attempts__gt=0).update(next_attempt_at=now + timedelta(hours=1))

    outbox.sweep(limit=1)
    [waiting] = OutboxMessage.objects.filter(kind="webhook", action_id=stuck.id, attempts=0)
    [ready] = OutboxMessage.objects.filter(kind="webhook", action_id=other.id)
    assert waiting.id < ready.id and waiting.next_attempt_at <= now  # due, and first in line
    assert worker.tasks("approvals.deliver_outbox") == [[ready.id]]
