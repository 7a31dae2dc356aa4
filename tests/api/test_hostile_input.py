"""Hostile input on the agent API: each gets a clear 4xx and leaves nothing behind."""

from __future__ import annotations

import contextlib
import json
import select
import socket

import httpx
import pytest
from django.test import override_settings

from approvals.models import ActionRequest
from audit.models import AuditEvent
from tests.api.test_api import assert_problem
from tests.conftest import propose_body

pytestmark = pytest.mark.django_db


def refused(agent_api, status: int, *keys: str, **overrides) -> dict:
    body = assert_problem(agent_api.post("/api/v1/actions", propose_body(**overrides), format="json"), status, *keys)
    assert not ActionRequest.objects.exists()
    assert not AuditEvent.objects.filter(verb="action.proposed").exists()
    return body


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/admin",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://172.16.5.5/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",
        "http://user:pw@example.com/hook",
        "http://no-such-host.invalid/hook",
        "gopher://example.com/",
        "file:///etc/passwd",
    ],
)
def test_callback_urls_into_private_networks_are_refused(agent_api, url):
    refused(agent_api, 400, "callback_url", callback_url=url)


@override_settings(COUNTERSIGN_CALLBACK_ALLOWED_NETWORKS=["127.0.0.0/8"])
def test_an_allow_listed_network_is_accepted(agent_api):
    response = agent_api.post("/api/v1/actions", propose_body(callback_url="http://127.0.0.1:9/hook"), format="json")
    assert response.status_code == 201, response.content


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("summary", "x" * 100_000),
        ("action_type", "x" * 100_000),
        ("on_behalf_of", "x" * 100_000),
        ("idempotency_key", "x" * 100_000),
        ("callback_url", "https://example.com/" + "x" * 100_000),
        ("expires_in", -1),
        ("expires_in", 0),
        ("expires_in", 10**30),
        ("expires_in", "soon"),
        ("expires_in", 3.5),
        ("summary", ""),
        ("summary", None),
        ("params", None),
        ("context", ["not", "an", "object"]),
        ("on_behalf_of", {"email": "x"}),
    ],
)
def test_absurd_field_values_are_400_naming_the_field(agent_api, field, value):
    refused(agent_api, 400, field, **{field: value})


def test_huge_strings_in_params_and_context_stay_within_limits(agent_api):
    refused(agent_api, 400, "context", context={"reasoning": "x" * 70_000})
    refused(agent_api, 413, params={"text": "x" * 300_000})


def test_a_header_idempotency_key_that_is_too_long_is_refused(agent_api):
    response = agent_api.post("/api/v1/actions", propose_body(), format="json", HTTP_IDEMPOTENCY_KEY="k" * 1000)
    assert_problem(response, 400, "idempotency_key")
    assert not ActionRequest.objects.exists()


# --- JSON values are JSON values ---------------------------------------------------------------------------


def test_null_is_a_value_wherever_any_value_is_allowed(agent_api, reviewer_api, credential):
    """``send_email(cc=None)`` and friends: null is a JSON value, stored as null."""
    created = agent_api.post(
        "/api/v1/actions",
        propose_body(params={"command": "restart", "cc": None}, context={"source": None, "links": [None]}),
        format="json",
    )
    assert created.status_code == 201, created.content
    action = ActionRequest.objects.get(id=created.json()["id"])
    assert action.params["cc"] is None and action.context["source"] is None
    http = agent_api.post(
        "/api/v1/actions",
        propose_body(
            action_type="http.request",
            params={"credential": "internal-api", "method": "POST", "path": "/v1/x", "json": None},
        ),
        format="json",
    )
    assert http.status_code == 201, http.content
    approved = reviewer_api.post(
        f"/api/v1/actions/{action.id}/approve", {"params": {"command": "restart", "cc": None}}, format="json"
    )
    assert approved.status_code == 200, approved.content


def test_the_schema_says_null_is_accepted_in_free_form_values(reviewer_api):
    schema = reviewer_api.get("/api/schema/", {"format": "json"}).json()["components"]["schemas"]
    for name, fields in (("ProposalInputRequest", ("params", "context")), ("ApproveInputRequest", ("params",))):
        for field in fields:
            assert schema[name]["properties"][field]["additionalProperties"].get("nullable") is True, (name, field)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"action_type": "decision.only", "summary": "\\ud800", "params": {}}',
        b'{"action_type": "decision.only", "summary": "x", "params": {"k": "a\\u0000b"}}',
        b'{"action_type": "decision.only", "summary": "x", "params": {"a\\u0000": 1}}',
        b'{"action_type": "decision.only", "summary": "x", "params": {"\\udfff": 1}}',
        b"[" * 5000 + b"]" * 5000,
        b'{"action_type": "decision.only", "summary": "x", "params": ' + b'{"a":' * 40 + b"1" + b"}" * 41,
        b'{"summary": "\xed\xa0\x80"}',
        b'{"action_type": "decision.only", "summary": "x", "params": {"n": 1e999}}',
        b'{"action_type": "decision.only", "summary": "x", "params": {"n": 1' + b"0" * 5000 + b"}}",
    ],
    ids=[
        "surrogate",
        "nul-value",
        "nul-key",
        "low-surrogate-key",
        "deep-array",
        "deep-params",
        "raw-surrogate",
        "infinite-float",
        "5000-digit-int",
    ],
)
def test_unstorable_or_deep_json_is_a_400(agent_api, raw):
    response = agent_api.generic("POST", "/api/v1/actions", raw, content_type="application/json")
    assert_problem(response, 400)
    assert not ActionRequest.objects.exists()


def test_reviewer_pages_refuse_deep_or_unstorable_json_readably(reviewer, agent_api):
    from django.test import Client

    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    browser = Client()
    browser.force_login(reviewer)
    deep = "[" * 2000 + "]" * 2000
    page = browser.get("/policies", {"agent": "helper-bot", "action_type": "decision.only", "params": deep})
    assert page.status_code == 200 and "nested deeper than 32 levels" in page.content.decode()
    check = browser.post(f"/actions/{action_id}/check-params", {"params": deep}).json()
    assert check["ok"] is False and "nested deeper" in check["errors"]["params"][0]
    approve = browser.post(f"/actions/{action_id}/approve", {"params": '{"command": "a\\u0000"}'}, follow=True)
    assert "NUL" in approve.content.decode()
    assert ActionRequest.objects.get(id=action_id).status == "pending"
    assert browser.get("/history", {"before": "2026-01-01T00:00:00+00:00|not-a-uuid"}).status_code == 302
    for query in ({"agent": "\x00"}, {"q": "a\x00b"}, {"on_behalf_of": "\x00"}, {"after": "W1tbWw"}):
        assert browser.get("/", query).status_code in (200, 302)


def test_the_api_refuses_a_cursor_it_did_not_issue_before_the_database(agent_api):
    import base64

    for position in ("notadate", "2026-01-01T00:00:00", "\x00", "9" * 300):
        cursor = base64.b64encode(f"p={position}".encode()).decode()
        assert_problem(agent_api.get("/api/v1/actions", {"cursor": cursor}), 404)
    assert_problem(agent_api.get("/api/v1/actions", {"cursor": "x" * 5000}), 404)


# --- size limits before reading, through the real server -------------------------------------------------------


def _raw_request(url: str, head: str, body: bytes = b"") -> tuple[socket.socket, bytes]:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=20)
    sock.sendall(head.encode() + body)
    return sock, b""


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.mark.django_db(transaction=True)
def test_a_declared_length_over_the_limit_is_refused_before_reading(web_server):
    """No credentials, a gigabyte announced and not a byte of it sent: the 413 comes at once, and the connection
    is closed (nothing after it is read)."""
    for path, content_type, limit in (
        ("/api/v1/actions", "application/problem+json", "256 KiB"),
        ("/humanlayer/v1/function_calls", "application/json", "256 KiB"),
        ("/accounts/login/", "text/html; charset=utf-8", "1024 KiB"),
        ("/slack/interactivity", "text/html; charset=utf-8", "1024 KiB"),
    ):
        sock, _ = _raw_request(
            web_server.url,
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {1 << 30}\r\n\r\n",
        )
        with sock:
            answer = _read_response(sock)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413"), (path, answer[:200])
        headers = head.decode().lower()
        assert f"content-type: {content_type}" in headers and "connection: close" in headers, (path, headers)
        assert limit in body.decode()


@pytest.mark.django_db(transaction=True)
def test_a_chunked_gigabyte_is_refused_within_the_first_megabytes(web_server):
    """A 1 GiB chunked upload, without credentials: the server stops reading once the body passes 256 KiB and
    answers 413; the sender gets no further than the socket buffers let it."""
    sock, _ = _raw_request(
        web_server.url,
        "POST /api/v1/actions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n",
    )
    piece = b"x" * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    sent, answer = 0, b""
    sock.settimeout(5)
    with sock:
        while sent < (1 << 30):
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                answer = _read_response(sock)
                break
            try:
                sent += sock.send(chunk)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                answer = _read_response(sock)
                break
    # 256 KiB read by the server; the rest is what loopback's socket buffers hold (about 3 MB here).
    assert sent < 8 * 1024 * 1024, f"{sent} bytes were taken in before the refusal"
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"application/problem+json" in answer


@pytest.mark.django_db(transaction=True)
def test_a_chunked_proposal_within_the_limit_is_read(web_server, agent_key):
    body = json.dumps(propose_body(params={"command": "restart", "note": "y" * 100_000})).encode()

    def pieces():
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = httpx.post(
        f"{web_server.url}/api/v1/actions",
        content=pieces(),  # a generator: httpx sends it chunked, with no Content-Length
        headers={"Authorization": f"Bearer {agent_key}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    assert ActionRequest.objects.get(id=response.json()["id"]).params["note"] == "y" * 100_000


def test_bodies_within_the_limits_stay_in_memory(settings):
    """Django spills a body to a temporary file past FILE_UPLOAD_MAX_MEMORY_SIZE; the guard passes it nothing
    larger, so no request body is ever written to disk."""
    from approvals.web.middleware import body_limit

    for path in ("/api/v1/actions", "/humanlayer/v1/function_calls", "/accounts/login/", "/slack/interactivity"):
        assert body_limit(path) <= settings.FILE_UPLOAD_MAX_MEMORY_SIZE


def test_server_errors_and_strays_answer_in_each_parts_dialect(rf):
    """A 500 (whatever caused it) and the handlers Django calls itself speak the dialect of the path."""
    from approvals.web import ops

    for path, content_type in (
        ("/api/v1/actions", "application/problem+json"),
        ("/humanlayer/v1/function_calls", "application/json"),
        ("/", "text/html; charset=utf-8"),
    ):
        request = rf.post(path)
        for response in (ops.server_error(request), ops.bad_request(request), ops.csrf_failure(request)):
            assert response["Content-Type"] == content_type, (path, response.status_code)
            assert response.status_code in (500, 400, 403)
    from django.test import Client

    stray = Client().post("/humanlayer/elsewhere", data=b"{}", content_type="application/json")
    assert stray.status_code in (403, 404) and stray["Content-Type"] == "application/json"
