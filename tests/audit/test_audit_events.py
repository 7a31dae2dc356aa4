"""Every step is in the audit log, with who, what, when and through what, and never a secret.

One test per area walks the real service functions (or pages) and reads the
events back: agents and keys, capabilities, credentials, policies, reviewer
tokens, an action's whole life (proposal with the policy decision, review,
grant minted and redeemed, execution), expiry, cancel, refusals, notifications
sent and failed, reminders, and reviewer log-ins, failed log-ins and log-outs.
"""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core import mail
from django.core.management import call_command
from django.test import Client, override_settings
from django.utils import timezone

from agents.models import AgentKey
from agents.services import (
    create_agent,
    grant_capability,
    revoke_capability,
    revoke_key,
    rotate_key,
    set_key_expiry,
    update_agent,
)
from approvals import services
from approvals.errors import NotAllowed
from approvals.models import ActionRequest, OutboxMessage
from approvals.outbox import dispatcher as outbox
from approvals.policies import store as policy_store
from approvals.services.credentials import create_credential, rotate_all_keys, set_secret, update_scope
from audit.chain import Actor
from audit.models import AuditEvent
from tests.conftest import TARGET_SECRET
from tests.factories import ProposalFactory
from tests.support.servers import free_port

pytestmark = pytest.mark.django_db

STAFF = Actor("user", "ada", "admin")


def events(**filters) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(**filters).order_by("seq"))


def verbs(**filters) -> list[str]:
    return [e.verb for e in events(**filters)]


def everything_audited() -> str:
    return json.dumps([[e.actor, e.object_id, e.data] for e in AuditEvent.objects.all()])


def propose(agent, **overrides) -> ActionRequest:
    action, created = services.propose_action(agent=agent, proposal=ProposalFactory.build(**overrides))
    assert created
    return action


def deliver_notifications() -> None:
    ids = OutboxMessage.objects.filter(kind=OutboxMessage.Kind.NOTIFY, delivered_at__isnull=True)
    for message_id in ids.values_list("id", flat=True):
        outbox.deliver(message_id, in_worker=True)


# --- agents, keys, capabilities, credentials, policies, tokens --------------------------------------


def test_agent_and_key_lifecycle_is_audited_without_the_keys(owner, outsider):
    agent, first_key, raw = create_agent(name="audit-bot", owner=owner, actor=STAFF, allow=["decision.only"])
    grant_capability(agent=agent, action_type="http.request", actor=STAFF, constraints={"method": ["GET"]})
    new_key, new_raw = rotate_key(agent=agent, actor=STAFF)
    set_key_expiry(key=new_key, expires_at=timezone.now() + timedelta(days=30), actor=STAFF)
    update_agent(agent=agent, actor=STAFF, description="reads dashboards", owner=outsider)
    update_agent(agent=agent, actor=STAFF, is_active=False)
    revoke_capability(agent=agent, action_type="http.request", actor=STAFF)
    revoke_key(key=AgentKey.objects.get(pk=new_key.pk), actor=STAFF)

    assert verbs(agent_name="audit-bot") == [
        "agent.created",
        "capability.granted",
        "agent_key.created",
        "capability.granted",
        "agent_key.created",
        "agent_key.revoked",
        "agent_key.expiry_changed",
        "agent.updated",
        "agent.deactivated",
        "capability.revoked",
        "agent_key.revoked",
    ]
    trail = events(agent_name="audit-bot")
    assert all((e.actor_type, e.actor, e.via) == ("user", "ada", "admin") for e in trail)
    assert trail[3].data == {"action_type": "http.request", "constraints": {"method": ["GET"]}}
    assert trail[7].data["owner"] == {"before": "olivia", "after": "oscar"}
    assert trail[5].data["key"] == first_key.prefix
    for secret in (raw, new_raw, raw.rsplit("_", 1)[-1], new_raw.rsplit("_", 1)[-1]):
        assert secret not in everything_audited()


def test_credential_changes_are_audited_and_the_secret_never_is(target):
    credential = create_credential(
        name="internal-api", kind="http_bearer", secret=TARGET_SECRET, scope={"base_url": target.url}, actor=STAFF
    )
    set_secret(credential=credential, secret="the-next-secret-value", actor=STAFF)
    update_scope(credential=credential, scope={"base_url": target.url + "/v2"}, actor=STAFF)
    rotate_all_keys(actor=STAFF)

    assert verbs(object_type="credential") == [
        "credential.created",
        "credential.secret_changed",
        "credential.scope_changed",
        "credential.keys_rotated",
    ]
    changed = events(verb="credential.scope_changed")[0]
    assert changed.data["before"] == {"base_url": target.url}
    assert changed.data["scope"] == {"base_url": target.url + "/v2"}
    audited = everything_audited()
    assert TARGET_SECRET not in audited and "the-next-secret-value" not in audited


def test_policy_changes_are_audited():
    policy_store.save_rule({"name": "sre-restarts", "action_type": "decision.only"}, actor=STAFF, comment="new")
    policy_store.save_rule({"name": "sre-restarts", "required_approvals": 2}, actor=STAFF, comment="two people")
    policy_store.delete_rule("sre-restarts", actor=STAFF, comment="gone")
    changes = events(verb="policy.changed")
    assert [e.data["comment"] for e in changes] == ["new", "two people", "gone"]
    assert [e.data["version"] for e in changes] == [1, 2, 3]
    assert all(e.actor == "ada" and e.object_type == "policy" for e in changes)


def test_reviewer_tokens_are_audited_without_the_token(reviewer):
    out = io.StringIO()
    call_command("create_reviewer_token", "rita", stdout=out)
    raw = out.getvalue().strip()
    [event] = events(verb="reviewer_token.created")
    assert event.data["user"] == "rita" and event.via == "cli"
    assert raw not in everything_audited()


# --- an action's life ------------------------------------------------------------------------------


def test_an_executed_action_leaves_its_whole_story(agent, reviewer, credential, target):
    action = propose(
        agent, action_type="http.request", params={"credential": "internal-api", "method": "POST", "path": "/v1/x"}
    )
    services.approve_action(action_id=action.id, reviewer=reviewer, via="web", comment="looks right")
    assert services.execute_action(action.id) == "succeeded"

    story = events(action_id=action.id)
    assert [(e.verb, e.actor, e.via) for e in story] == [
        ("action.proposed", "helper-bot", "api"),
        ("action.reviewed", "rita", "web"),
        ("action.approved", "rita", "web"),
        ("grant.minted", "countersign", "web"),  # the system mints it, on the web approval
        ("grant.redeemed", "countersign", "worker"),
        ("execution.started", "countersign", "worker"),
        ("execution.succeeded", "countersign", "worker"),
    ]
    proposed, reviewed = story[0], story[1]
    # The policy decision is part of the proposal's event: rule, effect and the explanation reviewers see.
    assert proposed.data["policy"]["effect"] == "require" and proposed.data["policy"]["explanation"]
    assert reviewed.data["comment"] == "looks right"
    assert story[-1].data["from"] == "executing" and story[-1].data["to"] == "succeeded"
    assert all(story[i].at <= story[i + 1].at for i in range(len(story) - 1))
    assert TARGET_SECRET not in everything_audited()


def test_policy_decisions_without_a_human_are_audited_as_the_policy(agent):
    policy_store.save_rule({"name": "no-restarts", "effect": "deny", "reason": "Not on Fridays."}, actor=STAFF)
    denied = propose(agent)
    assert [(e.verb, e.actor_type, e.actor, e.via) for e in events(action_id=denied.id)] == [
        ("action.proposed", "agent", "helper-bot", "api"),
        ("action.rejected", "policy", "no-restarts", "policy"),
    ]
    policy_store.delete_rule("no-restarts", actor=STAFF)
    policy_store.save_rule({"name": "harmless", "effect": "auto_approve"}, actor=STAFF)
    approved = propose(agent)
    assert [(e.verb, e.actor) for e in events(action_id=approved.id)][:2] == [
        ("action.proposed", "helper-bot"),
        ("action.approved", "harmless"),
    ]


def test_refusal_expiry_and_cancel_are_audited(agent, owner):
    narrow, _, _ = create_agent(name="narrow-bot", owner=owner, actor=STAFF, allow=["decision.only"])
    with pytest.raises(NotAllowed):
        propose(narrow, action_type="http.request", params={"credential": "x", "method": "GET", "path": "/"})
    [refused] = events(verb="action.refused")
    assert refused.agent_name == "narrow-bot" and refused.data["action_type"] == "http.request"

    expiring = propose(agent)
    ActionRequest.objects.filter(id=expiring.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.expire_due_actions() == 1
    [expired] = events(action_id=expiring.id, verb="action.expired")
    assert (expired.actor, expired.via) == ("countersign", "beat")

    cancelled = propose(agent)
    services.cancel_action(action_id=cancelled.id, agent=agent)
    [event] = events(action_id=cancelled.id, verb="action.cancelled")
    assert (event.actor_type, event.actor) == ("agent", "helper-bot")


@override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend")
def test_notifications_sent_failed_and_reminders_are_audited(agent):
    policy_store.save_rule(
        {"name": "mail-sre", "notify": ["email:sre@example.com"], "reminder_after_seconds": 60}, actor=STAFF
    )
    action = propose(agent)
    deliver_notifications()
    assert [m.to for m in mail.outbox] == [["sre@example.com"]]
    [sent] = events(action_id=action.id, verb="notification.sent")
    assert sent.data == {"channel": "email:sre@example.com", "event": "status"}

    ActionRequest.objects.filter(id=action.id).update(remind_at=timezone.now() - timedelta(seconds=1))
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend", EMAIL_HOST="127.0.0.1", EMAIL_PORT=free_port()
    ):
        assert services.send_due_reminders() == 1
        deliver_notifications()  # nobody listens on that port
    [reminder] = events(action_id=action.id, verb="action.reminder_due")
    assert reminder.data["channels"] == ["email:sre@example.com"]
    [failed] = events(action_id=action.id, verb="notification.failed")
    assert failed.data == {
        "channel": "email:sre@example.com",
        "event": "reminder",
        "attempt": 1,
        "error": "ConnectionRefusedError",
    }
    assert (failed.actor, failed.via, failed.agent_name) == ("countersign", "worker", "helper-bot")
    # The outbox still retries it.
    message = OutboxMessage.objects.get(action_id=action.id, payload__event="reminder")
    assert message.delivered_at is None and message.attempts == 1


# --- log-ins --------------------------------------------------------------------------------------


def test_a_reviewer_log_in_and_log_out_are_audited(reviewer):
    client = Client(REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="Firefox/140")
    response = client.post("/accounts/login/", {"username": "rita", "password": "pw-rita"})
    assert response.status_code == 302
    client.post("/accounts/logout/")
    logged_in, logged_out = events(object_type="user")
    assert (logged_in.verb, logged_in.actor, logged_in.via) == ("user.logged_in", "rita", "web")
    assert logged_in.data == {"remote_addr": "198.51.100.7", "user_agent": "Firefox/140"}
    assert logged_in.object_id == str(reviewer.pk)
    assert (logged_out.verb, logged_out.actor) == ("user.logged_out", "rita")


def test_a_failed_log_in_records_the_username_and_address_never_the_password(db):
    from django.contrib.auth.models import User

    # Own names: failed log-ins count against the throttle (in the shared cache) for the rest of the window.
    User.objects.create_user("fay-audit", password="pw-fay")
    client = Client(REMOTE_ADDR="203.0.113.9")
    wrong = "hunter2-not-fays-password"
    response = client.post("/accounts/login/", {"username": "fay-audit", "password": wrong})
    assert response.status_code == 200  # the form again, with an error
    client.post("/accounts/login/", {"username": "nobody-by-that-name", "password": wrong})

    failed = events(verb="user.login_failed")
    assert [(e.actor_type, e.object_id, e.data["username"], e.data["remote_addr"]) for e in failed] == [
        ("anonymous", "fay-audit", "fay-audit", "203.0.113.9"),
        ("anonymous", "nobody-by-that-name", "nobody-by-that-name", "203.0.113.9"),
    ]
    assert wrong not in everything_audited()
    assert not AuditEvent.objects.filter(verb="user.logged_in").exists()


def test_an_admin_log_in_says_so(db):
    from django.contrib.auth.models import User

    User.objects.create_superuser("ada", "ada@example.com", "pw-ada")
    client = Client()
    assert client.post("/admin/login/?next=/admin/", {"username": "ada", "password": "pw-ada"}).status_code == 302
    [event] = events(verb="user.logged_in")
    assert (event.actor, event.via) == ("ada", "admin")
