"""Web security and operations: CSP without inline scripts, frame denial, CSRF, log-in throttling,
websocket origin checks, `check --deploy` with production settings, /metrics."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from asgiref.sync import async_to_sync
from django.test import Client, override_settings

from approvals.models import ActionRequest, ActionStatus
from config.asgi import application
from tests.conftest import propose_body
from tests.support.asgi import first_socket_answer
from tests.support.servers import ROOT

pytestmark = pytest.mark.django_db

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I)


@pytest.fixture
def browser(reviewer):
    client = Client()
    client.force_login(reviewer)
    return client


def test_pages_carry_a_csp_without_inline_scripts_and_deny_framing(browser, agent_api):
    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    pages = [(browser, p) for p in ["/", "/history", "/policies", f"/actions/{action_id}", "/api/docs/"]]
    for client, path in [*pages, (Client(), "/accounts/login/")]:
        response = client.get(path)
        assert response.status_code == 200, path
        csp = response["Content-Security-Policy"]
        assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp.split("script-src", 1)[1].split(";", 1)[0]
        assert response["X-Frame-Options"] == "DENY"
        assert not INLINE_SCRIPT.search(response.content.decode()), path


def test_the_api_docs_init_script_is_served_as_a_file():
    page = Client().get("/api/docs/").content.decode()
    script = re.search(r'<script src="(/api/docs/\?[^"]*script=[^"]*)"', page).group(1)
    response = Client().get(script.replace("&amp;", "&"))
    assert response.status_code == 200 and "SwaggerUIBundle" in response.content.decode()


def test_forms_need_csrf(reviewer, agent_api):
    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer)
    assert client.post(f"/actions/{action_id}/approve", {}).status_code == 403
    assert client.post(f"/actions/{action_id}/reject", {"reason": "x"}).status_code == 403
    assert ActionRequest.objects.get(id=action_id).status == ActionStatus.PENDING


def login(client, password):
    page = client.get("/accounts/login/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    return client.post("/accounts/login/", {"username": "rita", "password": password, "csrfmiddlewaretoken": token})


def test_failed_log_ins_slow_down_the_guessers_address_and_never_lock_the_reviewer(reviewer):
    from approvals.web import auth

    for address in ("10.0.0.9", "127.0.0.1"):
        auth.reset("rita", address)  # other tests' failures share the cache
    guesser = Client(enforce_csrf_checks=True, REMOTE_ADDR="10.0.0.9")
    assert "Please enter a correct username" in login(guesser, "wrong").content.decode()
    response = login(guesser, "pw-rita")  # even the right password waits now, from there
    assert response.status_code == 429 and "Try again in" in response.content.decode()
    assert "_auth_user_id" not in guesser.session
    rita = Client(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1")
    assert login(rita, "pw-rita").status_code == 302  # not from her own address
    auth.reset("rita", "10.0.0.9")


def test_a_correct_log_in_works(reviewer):
    client = Client(enforce_csrf_checks=True)
    assert login(client, "pw-rita").status_code == 302
    assert client.session["_auth_user_id"] == str(reviewer.pk)


@pytest.mark.django_db(transaction=True)  # the consumer reads the session from another thread
def test_websockets_from_another_origin_are_refused(reviewer):
    client = Client()
    client.force_login(reviewer)
    cookie = f"sessionid={client.cookies['sessionid'].value}"

    def first_answer(origin: str) -> str:
        return async_to_sync(first_socket_answer)(application, cookie, origin=origin)["type"]

    assert first_answer("https://evil.example") == "websocket.close"
    assert first_answer("http://localhost") == "websocket.accept"


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": "k9#Lq2@vX8!zR4$wN7^mT1&bY6*cH3(pJ5)sD0_fG2+eA8-uK4=iO9",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
        "REDIS_URL": "redis://127.0.0.1:6379/9",
        "ALLOWED_HOSTS": "countersign.example.com",
        "COUNTERSIGN_CREDENTIAL_KEYS": "yGJBSU187eXkGrQ0HtwNUkuxb3XfR5Rd7fKrKFBT3Ts=",
        "COUNTERSIGN_AUDIT_CHECKPOINT_KEY": "deploy-check-audit-checkpoint-key-0123456789",
        "COUNTERSIGN_VAR_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "config.settings.production"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr


def test_metrics_report_queue_decisions_executions_and_outbox(agent_api, reviewer_api):
    first = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    agent_api.post("/api/v1/actions", propose_body(summary="two"), format="json")
    reviewer_api.post(f"/api/v1/actions/{first}/reject", {"reason": "no"}, format="json")
    response = Client().get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert "countersign_queue_depth 1.0" in text
    assert 'countersign_decisions_total{outcome="rejected"} 1.0' in text
    assert 'countersign_executions_total{outcome="failed"} 0.0' in text
    assert 'countersign_time_to_decision_seconds{quantile="0.5"}' in text
    assert re.search(r'countersign_outbox_backlog\{kind="push"\} \d', text)
    assert "process_resident_memory_bytes" in text


@override_settings(COUNTERSIGN_METRICS_TOKEN="scrape-me")
def test_metrics_can_require_a_token():
    assert Client().get("/metrics").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me").status_code == 200
