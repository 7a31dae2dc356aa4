"""An agent's polling reads answered on the event loop (approvals.api.agent_reads) answer what the API's Django
handler answers, byte for byte and header for header, and leave every other request to it: a refusal, a rate limit,
an audit record or an odd spelling never has a second implementation to slip through.

Each request here is sent twice, once to ``AgentReads`` in front of the API's handler and once to the handler alone,
with the same X-Request-ID; ``reached`` says whether AgentReads passed it on.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import connection, connections
from django.test import override_settings
from django.urls import resolve

from agents import ratelimit
from agents.models import AgentKey
from agents.services import issue_key
from approvals.api import loop_connections, views, wait
from approvals.api.agent_reads import AgentReads
from approvals.api.renderers import render_json
from approvals.api.wait import wait_for_action
from approvals.selectors import actions as selectors
from approvals.selectors.presenters import present_action
from approvals.services.reviews import approve_action
from audit import chain as audit_chain
from audit.models import AuditEvent, RefusalTally
from config.api_handler import APIHandler
from tests.conftest import CLI, propose_body
from tests.factories import KEY_REFUSALS, AgentFactory, propose, refuse_keys
from tests.support.asgi import Reached, http_scope, send_request
from tests.support.waiting import wait_for_waiter

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("plain_http_and_fresh_batches")]


def _reads() -> tuple[AgentReads, Reached]:
    """AgentReads before a handler of its own, both made under the settings in force (middleware reads them once)."""
    reached = Reached(APIHandler())
    _MADE.append(AgentReads(reached))
    return _MADE[-1], reached


_MADE: list[AgentReads] = []


@pytest.fixture
def reads():
    app, reached = _reads()
    assert app.enabled
    return app, reached


@pytest.fixture(autouse=True)
def _connections_closed_after():
    # Their connections would outlive the test (and keep the test database from being dropped at the end).
    yield
    while _MADE:
        _MADE.pop().connections.discard()


def _scope(path: str, query: str = "", headers: dict[str, str] | None = None, *, scheme: str = "http") -> dict:
    sent = {"host": "localhost", "x-request-id": "same-id-for-both", **(headers or {})}
    pairs = [(name, value) for name, value in sent.items() if value is not None]
    return http_scope("GET", path, query=query, headers=pairs, scheme=scheme)


def both(reads, path: str, query: str = "", headers: dict[str, str] | None = None, **kw) -> tuple[dict, bool]:
    """(the answer, whether AgentReads passed the request on), after checking the handler alone answers the same."""
    app, reached = reads
    before = reached.count

    async def run():
        fast = await send_request(app, _scope(path, query, headers, **kw))
        passed_on = reached.count > before
        alone = await send_request(reached.handler, _scope(path, query, headers, **kw))
        return fast, passed_on, alone

    fast, passed_on, alone = asyncio.run(run())
    assert (fast["status"], fast["headers"], fast["body"]) == (alone["status"], alone["headers"], alone["body"])
    return fast, passed_on


def bearer(raw: str) -> dict[str, str]:
    return {"authorization": f"Bearer {raw}"}


def used_now(agent) -> None:
    """The key's last use recorded (as its first request through the API does), so a read has nothing to write."""
    AgentKey.objects.filter(agent=agent).update(last_used_at=datetime.now(UTC))


@pytest.fixture
def polling(agent, agent_key, agent_api):
    """An agent with a pending action and an approved one (edited, commented, on behalf of a person)."""
    pending = agent_api.post("/api/v1/actions", propose_body(summary="Still waiting \u2028 é"), format="json").json()
    other = agent_api.post("/api/v1/actions", propose_body(summary="Second"), format="json").json()
    used_now(agent)
    return agent, agent_key, pending["id"], other["id"]


def test_the_paths_answered_here_are_the_views_they_stand_for():
    some = uuid.uuid4()
    assert resolve("/api/v1/actions").func.view_class is views.ActionsView
    assert resolve(f"/api/v1/actions/{some}").func.view_class is views.ActionDetailView
    assert resolve(f"/api/v1/actions/{some}/wait").func is wait_for_action


def test_a_read_of_a_pending_action_is_answered_here_as_the_views_answer_it(reads, polling):
    _, key, pending, _ = polling
    answer, passed_on = both(reads, f"/api/v1/actions/{pending}", headers=bearer(key))
    assert answer["status"] == 200 and not passed_on
    assert b"Still waiting \\u2028 \xc3\xa9" in answer["body"]
    assert ("x-request-id", "same-id-for-both") in answer["headers"]


def test_a_decided_action_with_its_reviews_reads_the_same(reads, polling, reviewer, second_reviewer):
    agent, key, pending, _ = polling
    approve_action(
        action_id=pending, reviewer=reviewer, via="web", comment="fine", edited_params={"command": "restart", "x": 1}
    )
    used_now(agent)
    answer, passed_on = both(reads, f"/api/v1/actions/{pending}", headers=bearer(key))
    assert answer["status"] == 200 and not passed_on
    assert b'"reviews":[{"reviewer":"' + reviewer.username.encode() in answer["body"]


def test_a_wait_that_answers_at_once_is_answered_here_and_an_open_one_is_the_views(reads, polling, reviewer):
    agent, key, pending, other = polling
    approve_action(action_id=pending, reviewer=reviewer, via="web")
    used_now(agent)
    decided, passed_on = both(reads, f"/api/v1/actions/{pending}/wait", "until=decision&timeout=5", bearer(key))
    assert decided["status"] == 200 and b'"status":"approved"' in decided["body"] and not passed_on
    no_wait, passed_on = both(reads, f"/api/v1/actions/{other}/wait", "timeout=0", bearer(key))
    assert b'"status":"pending"' in no_wait["body"] and not passed_on
    still_open, passed_on = both(reads, f"/api/v1/actions/{other}/wait", "until=decision&timeout=0.2", bearer(key))
    assert still_open["status"] == 200 and b'"status":"pending"' in still_open["body"] and passed_on


@pytest.mark.parametrize("query", ["", "limit=1", "status=pending", "limit=1&status=pending", "limit=500"])
def test_the_first_page_is_answered_here_with_the_views_links(reads, polling, query):
    _, key, _, _ = polling
    answer, passed_on = both(reads, "/api/v1/actions", query, bearer(key))
    assert answer["status"] == 200 and not passed_on
    assert (b"cursor=" in answer["body"]) == (query.startswith("limit=1"))


def test_a_first_page_with_reviews_on_it_reads_the_same(reads, polling, reviewer):
    # The page's statement says which of its actions have reviews; only then are they read, with their counts.
    agent, key, pending, _ = polling
    approve_action(action_id=pending, reviewer=reviewer, via="web", comment="fine")
    used_now(agent)
    answer, passed_on = both(reads, "/api/v1/actions", "", bearer(key))
    assert answer["status"] == 200 and not passed_on
    assert b'"reviews":[{"reviewer":"' + reviewer.username.encode() in answer["body"]


@pytest.mark.parametrize("query", ["", "status=approved"])
def test_an_empty_first_page_is_the_views(reads, owner, query):
    # The key is read with the page's rows: no rows, no key read here, so the views answer (an empty page).
    agent = AgentFactory(owner=owner)
    if query:
        propose(agent)  # pending: not on a page of approved ones
    used_now(agent)
    answer, passed_on = both(reads, "/api/v1/actions", query, bearer(agent.raw_key))
    assert answer["status"] == 200 and passed_on
    assert b'"results":[]' in answer["body"]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("limit=0", 400),
        ("limit=x", 400),
        ("status=nonsense", 400),
        ("limit=1&limit=2", 200),
        ("format=json", 200),
        ("cursor=bm9wZQ", 404),
    ],
)
def test_a_query_the_views_read_their_own_way_is_theirs(reads, polling, query, status):
    _, key, _, _ = polling
    answer, passed_on = both(reads, "/api/v1/actions", query, bearer(key))
    assert answer["status"] == status and passed_on


@pytest.mark.parametrize(
    "query",
    [
        "timeout=nan",
        "timeout=61",
        "until=forever",
        "until=decision&until=completion&timeout=0",
        "format=json&timeout=0",
    ],
)
def test_a_wait_asked_oddly_is_the_views(reads, polling, query):
    _, key, pending, _ = polling
    answer, passed_on = both(reads, f"/api/v1/actions/{pending}/wait", query, bearer(key))
    assert passed_on and answer["status"] in (200, 400, 404)


@pytest.mark.parametrize(
    "headers",
    [
        {"accept": "text/html"},
        {"accept": "application/json; indent=2"},
        {"cookie": "sessionid=nothing"},
        {"authorization": None},
    ],
)
def test_headers_the_views_read_their_own_way_are_theirs(reads, polling, headers):
    _, key, pending, _ = polling
    answer, passed_on = both(reads, f"/api/v1/actions/{pending}", headers={**bearer(key), **headers})
    assert passed_on
    assert answer["status"] in (200, 401, 406)


def test_another_agents_action_and_another_spelling_of_its_id_are_the_views_404(reads, polling, owner):
    _, _, pending, _ = polling
    stranger = AgentFactory(owner=owner)
    used_now(stranger)
    answer, passed_on = both(reads, f"/api/v1/actions/{pending}", headers=bearer(stranger.raw_key))
    assert answer["status"] == 404 and passed_on
    _, key, _, _ = polling
    answer, passed_on = both(reads, f"/api/v1/actions/{pending.upper()}", headers=bearer(key))
    assert answer["status"] == 404 and passed_on
    answer, passed_on = both(reads, f"/api/v1/actions/{pending}/", headers=bearer(key))
    assert answer["status"] == 404 and passed_on


def _refusals(agent) -> list[str]:
    return list(AuditEvent.objects.filter(verb="access.refused", agent_name=agent.name).values_list("data", flat=True))


@pytest.mark.parametrize("how", KEY_REFUSALS)
def test_a_refused_key_is_refused_by_the_views_and_audited_on_the_very_next_read(reads, polling, how, monkeypatch):
    agent, key, pending, _ = polling
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    monkeypatch.setattr(audit_chain, "_refusal_minute", lambda: minute)  # the four refusals fall in one minute
    answer, passed_on = both(reads, f"/api/v1/actions/{pending}", headers=bearer(key))
    assert answer["status"] == 200 and not passed_on
    refuse_keys(agent, how)
    for path, query in [(f"/api/v1/actions/{pending}", ""), (f"/api/v1/actions/{pending}/wait", "timeout=0")]:
        answer, passed_on = both(reads, path, query, bearer(key))
        assert answer["status"] == 401 and passed_on
    # Each request went twice (here, passed on, and to the handler alone): four refusals, the first an audit event,
    # the rest counted against it for the minute (audit.chain.record_refusal).
    assert len(_refusals(agent)) == 1
    assert RefusalTally.objects.get(actor=agent.name).count == 4


@pytest.mark.parametrize("read", ["one", "list"])
def test_each_of_an_agents_keys_is_read_as_itself(reads, polling, agent, read):
    # The key is read in the statement that reads the action or the page, joined through the agent: the key read is
    # the one asked with, never another of the same agent's (here a revoked one, which would pass the read on).
    _, key, pending, _ = polling
    path = f"/api/v1/actions/{pending}" if read == "one" else "/api/v1/actions"
    revoked, revoked_raw = issue_key(agent=agent, actor=CLI)
    used_now(agent)
    AgentKey.objects.filter(pk=revoked.pk).update(revoked_at=datetime.now(UTC))
    answer, passed_on = both(reads, path, headers=bearer(key))
    assert answer["status"] == 200 and not passed_on
    answer, passed_on = both(reads, path, headers=bearer(revoked_raw))
    assert answer["status"] == 401 and passed_on


@pytest.mark.parametrize("read", ["one", "list"])
def test_a_wrong_secret_is_the_views_401(reads, polling, read):
    # The real public id with a forged secret: the row is read here (the page too), then left to the views.
    _, key, pending, _ = polling
    forged = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    path = f"/api/v1/actions/{pending}" if read == "one" else "/api/v1/actions"
    answer, passed_on = both(reads, path, headers=bearer(forged))
    assert answer["status"] == 401 and passed_on


def test_a_key_whose_last_use_is_due_is_recorded_by_the_views_then_read_here(reads, polling, agent):
    _, key, pending, _ = polling
    stale = datetime.now(UTC) - timedelta(minutes=5)
    AgentKey.objects.filter(agent=agent).update(last_used_at=stale)
    first, passed_on = both(reads, f"/api/v1/actions/{pending}", headers=bearer(key))
    assert first["status"] == 200 and passed_on
    assert AgentKey.objects.get(agent=agent).last_used_at > stale
    _, passed_on = both(reads, f"/api/v1/actions/{pending}", headers=bearer(key))
    assert not passed_on


@override_settings(COUNTERSIGN_AGENT_RATES={"requests": "200/hour", "proposals": "100/hour"})
def test_the_request_budget_holds_through_reads_answered_here(reads, owner):
    agent = AgentFactory(owner=owner)
    propose(agent)  # a first page with something on it: answered here
    used_now(agent)
    app, reached = reads

    async def flood():
        return [
            (await send_request(app, _scope("/api/v1/actions", headers=bearer(agent.raw_key))))["status"]
            for _ in range(230)
        ]

    statuses = asyncio.run(flood())
    # One process: the key is stopped at exactly its 200th request, here or by the handler.
    assert statuses == [200] * 200 + [429] * 30
    # Most were answered here, spending the batches the handler took from Redis: one in `batch` went on, and every
    # request past the budget.
    batch = ratelimit.batch_size(ratelimit.rate_for("requests"))
    assert batch == 10 and reached.count == 200 // batch + 30


@override_settings(COUNTERSIGN_AGENT_RATES={"requests": "400/hour", "proposals": "100/hour"})
def test_a_request_passed_on_is_counted_once(reads, polling):
    # An open wait is read here, then passed on: the views count it; it must not have been counted here as well.
    _, key, _, other = polling
    app, reached = reads

    async def scenario():
        opened = [
            await send_request(app, _scope(f"/api/v1/actions/{other}/wait", "timeout=0.01", bearer(key)))
            for _ in range(10)
        ]
        statuses = [a["status"] for a in opened]
        while statuses[-1] != 429 and len(statuses) < 500:
            statuses.append(
                (await send_request(app, _scope(f"/api/v1/actions/{other}", headers=bearer(key))))["status"]
            )
        return statuses

    statuses = asyncio.run(scenario())
    assert reached.count >= 10
    assert statuses.count(200) == 400 and statuses[-1] == 429


def test_with_the_database_out_of_reach_the_views_answer_and_the_reads_rest(reads, polling):
    _, key, pending, _ = polling
    app, _ = reads
    app.connections._kwargs = {"host": "127.0.0.1", "port": 1, "dbname": "none", "connect_timeout": 2}
    answer, passed_on = both(reads, f"/api/v1/actions/{pending}", headers=bearer(key))
    assert answer["status"] == 200 and passed_on
    answer, passed_on = both(reads, f"/api/v1/actions/{pending}", headers=bearer(key))
    assert passed_on  # resting: not even tried


def test_connections_a_database_restart_killed_are_left_to_the_views_then_made_anew(reads, polling):
    _, key, pending, _ = polling
    app, reached = reads
    scope = _scope(f"/api/v1/actions/{pending}", headers=bearer(key))

    def terminate(pids: list[int]) -> None:  # what a restart of PostgreSQL does to every connection it had
        try:
            with connection.cursor() as cursor:
                for pid in pids:
                    cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
        finally:
            connection.close()  # this thread's own

    async def scenario():  # one event loop throughout, as in a server process
        # Two at once: two connections, kept.
        answers = list(await asyncio.gather(send_request(app, scope), send_request(app, scope)))
        passed_on = [reached.count]
        pids = [kept.info.backend_pid for kept in app.connections._idle]
        assert len(pids) == 2
        await sync_to_async(terminate, thread_sensitive=False)(pids)
        answers.append(await send_request(app, scope))
        passed_on.append(reached.count)
        idle_after_the_error = list(app.connections._idle)
        app._resting_until = 0.0  # its rest (5 s) over
        answers.append(await send_request(app, scope))
        passed_on.append(reached.count)
        return [a["status"] for a in answers], passed_on, idle_after_the_error

    statuses, passed_on, idle_after_the_error = asyncio.run(scenario())
    assert statuses == [200, 200, 200, 200]
    # The request on a dead connection went on to the views; the next was answered here, on a new connection, not
    # on the other dead one.
    assert passed_on == [0, 1, 1]
    assert idle_after_the_error == []


def test_any_other_database_error_is_left_to_the_views_without_a_rest(reads, polling, monkeypatch):
    _, key, pending, _ = polling
    app, _ = reads

    async def fails(*args, **kwargs):
        raise psycopg.errors.InvalidTextRepresentation("invalid input syntax for type uuid")

    monkeypatch.setattr(selectors, "aread_action_with_key", fails)
    answer, passed_on = both(reads, f"/api/v1/actions/{pending}", headers=bearer(key))
    assert answer["status"] == 200 and passed_on and app._resting_until == 0.0


def test_more_reads_at_once_than_connections_wait_their_turn(reads, polling, settings):
    _, key, pending, _ = polling
    app, reached = reads
    scope = _scope(f"/api/v1/actions/{pending}", headers=bearer(key))

    async def scenario():
        first = await send_request(app, scope)  # the key's batch is taken (the proposals took it already)
        passed_on = reached.count
        answers = await asyncio.gather(*(send_request(app, scope) for _ in range(20)))
        return first, passed_on, answers

    first, passed_on, answers = asyncio.run(scenario())
    assert reached.count == passed_on  # all twenty answered here
    assert {(a["status"], a["body"]) for a in answers} == {(200, first["body"])}
    assert len(app.connections._idle) == settings.AGENT_READS_CONNECTIONS == 4  # never more than its four


def test_https_redirects_and_hosts_are_the_views_to_decide(reads, polling):
    _, key, pending, _ = polling
    with override_settings(SECURE_SSL_REDIRECT=True):
        answer, passed_on = both(_reads(), f"/api/v1/actions/{pending}", headers=bearer(key))
    assert answer["status"] == 301 and passed_on
    answer, passed_on = both(reads, "/api/v1/actions", headers={**bearer(key), "host": "evil.example"})
    assert answer["status"] == 400 and passed_on
    with override_settings(SECURE_HSTS_SECONDS=3600):
        answer, passed_on = both(_reads(), f"/api/v1/actions/{pending}", headers=bearer(key), scheme="https")
    assert answer["status"] == 200 and not passed_on
    assert ("strict-transport-security", "max-age=3600") in answer["headers"]


def test_the_shortcut_is_off_where_it_could_not_answer_as_the_views_do(settings):
    assert AgentReads(APIHandler()).enabled
    settings.AGENT_READS_CONNECTIONS = 0  # the operator's switch (docs/deploy.md)
    assert not AgentReads(APIHandler()).enabled
    settings.AGENT_READS_CONNECTIONS = 4
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_CLASSES": [
            "agents.throttling.AgentKeyThrottle",
            "rest_framework.throttling.UserRateThrottle",
        ],
    }
    assert not AgentReads(APIHandler()).enabled  # a throttle it does not count


def test_the_shortcut_is_off_where_the_apis_chain_has_middleware_it_would_skip(settings):
    assert AgentReads(APIHandler()).enabled
    settings.API_MIDDLEWARE = [*settings.API_MIDDLEWARE, "django.middleware.common.CommonMiddleware"]
    assert not AgentReads(APIHandler()).enabled


def test_the_served_application_puts_the_shortcut_before_the_apis_handler():
    from config import asgi

    assert isinstance(asgi.agent_reads, AgentReads) and asgi.agent_reads.handler is asgi.api_handler
    assert asgi.api_asgi_app.app is asgi.agent_reads  # behind the writes' shortcut (approvals.api.plain_writes)


# --- a wait's reads after a change (approvals.api.wait), on the same loop connections ---------------------------------


def _open_wait_answer(action_id: str, key: str, decide) -> dict:
    """A wait on ``action_id`` sent to the server's application, ``decide()`` run once it has subscribed."""
    from config.asgi import application  # the server's own: its handler, its loop connections

    scope = _scope(f"/api/v1/actions/{action_id}/wait", "until=decision&timeout=10", bearer(key))

    async def scenario():
        waiting = asyncio.ensure_future(send_request(application, scope))
        await sync_to_async(wait_for_waiter, thread_sensitive=False)(action_id)
        await sync_to_async(_closing(decide), thread_sensitive=False)()
        return await asyncio.wait_for(waiting, 10)

    return asyncio.run(scenario())


def _closing(work):
    """``work`` on a thread of its own that closes its database connection after: left open, it would keep the test
    database from being dropped at the end."""

    def run():
        try:
            work()
        finally:
            connections.close_all()

    return run


def _read_by_the_views(action_id: str, key: str) -> bytes:
    async def read():
        return await send_request(APIHandler(), _scope(f"/api/v1/actions/{action_id}", headers=bearer(key)))

    return asyncio.run(read())["body"]


def test_an_open_wait_reads_the_change_on_the_loop_and_answers_what_the_views_read(polling, reviewer, monkeypatch):
    _, key, pending, _ = polling
    on_a_thread = []
    monkeypatch.setattr(wait, "_snapshot", lambda *args: on_a_thread.append(args))
    answer = _open_wait_answer(
        pending, key, lambda: approve_action(action_id=pending, reviewer=reviewer, via="web", comment="ok")
    )
    assert answer["status"] == 200 and b'"status":"approved"' in answer["body"]
    assert on_a_thread == []  # neither the read as it subscribed nor the one after the approval
    assert answer["body"] == _read_by_the_views(pending, key)


def test_with_the_loop_connections_out_of_reach_an_open_wait_reads_on_a_thread(polling, reviewer, caplog):
    _, key, pending, _ = polling
    loop_connections.shared.discard()
    loop_connections.shared._kwargs = {"host": "127.0.0.1", "port": 1, "dbname": "none", "connect_timeout": 2}
    try:
        answer = _open_wait_answer(
            pending, key, lambda: approve_action(action_id=pending, reviewer=reviewer, via="web")
        )
    finally:
        loop_connections.shared._kwargs = None
    assert answer["status"] == 200 and b'"status":"approved"' in answer["body"]
    assert "from the database on the loop; read on a thread" in caplog.text
    assert answer["body"] == _read_by_the_views(pending, key)


@pytest.mark.parametrize(
    "who", ["the agent", "another agent", "staff", "a reviewer of its group", "an outsider", "inactive"]
)
def test_a_read_on_the_loop_sees_what_the_views_read_sees(polling, reviewer, outsider, owner, who):
    agent, _, pending, _ = polling
    approve_action(action_id=pending, reviewer=reviewer, via="web", comment="reviews, with their counts")
    principal = {
        "the agent": lambda: agent,
        "another agent": lambda: AgentFactory(owner=owner),
        "staff": lambda: User.objects.create_user("staff-reader", is_staff=True),
        "a reviewer of its group": lambda: reviewer,
        "an outsider": lambda: outsider,
        "inactive": lambda: (
            User.objects.filter(pk=reviewer.pk).update(is_active=False) and User.objects.get(pk=reviewer.pk)
        ),
    }[who]()

    async def on_the_loop():
        async with loop_connections.shared.connection() as aconnection:
            return await selectors.aread_action_for(aconnection, principal, pending)

    on_loop, by_views = asyncio.run(on_the_loop()), selectors.read_action_for(principal, pending)
    assert (on_loop is None) == (by_views is None) == (who in ("another agent", "an outsider", "inactive"))
    if by_views is not None:
        assert render_json(present_action(on_loop)) == render_json(present_action(by_views))
