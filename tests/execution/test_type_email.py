"""``email.send`` through Django's SMTP backend to a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import sys

import pytest
from aiosmtpd.controller import Controller
from django.conf import settings
from django.test import override_settings

from agents.services import grant_capability
from approvals import services
from approvals.models import ActionRequest, ActionStatus, Review
from approvals.presentation.previews import compute_preview
from catalog import registry
from tests import factories
from tests.conftest import CLI
from tests.support.servers import ROOT, free_port

pytestmark = pytest.mark.django_db

SENDER = "Countersign <countersign@example.org>"


class RecordingHandler:
    """Keeps every message the server accepts; refuses recipients at refused.example."""

    def __init__(self):
        self.envelopes = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refused.example"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp():
    handler = RecordingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=controller.port,
        EMAIL_USE_TLS=False,
        EMAIL_USE_SSL=False,
        EMAIL_HOST_USER="",
        EMAIL_HOST_PASSWORD="",
        COUNTERSIGN_EMAIL_FROM=SENDER,
    ):
        yield handler
    controller.stop()


@pytest.fixture
def mail_agent(agent):
    grant_capability(agent=agent, action_type="email.send", actor=CLI)
    return agent


PARAMS = {
    "to": ["Alice Example <alice@example.com>", "bob@example.com"],
    "cc": ["ops@example.com"],
    "reply_to": ["helpdesk@example.com"],
    "subject": "Maintenance tonight — café closed ✓",
    "body": "Hello,\n\nThe billing service restarts at 22:00 UTC.\n\n-- the helper bot\n",
}


def propose(agent, **overrides) -> ActionRequest:
    return factories.propose(agent, "email.send", PARAMS | overrides, summary="Announce")


def approve_and_execute(action, reviewer) -> ActionRequest:
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
    services.execute_action(action.id)
    action.refresh_from_db()
    return action


def test_the_type_is_registered_without_credential_and_not_idempotent():
    email_type = registry.get("email.send")
    assert email_type is not None
    assert email_type.credential_kinds == () and email_type.modifies_access is False
    assert email_type.is_idempotent(PARAMS) is False


def test_propose_preview_approve_execute_delivers_the_message(smtp, mail_agent, agent_api, reviewer):
    response = agent_api.post(
        "/api/v1/actions", {"action_type": "email.send", "params": PARAMS, "summary": "Announce"}, format="json"
    )
    assert response.status_code == 201, response.content
    action = ActionRequest.objects.get(id=response.json()["id"])

    preview = compute_preview("email.send", action.effective_params)
    assert preview.kind == "message"
    assert preview.title == "Email to Alice Example <alice@example.com> and 1 more"
    assert preview.before is None
    assert preview.after == {
        "from": SENDER,
        "to": PARAMS["to"],
        "cc": PARAMS["cc"],
        "reply_to": PARAMS["reply_to"],
        "subject": PARAMS["subject"],
        "body": PARAMS["body"],
    }
    assert preview.notes == [f"Sent from {SENDER} through the mail server 127.0.0.1:{settings.EMAIL_PORT}."]
    assert smtp.envelopes == []  # a preview sends nothing

    action = approve_and_execute(action, reviewer)
    assert action.status == ActionStatus.SUCCEEDED, action.result

    [envelope] = smtp.envelopes
    assert envelope.mail_from == "countersign@example.org"
    assert sorted(envelope.rcpt_tos) == ["alice@example.com", "bob@example.com", "ops@example.com"]
    message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert message["From"] == SENDER
    assert message["To"] == "Alice Example <alice@example.com>, bob@example.com"
    assert message["Cc"] == "ops@example.com"
    assert message["Reply-To"] == "helpdesk@example.com"
    assert message["Subject"] == PARAMS["subject"]
    assert message["Message-ID"] == f"<countersign.{action.id}@example.org>"
    assert message.get_content_type() == "text/plain"
    assert message.get_content().replace("\r\n", "\n") == PARAMS["body"]  # SMTP lines end in CRLF

    assert action.result == {
        "sent": True,
        "message_id": f"<countersign.{action.id}@example.org>",
        "from": SENDER,
        "to": PARAMS["to"],
        "cc": PARAMS["cc"],
        "reply_to": PARAMS["reply_to"],
        "subject": PARAMS["subject"],
        "body_chars": len(PARAMS["body"]),
    }
    # Redelivery of the task sends nothing more.
    assert services.execute_action(action.id) == ActionStatus.SUCCEEDED
    assert len(smtp.envelopes) == 1


def test_the_sender_sends_its_one_message_once(smtp):
    email_type = registry.get("email.send")
    sender = email_type.make_client(None, PARAMS, idempotency_key="once")
    assert sender.send() == (1, {})
    with pytest.raises(RuntimeError):
        sender.send()
    assert len(smtp.envelopes) == 1


@pytest.mark.parametrize(
    ("overrides", "error_key"),
    [
        ({"subject": "Hello\r\nBcc: victim@example.net"}, "params.subject"),
        ({"subject": "Hello\nthere"}, "params.subject"),
        ({"to": ["alice@example.com\r\nBcc: victim@example.net"]}, "params.to.0"),
        ({"cc": ["ok@example.com", "ops@example.com\nX-Evil: 1"]}, "params.cc.1"),
        ({"reply_to": ["a@example.com, b@example.com"]}, "params.reply_to.0"),
        ({"to": ["not-an-address"]}, "params.to.0"),
        ({"to": []}, "params.to"),
        ({"to": [f"u{i}@example.com" for i in range(51)]}, "params.to"),
        ({"to": "alice@example.com"}, "params.to"),
        ({"subject": "x" * 201}, "params.subject"),
        ({"subject": ""}, "params.subject"),
        ({"body": "x" * (100 * 1024 + 1)}, "params.body"),
        ({"body": "é" * (60 * 1024)}, "params.body"),  # under the character limit, over 100 KB of UTF-8
        ({"bcc": ["hidden@example.net"]}, "params"),
        ({"from": "ceo@example.com"}, "params"),
    ],
)
def test_invalid_params_are_400_and_record_nothing(mail_agent, agent_api, overrides, error_key):
    body = {"action_type": "email.send", "params": PARAMS | overrides, "summary": "x"}
    response = agent_api.post("/api/v1/actions", body, format="json")
    assert response.status_code == 400, response.content
    assert error_key in response.json()["errors"], response.json()
    assert not ActionRequest.objects.exists()


def test_every_recipient_refused_fails_the_execution(smtp, mail_agent, reviewer):
    action = propose(mail_agent, to=["a@refused.example", "B <b@refused.example>"], cc=[])
    action = approve_and_execute(action, reviewer)
    assert action.status == ActionStatus.FAILED
    assert action.result == {
        "error": f"the mail server 127.0.0.1:{settings.EMAIL_PORT} refused every recipient; nothing was sent",
        "refused": {"a@refused.example": "550 5.1.1 no such mailbox", "b@refused.example": "550 5.1.1 no such mailbox"},
    }
    assert smtp.envelopes == []


def test_a_partly_refused_message_succeeds_and_names_who_was_left_out(smtp, mail_agent, reviewer):
    action = approve_and_execute(propose(mail_agent, cc=["nobody@refused.example"]), reviewer)
    assert action.status == ActionStatus.SUCCEEDED, action.result
    assert action.result["refused"] == {"nobody@refused.example": "550 5.1.1 no such mailbox"}
    [envelope] = smtp.envelopes
    assert sorted(envelope.rcpt_tos) == ["alice@example.com", "bob@example.com"]


def test_server_down_fails_the_execution_with_a_clear_error(mail_agent, reviewer):
    port = free_port()  # nothing listens there
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend", EMAIL_HOST="127.0.0.1", EMAIL_PORT=port
    ):
        action = propose(mail_agent)
        preview = compute_preview("email.send", action.effective_params)
        assert preview.kind == "message"  # the preview shows the message; it needs no server
        action = approve_and_execute(action, reviewer)
    assert action.status == ActionStatus.FAILED
    assert action.result == {
        "error": f"could not send through the mail server 127.0.0.1:{port} (ConnectionRefusedError)"
    }


def test_the_embedded_default_writes_the_message_to_a_file(mail_agent, reviewer, tmp_path):
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend", EMAIL_FILE_PATH=tmp_path):
        action = propose(mail_agent)
        preview = compute_preview("email.send", action.effective_params)
        assert preview.notes[-1] == (
            "This email backend does not deliver mail: the message stays on the Countersign server."
        )
        action = approve_and_execute(action, reviewer)
    assert action.status == ActionStatus.SUCCEEDED, action.result
    [written] = list(tmp_path.iterdir())
    assert f"Message-ID: <countersign.{action.id}@" in written.read_text()


@pytest.mark.parametrize(
    ("env", "backend"),
    [
        ({}, "django.core.mail.backends.filebased.EmailBackend"),
        ({"EMAIL_HOST": "smtp.example.org"}, "django.core.mail.backends.smtp.EmailBackend"),
    ],
)
def test_the_email_backend_follows_the_environment(env, backend):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EMAIL_", "PYTEST"))}
    code = "from django.conf import settings; print(settings.EMAIL_BACKEND, settings.EMAIL_HOST)"
    out = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        env=clean | {"DJANGO_SETTINGS_MODULE": "config.settings.test"} | env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert out == [backend, env.get("EMAIL_HOST", "localhost")]
