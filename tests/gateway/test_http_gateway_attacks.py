"""What an agent sends cannot choose another credential, leave the credential's base URL or smuggle headers to
the target: every attempt, sent byte for byte over a raw connection to a live Countersign, is refused with a
problem, leaves nothing at the target and no action, and is in the audit log (``gateway.refused``)."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest
from django.test import override_settings

from approvals.errors import InvalidInput
from approvals.models import ActionRequest
from approvals.services import gateway
from approvals.services.credentials import create_credential
from audit.models import AuditEvent
from tests.conftest import TARGET_SECRET
from tests.factories import CLI

pytestmark = pytest.mark.django_db(transaction=True)


def raw_call(base_url: str, method: str, target: str, headers: list[tuple[str, str]], body: bytes = b""):
    """One request exactly as written: the path unnormalised, headers repeated as given."""
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        if not any(name.lower() == "host" for name, _ in headers):
            conn.putheader("Host", url.netloc)
        for name, value in headers:
            conn.putheader(name, value)
        if body:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def assert_refused_and_audited(status, headers, data, target, *, code=400, reason=""):
    assert status == code, data
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(data)["status"] == code
    assert target.requests == [], "nothing may reach the target"
    assert not ActionRequest.objects.exists()
    event = AuditEvent.objects.filter(verb="gateway.refused").get()
    assert event.agent_name == "gateway-bot"
    assert reason.lower() in event.data["reason"].lower()


TRAVERSALS = [
    ("/gateway/internal-api/../payroll", "'.' or '..'"),
    ("/gateway/internal-api/tickets/../../admin", "'.' or '..'"),
    ("/gateway/internal-api/%2e%2e/admin", "'.' or '..'"),
    ("/gateway/internal-api/tickets/%2E%2E/%2e%2e/admin", "'.' or '..'"),
    ("/gateway/internal-api/.%2e/admin", "'.' or '..'"),
    ("/gateway/internal-api/a%2f..%2fadmin", "encoded"),
    ("/gateway/internal-api/a%2F..%2Fadmin", "encoded"),
    ("/gateway/internal-api/a%5c..%5cadmin", "encoded"),
    ("/gateway/internal-api/%252e%252e/admin", "encoded"),
    ("/gateway/internal-api/a%00b", "encoded"),
    ("/gateway/internal-api/a\\..\\admin", "backslash"),
    ("/gateway/internal-api//evil.example/x", "'//'"),
    ("/gateway/internal-api/http://evil.example/x", "'//'"),
    ("/gateway/internal%2Dapi/x", "plain name"),
    ("/gateway/internal-api@evil.example/x", "plain name"),
    ("/gateway/..%2Fpayroll-api/x", "plain name"),
]


@pytest.mark.parametrize(("path", "reason"), TRAVERSALS)
def test_no_path_leaves_the_credentials_base_url(
    web_server, gw_key, credential, target, reads_auto_approved, path, reason
):
    status, headers, data = raw_call(web_server.url, "GET", path, [("Authorization", f"Bearer {gw_key}")])
    assert_refused_and_audited(status, headers, data, target, reason=reason)


def test_a_credential_under_a_base_path_is_not_left_either(web_server, gw_key, target, reads_auto_approved):
    create_credential(
        name="internal-api", kind="http_bearer", secret=TARGET_SECRET, scope={"base_url": f"{target.url}/v2"}, actor=CLI
    )
    status, _, data = raw_call(
        web_server.url, "GET", "/gateway/internal-api/tickets", [("Authorization", f"Bearer {gw_key}")]
    )
    assert status == 200, data
    assert [r.path for r in target.requests] == ["/v2/tickets"]


SMUGGLED = [
    [("X-Forwarded-For", "10.0.0.1")],
    [("X-Forwarded-Host", "evil.example")],
    [("X-Forwarded-Proto", "https")],
    [("Forwarded", "for=10.0.0.1;host=evil.example")],
    [("X-Real-IP", "10.0.0.1")],
    [("Cookie", "session=stolen")],
    [("Proxy-Authorization", "Basic c3RvbGVu")],
    [("Authorization", f"Bearer {TARGET_SECRET}")],  # a second Authorization after the agent's key
    [("Host", "evil.example")],
    [("Connection", "close, X-Api-Key")],
    [("X-Api-Key", "stolen")],
    [("X-HTTP-Method-Override", "DELETE")],
    [("Idempotency-Key", "chosen-by-the-agent")],
    [("Via", "1.1 somewhere")],
    [("TE", "trailers")],
    [("Upgrade", "websocket")],
]


@pytest.mark.parametrize("extra", SMUGGLED, ids=[pairs[0][0] for pairs in SMUGGLED])
def test_no_header_is_smuggled_to_the_target(web_server, gw_key, credential, target, reads_auto_approved, extra):
    headers = [("Authorization", f"Bearer {gw_key}"), *extra]  # with Host: the only Host, another site's
    status, response_headers, data = raw_call(web_server.url, "GET", "/gateway/internal-api/tickets", headers)
    assert_refused_and_audited(status, response_headers, data, target, reason=extra[0][0].split("-")[0].lower())


def test_a_second_host_header_is_refused(web_server, gw_key, credential, target, reads_auto_approved):
    netloc = urlsplit(web_server.url).netloc
    headers = [("Host", netloc), ("Authorization", f"Bearer {gw_key}"), ("Host", "evil.example")]
    status, response_headers, data = raw_call(web_server.url, "GET", "/gateway/internal-api/tickets", headers)
    assert_refused_and_audited(status, response_headers, data, target)


def test_the_credentials_own_header_is_refused(web_server, gw_key, target, reads_auto_approved):
    create_credential(
        name="internal-api",
        kind="http_header",
        secret=TARGET_SECRET,
        scope={"base_url": target.url, "header": "X-Service-Token"},
        actor=CLI,
    )
    headers = [("Authorization", f"Bearer {gw_key}"), ("X-Service-Token", "chosen-by-the-agent")]
    status, response_headers, data = raw_call(web_server.url, "GET", "/gateway/internal-api/tickets", headers)
    assert_refused_and_audited(status, response_headers, data, target, reason="x-service-token")


def test_only_allow_listed_headers_reach_the_target(web_server, gw_key, credential, target, reads_auto_approved):
    headers = [
        ("Authorization", f"Bearer {gw_key}"),
        ("Accept", "application/json"),
        ("If-None-Match", '"v6"'),
        ("User-Agent", "agent-ua/1.0"),
        ("X-Debug", "1"),
        ("Connection", "close"),
    ]
    status, _response_headers, data = raw_call(web_server.url, "GET", "/gateway/internal-api/tickets", headers)
    assert status == 200, data
    [seen] = target.requests
    sent = {k.lower(): v for k, v in seen.headers.items()}
    assert sent["accept"] == "application/json" and sent["if-none-match"] == '"v6"'
    assert sent["authorization"] == f"Bearer {TARGET_SECRET}"
    assert "x-debug" not in sent and sent["user-agent"] != "agent-ua/1.0"
    assert ActionRequest.objects.get().params["headers"] == {"accept": "application/json", "if-none-match": '"v6"'}


# --- what the gateway does not carry -----------------------------------------------------------------------------


def test_streaming_and_oversized_bodies_are_refused(web_server, gw_key, credential, target):
    auth = ("Authorization", f"Bearer {gw_key}")
    url = urlsplit(web_server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.request(
        "POST", "/gateway/internal-api/upload", body=iter([b'{"a":', b"1}"]), headers=dict([auth]), encode_chunked=True
    )
    chunked = conn.getresponse()
    assert chunked.status == 411 and chunked.getheader("content-type") == "application/problem+json"
    conn.close()

    big = b'{"data": "' + b"x" * (300 * 1024) + b'"}'
    status, headers, data = raw_call(
        web_server.url, "POST", "/gateway/internal-api/upload", [auth, ("Content-Type", "application/json")], big
    )
    assert status == 413 and json.loads(data)["status"] == 413

    status, _, data = raw_call(
        web_server.url, "GET", "/gateway/internal-api/events", [auth, ("Accept", "text/event-stream")]
    )
    assert status == 406
    status, _, data = raw_call(
        web_server.url,
        "POST",
        "/gateway/internal-api/upload",
        [auth, ("Content-Type", "multipart/form-data; boundary=x")],
        b"--x\r\n\r\nhi\r\n--x--\r\n",
    )
    assert status == 415
    status, headers, data = raw_call(web_server.url, "OPTIONS", "/gateway/internal-api/x", [auth])
    assert status == 405 and "GET" in headers["allow"]
    status, _, data = raw_call(
        web_server.url, "POST", "/gateway/internal-api/x", [auth, ("Content-Type", "application/json")], b'{"a": '
    )
    assert status == 400
    status, _, data = raw_call(web_server.url, "GET", "/gateway/internal-api/x", [auth, ("Countersign-Wait", "9999")])
    assert status == 400
    assert target.requests == [] and not ActionRequest.objects.exists()


def test_a_form_body_passes_as_form_fields(web_server, gw_key, credential, target, reviewer, celery_worker):
    status, _headers, _data = raw_call(
        web_server.url,
        "POST",
        "/gateway/internal-api/tickets",
        [
            ("Authorization", f"Bearer {gw_key}"),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Countersign-Wait", "0"),
        ],
        b"title=Disk+full&priority=high",
    )
    assert status == 202
    action = ActionRequest.objects.get()
    assert action.params["form"] == {"title": "Disk full", "priority": "high"}


def test_a_nul_in_the_query_is_a_problem_and_reaches_nothing(web_server, gw_key, credential, target):
    status, headers, data = raw_call(
        web_server.url, "GET", "/gateway/internal-api/tickets?q=a%00b", [("Authorization", f"Bearer {gw_key}")]
    )
    assert status == 400 and headers["content-type"] == "application/problem+json", data
    assert "NUL" in json.loads(data)["detail"]
    assert target.requests == [] and not ActionRequest.objects.exists()


# --- the service on its own -------------------------------------------------------------------------------------


@override_settings(COUNTERSIGN_GATEWAY_PROXY_HEADERS=["x-forwarded-for", "x-forwarded-proto"])
def test_headers_the_deployments_proxy_adds_are_dropped_not_refused(gw_agent, credential):
    call = gateway.GatewayCall(
        credential="internal-api",
        method="GET",
        path="/tickets",
        query_string="",
        headers=(
            ("host", "127.0.0.1"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("accept", "*/*"),
        ),
    )
    assert gateway.forwarded_headers(gw_agent, call, credential) == {"accept": "*/*"}
    smuggled = gateway.GatewayCall(**{**call.__dict__, "headers": (("x-forwarded-host", "evil.example"),)})
    with pytest.raises(gateway.GatewayRefusal):
        gateway.forwarded_headers(gw_agent, smuggled, credential)


@pytest.mark.parametrize(
    "path",
    ["/a/b", "/a/b/", "/tickets/42", "/files/report%20final.txt", "/api/chat.postMessage", "/"],
)
def test_ordinary_paths_pass(path):
    assert gateway.path_refusal(path) == ""


@pytest.mark.parametrize(
    ("query", "form", "refusal"),
    [
        ("a=1&a=2", b"", "'a' is given twice"),  # the target could read either one
        ("a=1&b=2&a=3", b"", "'a' is given twice"),
        ("a=%00", b"", "NUL"),
        ("a%00=1", b"", "NUL"),
        ("a=%ff", b"", "not valid UTF-8"),
        ("", b"a=1&a=2", "'a' is given twice"),
        ("", b"a=x%00y", "NUL"),
        ("", b"a=%ff", "not valid UTF-8"),
        ("", b"\xff=1", "not valid UTF-8"),
    ],
)
def test_a_query_or_form_that_cannot_be_passed_as_it_was_read_is_refused(gw_agent, credential, query, form, refusal):
    """The same rules for the query string and a form body: each name once, UTF-8, no NUL."""
    call = gateway.GatewayCall(
        credential="internal-api",
        method="POST",
        path="/tickets",
        query_string=query,
        headers=(("host", "127.0.0.1"), ("content-type", "application/x-www-form-urlencoded")),
        body=form,
    )
    with pytest.raises(InvalidInput, match=refusal):
        gateway.proposal_for(gw_agent, call)
