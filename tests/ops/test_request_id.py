"""Structured logs with a request id that follows one action from the web request into the worker.

The id is accepted from (or made for) each request, answered in ``X-Request-ID``,
written on every JSON log line and on every audit event of the request, and
carried by Celery to the tasks it causes. The beat checkpoint task's log line
is itself a checkpoint ``verify_audit`` accepts.
"""

from __future__ import annotations

import io
import json
import logging
import re
import uuid

import httpx
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.test import Client

from approvals.models import ActionRequest, ActionStatus
from audit.chain import verify_chain
from audit.models import AuditEvent
from config.logging import JsonFormatter
from config.request_id import bind_request_id, reset_request_id
from tests import factories
from tests.support.servers import wait_until


def json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            lines.append(doc)
    return lines


def lines_with(log_text: str, request_id: str) -> list[dict]:
    return [line for line in json_lines(log_text) if line.get("request_id") == request_id]


def unique_id() -> str:
    return f"test-{uuid.uuid4().hex[:16]}"


# --- in the web process --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_request_id_is_made_accepted_or_replaced(reviewer):
    client = Client()
    client.force_login(reviewer)
    made = client.get("/")["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert client.get("/").headers["X-Request-ID"] != made  # one per request

    assert client.get("/", HTTP_X_REQUEST_ID="lb-7f3a.2:9")["X-Request-ID"] == "lb-7f3a.2:9"
    for hostile in ("a b", "x" * 65, "id\nX-Injected: 1", '"}{"level":"CRITICAL'):
        answered = client.get("/", HTTP_X_REQUEST_ID=hostile)["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", answered), hostile


@pytest.mark.django_db
def test_error_pages_carry_it_too(agent_api):
    response = agent_api.get(f"/api/v1/actions/{uuid.uuid4()}", HTTP_X_REQUEST_ID="trace-404")
    assert response.status_code == 404 and response["X-Request-ID"] == "trace-404"


def test_log_lines_are_json_with_the_request_id_and_extras():
    record = logging.LogRecord(
        "approvals.outbox.dispatcher", logging.WARNING, __file__, 1, "outbox %s #%s failed", ("push", 7), None
    )
    record.attempt = 3
    record.request = object()  # Django's request objects are never written (their repr carries the query string)
    token = bind_request_id("trace-abc")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        reset_request_id(token)
    assert line["message"] == "outbox push #7 failed"
    assert (line["level"], line["logger"], line["request_id"], line["attempt"]) == (
        "WARNING",
        "approvals.outbox.dispatcher",
        "trace-abc",
        3,
    )
    assert "request" not in line and line["ts"].endswith("+00:00")

    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "crashed", (), sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert "request_id" not in line and "ValueError: boom" in line["exc"]


@pytest.mark.django_db
def test_audit_events_carry_the_request_id_and_still_verify(agent, reviewer):
    action = factories.propose(agent)
    client = Client()
    client.force_login(reviewer)
    response = client.post(f"/actions/{action.id}/approve", {"comment": "ok"}, HTTP_X_REQUEST_ID="approve-123")
    assert response["X-Request-ID"] == "approve-123"
    events = AuditEvent.objects.filter(action_id=action.id, verb__in=["action.reviewed", "action.approved"])
    assert {e.request_id for e in events} == {"approve-123"}
    proposed = AuditEvent.objects.get(action_id=action.id, verb="action.proposed")
    assert proposed.request_id == ""  # written outside any request: nothing to name
    checked, broken = verify_chain(AuditEvent.objects.order_by("seq"))
    assert broken is None and checked == AuditEvent.objects.count()


@pytest.mark.django_db
def test_the_staff_page_shows_it(agent, reviewer):
    from django.contrib.auth.models import User

    action = factories.propose(agent)
    client = Client()
    client.force_login(reviewer)
    client.post(f"/actions/{action.id}/approve", HTTP_X_REQUEST_ID="approve-456")
    staff = Client()
    staff.force_login(User.objects.create_user("ada", is_staff=True))
    assert "request approve-456" in staff.get("/audit", {"action": str(action.id)}).content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_web_server_logs_json_lines_and_audits_with_the_request_id(web_server):
    """Through uvicorn (ASGI): the id reaches the sync view's thread, its audit event and the log."""
    request_id = unique_id()
    username = f"probe-{request_id}"[:150]
    with httpx.Client(base_url=web_server.url, timeout=10) as http:
        page = http.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        response = http.post(
            "/accounts/login/",
            data={"csrfmiddlewaretoken": token, "username": username, "password": "wrong-password"},
            headers={"X-Request-ID": request_id, "Referer": f"{web_server.url}/accounts/login/"},
        )
    assert response.status_code == 200 and response.headers["X-Request-ID"] == request_id

    [failed] = AuditEvent.objects.filter(verb="user.login_failed", object_id=username[:64])
    assert failed.request_id == request_id
    lines = wait_until(lambda: lines_with(web_server.log(), request_id), timeout=10, message="the access log line")
    assert lines[-1]["logger"] == "countersign.request"
    assert (lines[-1]["method"], lines[-1]["path"], lines[-1]["status"]) == ("POST", "/accounts/login/", 200)
    assert "wrong-password" not in web_server.log()


# --- into the worker --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_one_request_id_follows_an_approval_into_the_worker(agent, reviewer, credential, target, celery_worker):
    action = factories.propose(agent, "http.request", {"credential": "internal-api", "method": "POST", "path": "/v1/x"})
    request_id = unique_id()
    client = Client()
    client.force_login(reviewer)
    response = client.post(f"/actions/{action.id}/approve", {"comment": "go"}, HTTP_X_REQUEST_ID=request_id)
    assert response.status_code == 302 and response["X-Request-ID"] == request_id

    wait_until(
        lambda: ActionRequest.objects.get(id=action.id).status == ActionStatus.SUCCEEDED,
        timeout=20,
        message="the worker to execute the action",
    )
    # The audit trail: the web approval and the worker's execution share the id.
    by_verb = dict(AuditEvent.objects.filter(action_id=action.id).values_list("verb", "request_id"))
    assert by_verb["action.approved"] == by_verb["execution.started"] == by_verb["execution.succeeded"] == request_id

    # The worker's log: its task lines carry it.
    lines = wait_until(
        lambda: [
            line
            for line in lines_with(celery_worker.log(), request_id)
            if line.get("task") == "approvals.execute_action" and line["message"].endswith("finished: SUCCESS")
        ],
        timeout=10,
        message="the worker's log line for the task",
    )
    assert lines[0]["logger"] == "countersign.task" and lines[0]["level"] == "INFO"


@pytest.mark.django_db(transaction=True)
def test_the_beat_checkpoint_is_a_log_line_verify_audit_accepts(agent, celery_worker, tmp_path):
    from config.celery_app import app

    for _ in range(3):
        factories.propose(agent)
    head = AuditEvent.objects.order_by("-seq").first()

    request_id = unique_id()
    token = bind_request_id(request_id)
    try:
        app.send_task("approvals.audit_checkpoint")
    finally:
        reset_request_id(token)
    lines = wait_until(
        lambda: [line for line in lines_with(celery_worker.log(), request_id) if "checkpoint" in line],
        timeout=15,
        message="the checkpoint log line",
    )
    checkpoint = lines[0]["checkpoint"]
    assert (checkpoint["seq"], checkpoint["hash"]) == (head.seq, head.hash)
    saved = tmp_path / "worker-checkpoints.log"
    saved.write_text("\n".join(json.dumps(line) for line in lines) + "\n")

    out = io.StringIO()
    call_command("verify_audit", "--from-checkpoint", str(saved), stdout=out)
    assert f"the chain reaches #{head.seq}" in out.getvalue()

    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(f"DELETE FROM {table} WHERE seq = %s", [head.seq])
    with pytest.raises(CommandError, match=rf"truncated: the chain ends at event #{head.seq - 1}"):
        call_command("verify_audit", "--from-checkpoint", str(saved))
