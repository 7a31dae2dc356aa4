"""How an execution's transport failure is told: ``unknown`` when the request may have reached the target and
nobody knows whether it took effect, ``failed`` when it cannot have (approvals/action_types/transport.py).

Each test runs the executor in this process (``services.execute_action``) against a real loopback target; the
approval's execute message is never sent (these tests do not commit), so no worker takes it.
"""

from __future__ import annotations

import signal

import pytest
from aiosmtpd.controller import Controller
from celery.exceptions import SoftTimeLimitExceeded
from django.test import override_settings

from agents.services import grant_capability
from approvals import services
from approvals.models import ActionRequest, ActionStatus, Review
from approvals.services.credentials import create_credential
from audit.models import AuditEvent
from tests import factories
from tests.conftest import CLI, TARGET_SECRET
from tests.support.servers import RecordingServer, free_port

pytestmark = pytest.mark.django_db

ADVICE = "check the target before retrying"


def execute(agent, reviewer, credential_name: str, method: str, path: str = "/v1/orders") -> ActionRequest:
    action = factories.propose(
        agent,
        "http.request",
        {"credential": credential_name, "method": method, "path": path, "json": {"n": 1}},
        summary=f"{method} {path}",
    )
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
    services.execute_action(action.id)
    action.refresh_from_db()
    return action


def verbs(action) -> list[str]:
    return list(AuditEvent.objects.filter(action_id=action.id).order_by("seq").values_list("verb", flat=True))


def test_a_post_whose_answer_never_came_is_unknown_not_failed(agent, reviewer, target, credential):
    target.delay = 3.0
    with override_settings(COUNTERSIGN_HTTP_TIMEOUT_SECONDS=1):
        action = execute(agent, reviewer, credential.name, "POST")
    assert action.status == ActionStatus.UNKNOWN, action.result
    assert len(target.requests) == 1  # it did reach the target
    assert action.result["advice"] == ADVICE
    assert action.result["transport_error"] == "ReadTimeout"
    assert "may have taken effect" in action.result["error"]
    assert verbs(action)[-2:] == ["execution.started", "execution.outcome_unknown"]
    event = AuditEvent.objects.get(action_id=action.id, verb="execution.outcome_unknown")
    assert event.data["to"] == "unknown"
    assert TARGET_SECRET not in str(action.result)


def test_a_connection_refused_is_failed(agent, reviewer):
    dead = RecordingServer().start()
    url = dead.url
    dead.stop()  # nothing listens there now
    create_credential(name="dead-api", kind="http_bearer", secret=TARGET_SECRET, scope={"base_url": url}, actor=CLI)
    action = execute(agent, reviewer, "dead-api", "POST")
    assert action.status == ActionStatus.FAILED, action.result
    assert action.result["error"].startswith(f"could not reach {url}/v1/orders (ConnectError)")
    assert "advice" not in action.result
    assert verbs(action)[-1] == "execution.failed"


def test_an_answer_received_is_failed_even_for_a_5xx(agent, reviewer, target, credential):
    target.status = 503
    action = execute(agent, reviewer, credential.name, "POST")
    assert action.status == ActionStatus.FAILED
    assert action.result["status_code"] == 503


def test_a_read_that_timed_out_changed_nothing_and_is_failed(agent, reviewer, target, credential):
    target.delay = 3.0
    with override_settings(COUNTERSIGN_HTTP_TIMEOUT_SECONDS=1):
        action = execute(agent, reviewer, credential.name, "GET")
    assert action.status == ActionStatus.FAILED, action.result
    assert "ReadTimeout" in action.result["error"]


def test_the_soft_time_limit_mid_call_is_unknown(agent, reviewer, target, credential):
    """Celery's soft time limit raises SoftTimeLimitExceeded from a signal handler wherever the executor is
    (billiard sends SIGUSR1); here the same signal lands while the request waits for the target's answer."""
    target.delay = 3.0

    def soft_time_limit(signum, frame):
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGALRM, soft_time_limit)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        action = execute(agent, reviewer, credential.name, "POST")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert action.status == ActionStatus.UNKNOWN, action.result
    assert len(target.requests) == 1
    assert action.result["advice"] == ADVICE
    assert "time limit" in action.result["error"]


class HangUpAfterData:
    """An SMTP server that takes the whole message and drops the connection instead of answering it."""

    def __init__(self):
        self.messages = 0

    async def handle_DATA(self, server, session, envelope):
        self.messages += 1
        server.transport.abort()
        return "250 never sent"


def test_an_smtp_connection_lost_after_the_message_was_sent_is_unknown(agent, reviewer):
    handler = HangUpAfterData()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    grant_capability(agent=agent, action_type="email.send", actor=CLI)
    try:
        with override_settings(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=controller.port,
            EMAIL_USE_TLS=False,
            EMAIL_USE_SSL=False,
            EMAIL_HOST_USER="",
            EMAIL_HOST_PASSWORD="",
        ):
            action = factories.propose(
                agent,
                "email.send",
                {"to": ["alice@example.com"], "subject": "Hello", "body": "Hi."},
                summary="mail alice",
            )
            services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
            services.execute_action(action.id)
    finally:
        controller.stop()
    action.refresh_from_db()
    assert handler.messages == 1
    assert action.status == ActionStatus.UNKNOWN, action.result
    assert "may have been sent" in action.result["error"]
    assert action.result["advice"] == ADVICE


def test_an_smtp_server_that_is_down_is_failed(agent, reviewer):
    grant_capability(agent=agent, action_type="email.send", actor=CLI)
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend", EMAIL_HOST="127.0.0.1", EMAIL_PORT=free_port()
    ):
        action = factories.propose(
            agent,
            "email.send",
            {"to": ["alice@example.com"], "subject": "Hello", "body": "Hi."},
            summary="mail alice",
        )
        services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
        services.execute_action(action.id)
    action.refresh_from_db()
    assert action.status == ActionStatus.FAILED
