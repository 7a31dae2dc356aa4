"""Hostile input over every route, through a real uvicorn: never a 5xx, always the route's own dialect.

The routes are read from Django's URL resolver, so a route added later is attacked too. Each request is one row of
a table (route x credential x hostile input); a test collects every row that answered a 5xx or the wrong content
type and names them all. Dialects (approvals.web.http_errors): problem JSON under /api/, plain JSON under
/humanlayer/, an HTML page elsewhere (Slack's endpoint answers Slack in plain text).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from approvals.live.routing import origin_allowed
from approvals.models import ActionRequest, ReviewerToken
from tests import factories
from tests.conftest import ARTIFACTS
from tests.support.servers import start_web

pytestmark = pytest.mark.django_db(transaction=True)

NUL = "a%00b"
SURROGATE = "%ED%A0%80"  # U+D800 as UTF-8 bytes: no valid UTF-8 text contains it
HUGE = "9223372036854775808"  # 2**63: past PostgreSQL's bigint
DEEP = "[" * 2000 + "]" * 2000
BAD_CURSOR = base64.b64encode(b"p=notadate").decode()
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
QUERY_NAMES = (
    "cursor",
    "limit",
    "offset",
    "status",
    "agent",
    "q",
    "action_type",
    "on_behalf_of",
    "sort",
    "after",
    "before",
    "risk",
    "days",
    "timeout",
    "until",
    "params",
    "verb",
    "actor",
)
QUERY_VALUES = {
    "nul": "%00",
    "surrogate": SURROGATE,
    "huge": HUGE,
    "negative": "-" + HUGE,
    "float": "1e999",
    "deep": DEEP,
    "bad-cursor": BAD_CURSOR,
    "garbage-cursor": "%%%not-base64",
    "history-cursor": "2026-01-01T00:00:00+00:00|not-a-uuid",
}
BODIES: dict[str, tuple[bytes, str]] = {
    "not-json": (b"this is not json", "application/json"),
    "not-utf8": (b'{"summary": "\xff\xfe"}', "application/json"),
    "escaped-surrogate": (
        b'{"summary": "\\ud800", "params": {"k": "\\ud800"}, "reason": "\\ud800"}',
        "application/json",
    ),
    "escaped-nul": (b'{"summary": "a\\u0000b", "params": {"a\\u0000": 1}, "reason": "\\u0000"}', "application/json"),
    "deep": (DEEP.encode(), "application/json"),
    "deep-params": (json.dumps({"params": "x"}).replace('"x"', DEEP).encode(), "application/json"),
    "huge-ints": (
        json.dumps({"expires_in": 10**30, "limit": 10**30, "approved": 10**30, "params": {"n": 10**30}}).encode(),
        "application/json",
    ),
    "nan": (b'{"params": {"x": NaN}, "expires_in": Infinity}', "application/json"),
    "huge-float": (
        b'{"action_type": "decision.only", "summary": "s", "params": {"x": 1e999}, "kwargs": {"x": 1e999}}',
        "application/json",
    ),
    "array": (b"[1, 2, 3]", "application/json"),
    "string": (b'"just a string"', "application/json"),
    "null": (b"null", "application/json"),
    "text-plain": (b"action_type=decision.only", "text/plain"),
    "xml": (b"<?xml version='1.0'?><a/>", "application/xml"),
    "form-nul": (b"params=%00&reason=a%00b&comment=%00&payload=%00", "application/x-www-form-urlencoded"),
    "form-surrogate": (b"reason=%ED%A0%80&params=%ED%A0%80", "application/x-www-form-urlencoded"),
    "form-deep": (b"params=" + ("%5B" * 2000 + "%5D" * 2000).encode(), "application/x-www-form-urlencoded"),
    "multipart-junk": (b"--x\r\nnot really multipart", "multipart/form-data; boundary=x"),
    "no-content-type": (b'{"a": 1}', ""),
}


@dataclass(frozen=True)
class Route:
    template: str  # "/api/v1/actions/{action_id}"

    @property
    def dialect(self) -> str:
        if self.template.startswith("/api/"):
            return "api"
        if self.template.startswith("/humanlayer/"):
            return "humanlayer"
        if self.template.startswith("/slack/"):
            return "slack"
        return "page"

    @property
    def variables(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.template)

    def fill(self, **values: str) -> str:
        return self.template.format(**values)


def _walk(patterns, prefix: str = "") -> Iterator[str]:
    for entry in patterns:
        raw = str(entry.pattern)
        if isinstance(entry, URLResolver):
            if raw.startswith("admin/"):
                yield "/admin/"
                yield "/admin/login/"
                continue
            yield from _walk(entry.url_patterns, prefix + raw)
        elif isinstance(entry, URLPattern):
            if raw in ("^.*$", ""):  # a catch-all (HumanLayer's JSON 404) or the root
                yield "/" + prefix + ("no/such/endpoint" if raw == "^.*$" else "")
                continue
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", prefix + raw)
            yield "/" + path


def all_routes() -> list[Route]:
    return [Route(t) for t in dict.fromkeys(_walk(get_resolver().url_patterns))]


def test_the_table_covers_the_routes_that_matter():
    templates = {r.template for r in all_routes()}
    for expected in (
        "/api/v1/actions",
        "/api/v1/actions/{action_id}/wait",
        "/humanlayer/v1/function_calls/{call_id}",
        "/humanlayer/v1/agent/function_calls/{call_id}/respond",
        "/humanlayer/v1/agent/human_contacts/{call_id}/escalate_email",
        "/humanlayer/v1/agent/function_calls/pending",
        "/",
        "/policies",
        "/actions/{action_id}/check-params",
        "/slack/interactivity",
    ):
        assert expected in templates


# --- the server and who calls it ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(stack_env, tmp_path_factory):
    """A server of this module's own, with agent budgets out of the way: the table sends a few thousand requests
    with one key, and a 429 would hide what the view does with the input. A var/ of its own: a beat heartbeat
    another test's beat left in the repository's var/ would make /healthz/dependencies report beat down."""
    env = {
        **stack_env,
        "COUNTERSIGN_VAR_DIR": str(tmp_path_factory.mktemp("hostile-var")),
        "COUNTERSIGN_AGENT_REQUEST_RATE": "1000000/min",
        "COUNTERSIGN_AGENT_PROPOSAL_RATE": "1000000/min",
        # Slack configured, so its endpoint checks signatures (unconfigured, it answers 503 to everything).
        "SLACK_SIGNING_SECRET": "hostile-test-signing-secret",
    }
    web, url = start_web(env, ARTIFACTS / "logs", name="web-hostile")
    web.url = url
    yield web
    web.stop()


@dataclass
class Caller:
    name: str
    client: httpx.Client
    headers: dict[str, str]


@pytest.fixture
def world(server, agent, agent_key, reviewer):
    """An action, a HumanLayer call, and one caller per kind of credential."""
    action = factories.propose(agent)
    factories.propose(agent, params={"function": "f", "kwargs": {}}, idempotency_key="humanlayer:fc:call-1")
    _, token = ReviewerToken.issue(reviewer)
    django_client = Client()
    django_client.force_login(reviewer)
    session = django_client.cookies[settings.SESSION_COOKIE_NAME].value
    browser = httpx.Client(base_url=server.url, timeout=30, cookies={settings.SESSION_COOKIE_NAME: session})
    browser.get("/")  # sets the CSRF cookie the pages' forms carry
    csrf = browser.cookies.get("csrftoken", "")
    plain = httpx.Client(base_url=server.url, timeout=30)
    callers = {
        "api": [
            Caller("agent", plain, {"Authorization": f"Bearer {agent_key}"}),
            Caller("reviewer", plain, {"Authorization": f"Token {token}"}),
            Caller("anonymous", plain, {}),
        ],
        "humanlayer": [
            Caller("agent", plain, {"Authorization": f"Bearer {agent_key}"}),
            Caller("reviewer", plain, {"Authorization": f"Bearer {token}"}),
            Caller("anonymous", plain, {}),
        ],
        "page": [Caller("session", browser, {"X-CSRFToken": csrf}), Caller("anonymous", plain, {})],
        "slack": [Caller("anonymous", plain, {})],
    }
    yield {"action_id": str(action.id), "call_id": "call-1", "callers": callers}
    browser.close()
    plain.close()


def wrong_dialect(route: Route, response: httpx.Response) -> str:
    """ "" when the answer is in the route's dialect; otherwise what is wrong with it."""
    status, content_type = response.status_code, response.headers.get("content-type", "")
    if status >= 500:
        return f"{status} server error"
    if route.dialect == "humanlayer":
        ok = content_type == "application/json"
    elif route.dialect == "api":
        ok = content_type.startswith("application/problem+json") if status >= 400 else bool(content_type)
    elif route.dialect == "slack":
        ok = content_type.startswith(("text/plain", "text/html", "application/json"))
    else:
        ok = status < 400 or content_type.startswith("text/html")
    return "" if ok else f"{status} with content type {content_type!r}"


AUTHENTICATED = frozenset({"agent", "reviewer", "session"})


def attack(world, routes: list[Route], cases, *, callers: frozenset[str] | None = None) -> list[str]:
    """Send every (route, caller, case), ``callers`` only if given (Slack's endpoint has only the anonymous
    one); the failures, one line each. Sent from a few threads at once: a few thousand requests, each waiting on
    the server, and the server answers several at a time as it would in use."""
    requests = []
    for route in routes:
        for caller in world["callers"][route.dialect]:
            if callers is not None and caller.name not in callers and route.dialect != "slack":
                continue
            for label, method, url, body, content_type in cases(route):
                headers = dict(caller.headers)
                if content_type:
                    headers["Content-Type"] = content_type
                requests.append((route, caller, label, method, url, body, headers))

    def send(request) -> str:
        route, caller, label, method, url, body, headers = request
        try:
            response = caller.client.request(method, url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{method} {url[:80]} [{caller.name}, {label}]: {type(exc).__name__}"
        wrong = wrong_dialect(route, response)
        return f"{method} {url[:80]} [{caller.name}, {label}]: {wrong}" if wrong else ""

    with ThreadPoolExecutor(max_workers=6) as pool:
        return [failure for failure in pool.map(send, requests) if failure]


def assert_none(failures: list[str]) -> None:
    assert not failures, f"{len(failures)} hostile requests answered badly:\n" + "\n".join(failures[:60])


def plain_path(world, route: Route) -> str:
    return route.fill(**{name: world.get(name, "x") for name in route.variables})


def with_query(route: Route, url: str, query: str = "") -> str:
    """``url?query``; the long-poll is told not to wait (``timeout=0``) unless the query sets its own timeout."""
    if route.template.endswith("/wait") and "timeout=" not in query:
        query = "&".join(q for q in ("timeout=0", query) if q)
    return f"{url}?{query}" if query else url


# --- the table ------------------------------------------------------------------------------------------------


def test_every_method_on_every_route(world):
    def cases(route):
        url = with_query(route, plain_path(world, route))
        for method in METHODS:
            yield "method", method, url, b"", ""

    assert_none(attack(world, all_routes(), cases))


def test_hostile_path_ids_on_every_route(world):
    hostile_ids = {"nul": NUL, "surrogate": SURROGATE, "huge": HUGE, "dots": "..%2F..%2Fetc", "long": "c" * 5000}

    def cases(route):
        for label, value in hostile_ids.items():
            if route.variables:
                url = route.fill(**dict.fromkeys(route.variables, value))
            else:
                url = plain_path(world, route).rstrip("/") + "/" + value
            for method in ("GET", "POST"):
                yield label, method, url, b"{}", "application/json"

    assert_none(attack(world, all_routes(), cases))


def test_hostile_query_strings_on_every_route(world):
    def combined(route):
        base = plain_path(world, route)
        for label, value in QUERY_VALUES.items():
            if label != "deep":  # eighteen of those make a URL longer than any client sends
                query = "&".join(f"{name}={value}" for name in QUERY_NAMES)
                yield label, "GET", with_query(route, base, query), b"", ""

    def one_at_a_time(route):
        base = plain_path(world, route)
        for label, value in QUERY_VALUES.items():
            if label in ("nul", "surrogate"):
                continue  # refused before any view reads a name: the combined query says it all
            for name in ("cursor", "q", "agent", "params", "offset", "before", "after", "timeout", "limit"):
                yield f"{label}:{name}", "GET", with_query(route, base, f"{name}={value}"), b"", ""

    # Without credentials every route stops at authentication, whatever the query: the methods test covers that.
    routes = all_routes()
    failures = attack(world, routes, combined, callers=AUTHENTICATED)
    failures += attack(world, routes, one_at_a_time, callers=frozenset({"agent", "session"}))
    assert_none(failures)


def test_hostile_bodies_on_every_route(world):
    def cases(route):
        url = plain_path(world, route)
        for label, (body, content_type) in BODIES.items():
            yield label, "POST", url, body, content_type
        yield "put-not-json", "PUT", url, b"not json", "application/json"

    assert_none(attack(world, all_routes(), cases, callers=AUTHENTICATED))


def test_the_reported_requests_are_clean_4xx_in_their_dialect(world, server):
    """The requests issue 16 reported, each with the answer it now gets."""
    callers = {c.name: c for c in world["callers"]["api"]}
    hl = {c.name: c for c in world["callers"]["humanlayer"]}
    browser = world["callers"]["page"][0]
    agent, reviewer = callers["agent"], callers["reviewer"]

    def get(caller, url, **kw):
        return caller.client.get(url, headers=caller.headers, **kw)

    bad_cursor = get(agent, "/api/v1/actions", params={"cursor": BAD_CURSOR})
    assert bad_cursor.status_code == 404 and bad_cursor.headers["content-type"] == "application/problem+json"
    assert BAD_CURSOR not in server.log() and "notadate" not in server.log()  # the attacker's cursor is not logged

    for path in (
        "/humanlayer/v1/function_calls/a%00b",
        "/humanlayer/v1/contact_requests/a%00b",
        "/humanlayer/v1/agent/function_calls/a%00b/respond",
        "/humanlayer/v1/agent/human_contacts/a%00b/escalate_email",
    ):
        caller = hl["reviewer"] if "/agent/" in path else hl["agent"]
        method = "POST" if path.endswith(("respond", "escalate_email")) else "GET"
        response = caller.client.request(method, path, headers=caller.headers, json={})
        assert response.status_code == 400, (path, response.text)
        assert response.headers["content-type"] == "application/json" and response.json()["status"] == 400

    for kind in ("function_calls", "human_contacts"):
        response = get(hl["reviewer"], f"/humanlayer/v1/agent/{kind}/pending", params={"offset": HUGE})
        assert response.status_code == 400 and response.headers["content-type"] == "application/json"
        assert "offset" in response.json()["errors"]

    for url in ("/?agent=%00", "/?q=%00"):
        response = get(browser, url)
        assert response.status_code == 400 and response.headers["content-type"].startswith("text/html")
        assert "NUL" in response.text
    deep = get(browser, "/policies", params={"agent": "x", "action_type": "decision.only", "params": DEEP})
    assert deep.status_code == 200 and "nested deeper" in deep.text
    check = browser.client.post(
        f"/actions/{world['action_id']}/check-params", data={"params": DEEP}, headers=browser.headers
    )
    assert check.status_code == 200 and not check.json()["ok"]

    wait_url = f"/api/v1/actions/{world['action_id']}/wait"
    for method in ("POST", "HEAD", "PUT", "DELETE"):
        response = reviewer.client.request(method, wait_url, headers=reviewer.headers)
        assert response.status_code == 405, (method, response.text)
        assert response.headers["content-type"] == "application/problem+json" and response.headers["allow"] == "GET"
    from_a_page = browser.client.post(wait_url)  # a session without a CSRF token: still this API's 405
    assert from_a_page.status_code == 405 and from_a_page.headers["content-type"] == "application/problem+json"


def test_nothing_reported_was_stored(world):
    """Every hostile row above left the data as it was: one action and one HumanLayer call (this test's own)."""
    assert ActionRequest.objects.count() == 2


# --- the websocket --------------------------------------------------------------------------------------------


def open_socket(server, session: str, *, origin: str | None, path: str = "/ws/events/"):
    """A websocket handshake as a browser page makes it; (accepted, status or None)."""
    headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={session}"}
    uri = server.url.replace("http://", "ws://") + path
    try:
        with ws_connect(uri, origin=origin, additional_headers=headers, proxy=None, open_timeout=10) as socket:
            socket.send(json.dumps({"type": "ping"}))
            return json.loads(socket.recv(timeout=10)) == {"type": "pong"}, None
    except InvalidStatus as refused:
        return False, refused.response.status_code


@pytest.fixture
def session(reviewer) -> str:
    client = Client()
    client.force_login(reviewer)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def test_the_socket_opens_only_from_the_sites_exact_origin(server, session):
    """A page on another port of the same host (another service there, or an attacker's) carries the reviewer's
    cookies; its socket is refused. The site's own origin, port included, is accepted."""
    port = int(server.url.rsplit(":", 1)[1])
    assert open_socket(server, session, origin=f"http://127.0.0.1:{port}") == (True, None)
    for foreign in (
        f"http://127.0.0.1:{port + 1}",  # same host, another port
        "http://127.0.0.1",  # same host, port 80
        f"https://127.0.0.1:{port}",  # another scheme
        f"http://localhost:{port}",  # another name for the host
        f"http://evil.example:{port}",
        "null",  # a sandboxed frame or a file:// page
    ):
        assert open_socket(server, session, origin=foreign) == (False, 403), foreign
    assert open_socket(server, session, origin=None) == (False, 403)  # browsers always send one


def test_hostile_socket_paths_are_refused_not_crashed(server, session):
    port = int(server.url.rsplit(":", 1)[1])
    origin = f"http://127.0.0.1:{port}"
    for path in ("/ws/events/%00", "/ws/events/?since=%ED%A0%80", "/ws/no-such-socket/", "/ws/events/?x=%00"):
        assert open_socket(server, session, origin=origin, path=path) == (False, 403), path
    # No handshake crashed, and nothing before it did either (a 4xx logs a warning at most).
    errors = [line for line in server.log().splitlines() if '"level": "ERROR"' in line]
    assert not errors, errors[:3]


@pytest.mark.parametrize(
    ("configured", "origin", "host", "scheme", "allowed"),
    [
        ([], "http://127.0.0.1:8000", "127.0.0.1:8000", "ws", True),
        ([], "http://127.0.0.1:8001", "127.0.0.1:8000", "ws", False),
        ([], "https://127.0.0.1:8000", "127.0.0.1:8000", "ws", False),
        ([], "https://localhost", "localhost", "wss", True),
        ([], "https://localhost:443", "localhost", "wss", True),  # the default port, written out
        ([], "http://evil.example", "evil.example", "ws", False),  # a Host not on ALLOWED_HOSTS
        (["https://countersign.example.com"], "https://countersign.example.com", "10.0.0.5:8000", "ws", True),
        (["https://countersign.example.com"], "http://10.0.0.5:8000", "10.0.0.5:8000", "ws", False),
        (["https://countersign.example.com"], "https://countersign.example.com:8443", "x", "ws", False),
    ],
)
def test_origins_behind_a_proxy_are_configured_exactly(settings, configured, origin, host, scheme, allowed):
    """Behind a proxy that terminates TLS, the socket arrives as ws:// on an inner address: the site's public
    origin is set in COUNTERSIGN_WEBSOCKET_ORIGINS, and then only that exact origin is accepted."""
    settings.COUNTERSIGN_WEBSOCKET_ORIGINS = configured
    scope = {"type": "websocket", "scheme": scheme, "headers": [(b"host", host.encode()), (b"origin", origin.encode())]}
    assert origin_allowed(scope) is allowed
