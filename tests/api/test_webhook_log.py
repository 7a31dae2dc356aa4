"""Signed webhooks to agents: retried with backoff by the outbox, every attempt in the delivery log.

The callback is a real HTTP server on loopback (allow-listed, as an operator would).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import override_settings
from django.utils import timezone

from approvals.models import ActionRequest, OutboxMessage, WebhookDelivery
from tests import factories
from tests.support.servers import free_port
from tests.support.slack_helpers import deliver_due, time_passes

pytestmark = pytest.mark.django_db
WEBHOOKS = (OutboxMessage.Kind.WEBHOOK,)


@pytest.fixture(autouse=True)
def _loopback_callbacks_allowed():
    with override_settings(COUNTERSIGN_CALLBACK_ALLOWED_HOSTS=["127.0.0.1"], COUNTERSIGN_DEFAULT_NOTIFY=[]):
        yield


def propose(agent, callback_url: str) -> ActionRequest:
    return factories.propose(agent, params={"x": 1}, summary="Do x", callback_url=callback_url)


def test_a_delivered_webhook_is_signed_as_api_md_says_and_logged(agent, target):
    action = propose(agent, f"{target.url}/hooks/countersign")
    assert deliver_due(WEBHOOKS) == 1

    [request] = target.requests
    assert request.path == "/hooks/countersign" and request.json()["status"] == "pending"
    t, v1 = (part.split("=", 1)[1] for part in request.headers["Countersign-Signature"].split(","))
    expected = hmac.new(agent.webhook_secret.encode(), f"{t}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(v1, expected)
    assert request.headers["Countersign-Event"] == "action.pending"

    [entry] = WebhookDelivery.objects.all()
    message = OutboxMessage.objects.get(kind="webhook", action_id=action.id)
    assert (entry.action_id, entry.delivery, entry.attempt, entry.status_code, entry.error) == (
        action.id,
        message.id,
        1,
        200,
        "",
    )
    assert entry.url == f"{target.url}/hooks/countersign" and entry.event == "action.pending"
    assert 0 <= entry.duration_ms < 10_000 and entry.ok
    assert str(message.id) == request.headers["Countersign-Delivery"]


def test_a_failing_callback_is_retried_with_backoff_and_every_attempt_is_logged(agent, target):
    target.status = 500
    action = propose(agent, f"{target.url}/hook")
    assert deliver_due(WEBHOOKS) == 0
    message = OutboxMessage.objects.get(kind="webhook", action_id=action.id)
    assert message.attempts == 1 and message.delivered_at is None and "500" in message.last_error
    assert 1 <= (message.next_attempt_at - timezone.now()).total_seconds() <= 2.5
    assert deliver_due(WEBHOOKS) == 0  # not due yet: nothing is sent
    assert len(target.requests) == 1

    time_passes(3)
    target.status = 200
    assert deliver_due(WEBHOOKS) == 1
    attempts = list(
        WebhookDelivery.objects.filter(action=action).order_by("attempt").values_list("attempt", "status_code")
    )
    assert attempts == [(1, 500), (2, 200)]
    first, second = target.requests
    assert first.headers["Countersign-Delivery"] == second.headers["Countersign-Delivery"]  # one delivery, two tries
    assert first.body == second.body


def test_an_unreachable_callback_is_logged_with_its_error(agent):
    action = propose(agent, f"http://127.0.0.1:{free_port()}/hook")
    deliver_due(WEBHOOKS)
    [entry] = WebhookDelivery.objects.filter(action=action)
    assert entry.status_code is None and entry.error.startswith("ConnectError") and not entry.ok


def test_a_callback_that_asks_to_wait_is_not_retried_before_retry_after(agent):
    class Busy(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(429)
            self.send_header("Retry-After", "120")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        before = timezone.now()
        action = propose(agent, f"http://127.0.0.1:{server.server_address[1]}/hook")
        deliver_due(WEBHOOKS)
    finally:
        server.shutdown()
        server.server_close()
    message = OutboxMessage.objects.get(kind="webhook", action_id=action.id)
    assert message.delivered_at is None and message.next_attempt_at >= before + timedelta(seconds=120)
    assert WebhookDelivery.objects.get(action=action).status_code == 429


def test_a_callback_refused_at_delivery_is_logged(agent, target):
    action = propose(agent, f"{target.url}/hook")
    with override_settings(COUNTERSIGN_CALLBACK_ALLOWED_HOSTS=[]):
        deliver_due(WEBHOOKS)
    assert target.requests == []
    [entry] = WebhookDelivery.objects.filter(action=action)
    assert entry.error.startswith("callback refused:") and entry.status_code is None


def test_the_delivery_log_is_read_only_in_the_admin(client, admin_user, agent, target):
    action = propose(agent, f"{target.url}/hook")
    deliver_due(WEBHOOKS)
    entry = WebhookDelivery.objects.get(action=action)
    client.force_login(admin_user)
    page = client.get("/admin/approvals/webhookdelivery/")
    assert page.status_code == 200 and "action.pending" in page.content.decode()
    assert client.get(f"/admin/approvals/webhookdelivery/{entry.pk}/change/").status_code == 200  # viewable
    assert client.get("/admin/approvals/webhookdelivery/add/").status_code == 403
    client.post(f"/admin/approvals/webhookdelivery/{entry.pk}/change/", {"status_code": 500})
    client.post(f"/admin/approvals/webhookdelivery/{entry.pk}/delete/", {"post": "yes"})
    assert WebhookDelivery.objects.get(pk=entry.pk).status_code == 200
