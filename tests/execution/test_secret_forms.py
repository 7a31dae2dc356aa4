"""Secrets never reach an agent, in any form (issue 15, point 1).

The attack: an agent points an approved action at a target that echoes what it receives (an
httpbin-style endpoint, a debug page, an error page), in whatever encoding it likes: the
Authorization header as sent, its base64, the basic-auth password decoded, URL-encoded, hex,
JSON-escaped, wrapped in a JWT or a cookie. For every credential kind the action runs through the
real executor against such a target, and every API response, page, log line, webhook, Slack message
and ``export_audit`` line is searched for every form of the secret. The redactor itself is tested
against a table of forms first.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from django.core.management import call_command
from django.test import Client, override_settings

from agents.services import grant_capability
from approvals import services
from approvals.credentials.redaction import REDACTED
from approvals.models import ActionRequest, ActionStatus, Credential
from approvals.services.credentials import create_credential, update_settings
from tests import factories
from tests.conftest import CLI, token_client
from tests.support.echo_forms import encodings, forms_to_find, leaks
from tests.support.fake_slack import FakeSlack
from tests.support.servers import RecordingServer
from tests.support.slack_helpers import APPROVALS, BASE_URL, BOT_TOKEN, SIGNING_SECRET, deliver_due

# --- the whole loop, for every credential kind --------------------------------------------------------

ECHO_CHANNEL = "C0ECHO001"


def echo_forms(request) -> dict[str, str]:
    """Everything the request carried, each header value in every encoding, the basic password decoded."""
    values = dict(request.headers)
    auth = values.get("Authorization", "")
    if auth.startswith("Basic "):
        user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        values.update({"basic-user": user, "basic-password": password})
    out = {}
    for name, value in values.items():
        for encoding, form in encodings(value).items():
            out[f"{name} {encoding}"] = form
    # The whole header set inside a JWT-like token and a cookie: the secret at some base64 alignment.
    claims = base64.urlsafe_b64encode(json.dumps({"sub": "echo", "seen": values}).encode()).decode().rstrip("=")
    out["jwt"] = f"eyJhbGciOiJub25lIn0.{claims}."
    out["query"] = json.dumps(dict(parse_qsl(urlsplit(request.path).query)))
    out["body"] = request.body.decode("utf-8", "replace")
    return out


def echo_headers(request) -> dict[str, str]:
    auth = request.headers.get("Authorization") or request.headers.get("X-Api-Key") or ""
    return {
        "X-Echo-Authorization": auth,
        "Set-Cookie": "session=" + base64.b64encode(json.dumps(dict(request.headers)).encode()).decode(),
    }


class EchoSlack(FakeSlack):
    """Slack that accepts Countersign's bot and the action's bot, and echoes the action bot's token back."""

    action_token: str = ""

    def _auth_error(self, call):
        if call.authorization == f"Bearer {self.action_token}":
            return None
        return super()._auth_error(call)

    def _answer(self, request):
        answer = super()._answer(request)
        method = urlsplit(request.path).path.rsplit("/", 1)[-1]
        auth = request.headers.get("Authorization") or ""
        if answer is None or auth != f"Bearer {self.action_token}":
            return answer
        forms = encodings(auth)
        status, payload, headers = answer
        if method == "conversations.info" and payload.get("ok"):
            payload = {**payload, "channel": {**payload["channel"], "name": "echo " + " ".join(forms.values())}}
        if method == "conversations.replies" and payload.get("ok"):
            text = " | ".join(echo_forms(_Req(request)).values())
            payload = {**payload, "messages": [{**payload["messages"][0], "text": text[:3900]}]}
        if method == "chat.postMessage":
            # An error that quotes what it was sent (Slack truncates errors; Countersign keeps 200 characters).
            payload = {"ok": False, "error": f"invalid_auth:{forms['base64']}:{forms['hex'][:80]}"}
        return status, payload, headers


class _Req:
    """A BaseHTTPRequestHandler seen as tests.support.servers.RecordedRequest (headers, path, body)."""

    def __init__(self, request):
        self.headers, self.path, self.body = dict(request.headers), request.path, b""


KINDS = {
    "http_bearer": "bearer-7Qx9w2Lk-never-shown-anywhere",
    "http_basic": "svc-deployer:pa55/w0rd+Zr8-never-shown",
    "http_header": "hdr-key-5TgB8nM1-never-shown",
    "slack_bot": "xoxb-9911-8822-never-shown-to-agents",
    "scim_bearer": "scim-t0k3n-Hq4-never-shown-anywhere",
}


def wire_values(kind: str, secret: str) -> list[str]:
    """What the executor sent that is secret: the secret, the header value as sent, the basic password."""
    if kind == "http_basic":
        return [secret, secret.split(":", 1)[1], "Basic " + base64.b64encode(secret.encode()).decode()]
    if kind == "http_header":
        return [secret]
    return [secret, f"Bearer {secret}"]


def scim_target(target: RecordingServer) -> None:
    """A SCIM service on the echo target: group "eng" (displayName echoes the request), user alice."""
    members: list[dict] = []

    def groups(request):
        return {"Resources": [{"id": "g1"}], "totalResults": 1}

    def group(request):
        if request.method == "PATCH":
            members[:] = [{"value": "u1"}]
            return {}
        return {"id": "g1", "displayName": "eng " + " | ".join(echo_forms(request).values()), "members": members}

    def users(request):
        return {"Resources": [{"id": "u1", "userName": "alice"}], "totalResults": 1}

    target.resources.update({"/Groups": groups, "/Groups/g1": group, "/Users": users})


def proposal(kind: str, target: RecordingServer) -> dict:
    if kind == "slack_bot":
        return {"action_type": "slack.post_message", "params": {"channel": ECHO_CHANNEL, "text": "hello"}}
    if kind == "scim_bearer":
        scim_target(target)
        return {"action_type": "scim.group_membership", "params": {"group": "eng", "add": ["alice"]}}
    target.resources["/echo"] = echo_forms
    return {
        "action_type": "http.request",
        "params": {"method": "PUT", "path": "/echo", "query": {"q": "1"}, "json": {"x": 1}},
    }


@pytest.fixture
def echo_slack(db):
    with EchoSlack(token=BOT_TOKEN) as fake:
        fake.add_channel(APPROVALS, "approvals")
        fake.add_channel(ECHO_CHANNEL, "echo")
        fake.add_thread(ECHO_CHANNEL, "1700000000.000100", user="U0ALICE", text="thread")
        with override_settings(
            COUNTERSIGN_SLACK_API_URL=fake.url,
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            COUNTERSIGN_BASE_URL=BASE_URL,
            COUNTERSIGN_DEFAULT_NOTIFY=["slack:#approvals"],
            COUNTERSIGN_CALLBACK_ALLOWED_HOSTS=["127.0.0.1"],
        ):
            yield fake


@pytest.mark.django_db
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_an_echoing_target_gets_no_form_of_the_secret_to_anyone(
    kind,
    agent,
    agent_api,
    reviewer,
    second_reviewer,
    echo_slack,
    caplog,
):
    caplog.set_level(logging.INFO)
    secret = KINDS[kind]
    echo_slack.action_token = secret if kind == "slack_bot" else ""
    target, hooks = RecordingServer().start(), RecordingServer().start()
    target.response_headers = echo_headers
    try:
        scope = {"base_url": target.url} if kind != "slack_bot" else {}
        if kind == "http_header":
            scope["header"] = "X-Api-Key"
        # Everything visible and preview reads on: redaction alone must hold.
        create_credential(
            name="echo-cred",
            kind=kind,
            secret=secret,
            scope=scope,
            actor=CLI,
            allow_preview_reads=True,
            result_visibility=["status", "headers", "body"],
        )
        body = proposal(kind, target)
        grant_capability(agent=agent, action_type=body["action_type"], actor=CLI)
        body["params"]["credential"] = "echo-cred"
        body |= {"summary": f"echo probe ({kind})", "callback_url": f"{hooks.url}/hook"}
        body["on_behalf_of"] = "olivia@example.com"  # a known person (access changes must name one)

        responses: list[str] = []

        def keep(response):
            responses.append(response.content.decode())
            responses.extend(f"{k}: {v}" for k, v in response.items())
            return response

        created = keep(agent_api.post("/api/v1/actions", body, format="json"))
        assert created.status_code == 201, created.content
        action_id = created.json()["id"]
        deliver_due()  # the Slack request for approval, with its preview

        web, reviewer_api = Client(), token_client(reviewer)
        web.force_login(reviewer)
        keep(web.get(f"/actions/{action_id}"))
        keep(reviewer_api.get(f"/api/v1/actions/{action_id}/preview"))
        for approver in (reviewer, second_reviewer)[: ActionRequest.objects.get(id=action_id).required_approvals]:
            keep(token_client(approver).post(f"/api/v1/actions/{action_id}/approve", {}, format="json"))
        services.execute_action(action_id)  # what the worker runs: the real executor
        deliver_due()  # webhooks and the Slack thread's result

        action = ActionRequest.objects.get(id=action_id)
        assert action.status in (ActionStatus.SUCCEEDED, ActionStatus.FAILED), action.result
        keep(agent_api.get(f"/api/v1/actions/{action_id}"))
        keep(agent_api.get(f"/api/v1/actions/{action_id}/wait", {"timeout": "1"}))
        keep(agent_api.get("/api/v1/actions"))
        for page in (f"/actions/{action_id}", f"/actions/{action_id}/live", f"/actions/{action_id}/row", "/history"):
            keep(web.get(page))
        export = io.StringIO()
        call_command("export_audit", stdout=export)

        # The secret did reach the target, and the target echoed it back in every form: the search can find a leak.
        forms = forms_to_find(wire_values(kind, secret))
        if kind == "slack_bot":
            echoed = [json.dumps(c.params) for c in echo_slack.calls]
            assert any(c.authorization == f"Bearer {secret}" for c in echo_slack.calls)
            assert action.result["slack_error"].startswith("invalid_auth:")
        else:
            echoed = [json.dumps(echo_forms(r)) for r in target.requests]
            sent = [json.dumps(r.headers) for r in target.requests]
            assert sent and all(any(v in headers for v in wire_values(kind, secret)) for headers in sent)
            assert action.status == ActionStatus.SUCCEEDED, action.result
            assert any(form in "".join(echoed) for form in encodings(secret).values())

        slack_messages = [
            json.dumps({k: v for k, v in c.params.items() if k != "token"})
            for c in echo_slack.calls
            if c.authorization == f"Bearer {BOT_TOKEN}"
        ]
        assert slack_messages, "Countersign's Slack messages are searched"
        webhooks = [r.body.decode() for r in hooks.requests]
        assert webhooks, "the agent's webhooks are searched"
        places = {
            **{f"response {i}": text for i, text in enumerate(responses)},
            **{f"slack message {i}": text for i, text in enumerate(slack_messages)},
            **{f"webhook {i}": text for i, text in enumerate(webhooks)},
            "log": "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records),
            "audit export": export.getvalue(),
            "stored result": json.dumps(action.result),
        }
        assert leaks(places, forms) == []
        assert REDACTED in json.dumps(action.result) or kind == "slack_bot"
    finally:
        target.stop()
        hooks.stop()


# --- what a result shows ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_by_default_a_result_shows_status_and_body_but_no_headers(agent, reviewer, target):
    from approvals.models import Review

    target.response_headers = echo_headers
    target.resources["/v1/thing"] = {"ok": True}
    credential = create_credential(
        name="quiet-api", kind="http_bearer", secret="quiet-secret-123456", scope={"base_url": target.url}, actor=CLI
    )
    assert credential.result_visibility == ["status", "body"] and credential.allow_preview_reads is False

    def run() -> dict:
        action = factories.propose(
            agent,
            "http.request",
            {"credential": "quiet-api", "method": "GET", "path": "/v1/thing"},
            summary="read the thing",
        )
        services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
        services.execute_action(action.id)
        action.refresh_from_db()
        return action.result

    assert run() == {"status_code": 200, "body": {"ok": True}}
    update_settings(credential=credential, actor=CLI, result_visibility=["status", "headers"])
    shown = run()
    assert set(shown) == {"status_code", "headers"}
    assert shown["headers"]["x-echo-authorization"] == REDACTED
    assert "quiet-secret-123456" not in json.dumps(shown)


@pytest.mark.django_db
def test_a_crashing_executor_logs_a_trace_without_any_form_of_the_secret(
    agent, reviewer, credential, target, caplog, monkeypatch
):
    from approvals.action_types.http_request import HttpRequest
    from approvals.models import Review
    from tests.conftest import TARGET_SECRET

    def crash(self, params, client):
        sent = "Bearer " + TARGET_SECRET
        raise RuntimeError(f"boom {base64.b64encode(sent.encode()).decode()} {quote(TARGET_SECRET)}")

    monkeypatch.setattr(HttpRequest, "execute", crash)
    action = factories.propose(
        agent,
        "http.request",
        {"credential": credential.name, "method": "GET", "path": "/x"},
        summary="crash",
    )
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
    with caplog.at_level(logging.ERROR):
        assert services.execute_action(action.id) == ActionStatus.FAILED
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "executor crashed" in json.dumps(ActionRequest.objects.get(id=action.id).result)
    assert "boom [redacted] [redacted]" in logged
    assert leaks({"log": logged}, forms_to_find([TARGET_SECRET, f"Bearer {TARGET_SECRET}"])) == []


# --- how staff set what a credential allows ----------------------------------------------------------


@pytest.mark.django_db
def test_create_credential_command_stores_visibility_preview_reads_and_the_access_flags():
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stdin", io.StringIO("cmd-secret-value\n"))
        call_command(
            "create_credential",
            "idp-admin",
            "--kind",
            "http_bearer",
            "--base-url",
            "https://idp.internal/api",
            "--show",
            "status,headers",
            "--allow-preview-reads",
            "--access-control",
            "--min-risk",
            "high",
            stdout=out,
        )
    credential = Credential.objects.get(name="idp-admin")
    assert credential.result_visibility == ["status", "headers"]
    assert (credential.allow_preview_reads, credential.access_control, credential.min_risk) == (True, True, "high")
    assert "preview reads on" in out.getvalue() and "cmd-secret-value" not in out.getvalue()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stdin", io.StringIO("s\n"))
        with pytest.raises(Exception, match="--show"):
            call_command(
                "create_credential", "x", "--kind", "http_bearer", "--base-url", "https://a", "--show", "cookies"
            )
    assert not Credential.objects.filter(name="x").exists()


@pytest.mark.django_db
def test_the_admin_shows_and_edits_what_a_credential_allows(credential):
    from django.contrib.auth.models import User

    from audit.models import AuditEvent

    staff = User.objects.create_superuser("ada", "ada@example.com", "pw")
    browser = Client()
    browser.force_login(staff)
    page = browser.get(f"/admin/approvals/credential/{credential.pk}/change/").content.decode()
    for field in ("allow_preview_reads", "access_control", "min_risk", "result_visibility"):
        assert f'name="{field}"' in page
    response = browser.post(
        f"/admin/approvals/credential/{credential.pk}/change/",
        {
            "scope": json.dumps(credential.scope),
            "secret": "",
            "result_visibility": ["status"],
            "access_control": "on",
            "min_risk": "high",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    credential.refresh_from_db()
    assert credential.result_visibility == ["status"]
    assert (credential.allow_preview_reads, credential.access_control, credential.min_risk) == (False, True, "high")
    event = AuditEvent.objects.get(verb="credential.settings_changed")
    assert event.actor == "ada" and event.data["before"]["allow_preview_reads"] is True


@pytest.mark.django_db
def test_a_mail_server_echoing_countersigns_smtp_login_is_scrubbed(agent, reviewer, monkeypatch):
    import smtplib

    from approvals.action_types.email_send import OneMessageSender
    from approvals.models import Review

    password = "smtp-pa55word-never-shown"
    plain = base64.b64encode(f"\0mailer\0{password}".encode()).decode()  # what AUTH PLAIN sent

    def echoing_server(self):
        raise smtplib.SMTPResponseException(554, f"rejected; you sent AUTH PLAIN {plain} / {quote(password)}".encode())

    monkeypatch.setattr(OneMessageSender, "send", echoing_server)
    grant_capability(agent=agent, action_type="email.send", actor=CLI)
    with override_settings(EMAIL_HOST_USER="mailer", EMAIL_HOST_PASSWORD=password):
        action = factories.propose(
            agent,
            "email.send",
            {"to": ["ops@example.com"], "subject": "hi", "body": "hello"},
            summary="mail ops",
        )
        services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
        assert services.execute_action(action.id) == ActionStatus.FAILED
    result = json.dumps(ActionRequest.objects.get(id=action.id).result)
    assert "554" in result and REDACTED in result
    assert leaks({"result": result}, forms_to_find([password, f"\0mailer\0{password}"])) == []
