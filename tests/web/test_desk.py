"""The reviewer's desk without a browser: the queue's filters, search, sorting, counts and keyset pages;
the dashboard's numbers on known data; the inline check of edited parameters; the high-risk
confirmation; presence and catching up over the websocket (channels-redis and in-memory)."""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from channels.layers import channel_layers
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connection, transaction
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.services import create_agent
from approvals.models import ActionRequest, ActionStatus, OutboxMessage, Review
from approvals.presentation import progress
from approvals.selectors import dashboard, desk
from approvals.services import containment
from approvals.web import charts
from config.asgi import application
from tests.conftest import CLI, token_client
from tests.factories import api_propose, propose
from tests.support.plans import analyzed_plan, rows_read

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 10  # seconds for a socket message; a timeout fails the test


# --- test data ------------------------------------------------------------------------------


def make_action(agent, group, *, minutes_ago: float = 0, **fields) -> ActionRequest:
    """An action row as the services leave it, with times under the test's control."""
    now = timezone.now()
    created = now - timedelta(minutes=minutes_ago)
    values = {
        "agent": agent,
        "action_type": "decision.only",
        "params": {"command": "restart"},
        "summary": "Restart something",
        "request_digest": uuid.uuid4().hex,
        "risk": "medium",
        "reviewer_group": group,
        "policy_rule": "default",
        "policy_effect": "require",
        "policy_explanation": "needs 1 approval from reviewers",
        "created_at": created,
        "updated_at": created,
        "expires_at": created + timedelta(hours=24),
    }
    values.update(fields)
    return ActionRequest.objects.create(**values)


@pytest.fixture
def other_agent(owner):
    agent, _, _ = create_agent(name="deploy-bot", owner=owner, actor=CLI, allow=["decision.only"])
    return agent


@pytest.fixture
def browser(reviewer):
    client = Client()
    client.force_login(reviewer)
    return client


def ids(rows) -> list:
    return [r.id for r in rows]


# --- filters, search, counts ----------------------------------------------------------------------


def test_filters_search_and_counts_are_scoped_and_combine(reviewer, reviewers_group, agent, other_agent):
    finance = Group.objects.create(name="finance-reviewers")
    a = make_action(
        agent, reviewers_group, summary="Restart the Billing service", risk="high", on_behalf_of="Dana@x.io"
    )
    b = make_action(other_agent, reviewers_group, summary="Deploy billing v2", risk="low", action_type="http.request")
    c = make_action(agent, reviewers_group, summary="Rotate the logs", risk="critical")
    d = make_action(agent, reviewers_group, summary="Old billing thing", status=ActionStatus.REJECTED)
    hidden = make_action(agent, finance, summary="Billing payout run", risk="high")  # not rita's group

    def shown(**query):
        page = desk.queue_page(reviewer, desk.QueueFilters.from_query(query))
        return set(ids(page.rows)), page

    assert shown()[0] == {a.id, b.id, c.id}  # pending is the default
    assert shown(status="all")[0] == {a.id, b.id, c.id, d.id}
    assert shown(status="rejected")[0] == {d.id}
    assert shown(risk=["high", "critical"])[0] == {a.id, c.id}
    assert shown(agent="deploy-bot")[0] == {b.id}
    assert shown(agent="no-such-agent")[0] == set()
    assert shown(action_type="http.request")[0] == {b.id}
    assert shown(on_behalf_of="dana@X.IO")[0] == {a.id}  # case-insensitive, exact
    assert shown(q="BILLING")[0] == {a.id, b.id}  # case-insensitive, in summaries only
    assert shown(q="billing restart")[0] == {a.id}  # every word must appear
    assert shown(q="billing", status="all")[0] == {a.id, b.id, d.id}
    assert hidden.id not in shown(status="all", q="payout")[0]

    # Counts per filter: each facet counts with its own filter left out, the others applied.
    _, page = shown(q="billing")
    assert page.total == 2
    risk = {o.value: o.count for o in page.facets["risk"]}
    assert risk == {"low": 1, "medium": 0, "high": 1, "critical": 0}
    # While searching, a facet in use (status here) is not counted option by option.
    assert {o.count_label for o in page.facets["status"]} == {""}
    agents = {o.value: o.count for o in page.facets["agent"]}
    assert agents == {"deploy-bot": 1, "helper-bot": 1}
    types = {o.value: o.count for o in page.facets["action_type"]}
    assert types["decision.only"] == 1 and types["http.request"] == 1

    _, page = shown(agent="helper-bot")
    status = {o.value: o.count for o in page.facets["status"]}
    assert status["pending"] == 2 and status["rejected"] == 1 and status["all"] == 3 and status["expired"] == 0

    _, page = shown(risk=["high"])
    assert {o.value: o.count for o in page.facets["risk"]} == {"low": 1, "medium": 0, "high": 1, "critical": 1}
    assert [o.value for o in page.facets["risk"] if o.selected] == ["high"]


def test_outsider_sees_and_counts_nothing(outsider, reviewers_group, agent):
    make_action(agent, reviewers_group)
    page = desk.queue_page(outsider, desk.QueueFilters())
    assert page.rows == [] and page.total == 0
    assert all(o.count == 0 for o in page.facets["risk"])


def test_counts_are_capped(reviewer, reviewers_group, agent, monkeypatch):
    monkeypatch.setattr(desk, "COUNT_CAP", 3)
    for _ in range(5):
        make_action(agent, reviewers_group, risk="low")
    page = desk.queue_page(reviewer, desk.QueueFilters())
    assert page.total == 4 and page.total_label == "3+"
    assert {o.value: o.count_label for o in page.facets["risk"]}["low"] == "3+"


def test_a_slow_read_is_cancelled_and_leaves_the_connection_as_it_was(db):
    def slow():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(2)")

    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        before = cursor.fetchone()[0]
    assert desk._within(50, slow) is None
    assert desk._within(1000, lambda: 42) == 42
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == before
    # Inside a transaction of the caller's (a savepoint), where SET LOCAL would outlive the read.
    with transaction.atomic():
        assert desk._within(50, slow) is None
        assert desk._within(1000, lambda: 42) == 42
        with connection.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            assert cursor.fetchone()[0] == before


def test_counts_too_slow_to_make_are_left_out_and_a_page_too_slow_says_so(browser, reviewers_group, agent, monkeypatch):
    make_action(agent, reviewers_group, summary="Restart billing", risk="high")
    monkeypatch.setattr(desk, "_count_all", lambda querysets: None)  # as when the time limit cancels counting
    html = browser.get("/", {"risk": "high"}).content.decode()
    assert 'data-count-for="total">many<' in html
    assert "Restart billing" in html
    assert re.search(r'data-count-for="status-pending">pending</option>', html), "no number rather than a wrong one"
    assert "data-static" not in html  # still live

    real_within = desk._within
    monkeypatch.setattr(
        desk, "_within", lambda ms, read: None if ms == desk.QUERY_TIMEOUT_MS else real_within(ms, read)
    )
    html = browser.get("/", {"q": "billing"}).content.decode()
    assert "This view took too long to read" in html and "Restart billing" not in html
    assert "data-static" in html, "a page too slow to read is not read again on every event"
    assert 'id="f-status"' in html and 'value="billing"' in html  # the filters stay, to narrow it


def test_unknown_filter_values_fall_back_to_defaults():
    f = desk.QueueFilters.from_query({"status": "nonsense", "sort": "sideways", "risk": ["huge", "low"]})
    assert (f.status, f.sort, f.risks) == ("pending", "expiry", ("low",))  # soonest to expire: the default
    assert desk.QueueFilters.from_query({"q": "  two   words "}).q == "two words"


# --- sorting and keyset pages ----------------------------------------------------------------


def test_sorts_by_age_risk_and_expiry(reviewer, reviewers_group, agent):
    old_low = make_action(agent, reviewers_group, minutes_ago=30, risk="low")
    mid_crit = make_action(agent, reviewers_group, minutes_ago=20, risk="critical")
    new_high = make_action(agent, reviewers_group, minutes_ago=10, risk="high")
    old_high = make_action(agent, reviewers_group, minutes_ago=40, risk="high")
    soon = make_action(
        agent, reviewers_group, minutes_ago=5, risk="low", expires_at=timezone.now() + timedelta(minutes=3)
    )

    def order(sort):
        return ids(desk.queue_page(reviewer, desk.QueueFilters(sort=sort)).rows)

    assert order("newest") == ids([soon, new_high, mid_crit, old_low, old_high])
    assert order("oldest") == ids([old_high, old_low, mid_crit, new_high, soon])
    # Highest risk first; within a risk, the one waiting longest first.
    assert order("risk") == ids([mid_crit, old_high, new_high, old_low, soon])
    assert order("expiry")[0] == soon.id
    assert order("expiry")[1:] == ids([old_high, old_low, mid_crit, new_high])


@pytest.mark.parametrize("cap", [999, 2], ids=["few-rows-sorted-from-matches", "many-rows-walk-the-index"])
@pytest.mark.parametrize("sort", list(desk.SORTS))
def test_keyset_pages_cover_everything_once_both_ways(reviewer, reviewers_group, agent, sort, cap, monkeypatch):
    monkeypatch.setattr(desk, "COUNT_CAP", cap)
    risks = ["low", "medium", "high", "critical"]
    same_time = timezone.now() - timedelta(minutes=7)
    for i in range(11):
        # Ties on purpose: the primary key decides between rows with the same sort values.
        created = same_time if i % 3 == 0 else timezone.now() - timedelta(minutes=i)
        make_action(
            agent,
            reviewers_group,
            risk=risks[i % 4],
            created_at=created,
            expires_at=same_time + timedelta(hours=1 + i % 2),
        )
    filters = desk.QueueFilters(sort=sort)
    everything = ids(desk.queue_page(reviewer, filters, page_size=100).rows)
    assert len(everything) == 11

    forward, pages, after = [], [], ""
    while True:
        page = desk.queue_page(reviewer, filters, after=after, page_size=4)
        forward += ids(page.rows)
        pages.append(page)
        if not page.next_cursor:
            break
        after = page.next_cursor
    assert forward == everything
    assert [len(p.rows) for p in pages] == [4, 4, 3]
    assert pages[0].prev_cursor is None and pages[1].prev_cursor and pages[2].prev_cursor

    backward, before = [], pages[-1].prev_cursor
    while before:
        page = desk.queue_page(reviewer, filters, before=before, page_size=4)
        backward = ids(page.rows) + backward
        before = page.prev_cursor
    assert backward == everything[:8]


def test_a_cursor_stays_correct_when_rows_are_inserted(reviewer, reviewers_group, agent):
    originals = [make_action(agent, reviewers_group, minutes_ago=60 - i) for i in range(6)]  # newest last
    filters = desk.QueueFilters(sort="newest")
    first = desk.queue_page(reviewer, filters, page_size=3)
    assert ids(first.rows) == ids(originals[::-1][:3])

    # While the reviewer reads page 1: three new proposals arrive (they sort before the cursor),
    # and one lands between rows of page 2 (same sort key space, earlier than the cursor).
    for _ in range(3):
        make_action(agent, reviewers_group, minutes_ago=0)
    between = make_action(agent, reviewers_group, minutes_ago=57.5)

    second = desk.queue_page(reviewer, filters, after=first.next_cursor, page_size=3)
    expected = sorted([*originals[:3], between], key=lambda a: a.created_at, reverse=True)[:3]
    assert ids(second.rows) == ids(expected)
    assert not set(ids(second.rows)) & set(ids(first.rows)), "no row is shown twice"
    # Going back from page 2 shows page 1 as it was plus nothing skipped.
    back = desk.queue_page(reviewer, filters, before=second.prev_cursor, page_size=3)
    assert ids(back.rows) == ids(first.rows)
    assert back.prev_cursor, "the new rows are one page further back"


def test_a_cursor_for_another_sort_or_tampered_is_refused(reviewer, reviewers_group, agent, browser):
    for i in range(3):
        make_action(agent, reviewers_group, minutes_ago=i)
    page = desk.queue_page(reviewer, desk.QueueFilters(), page_size=1)
    with pytest.raises(desk.BadCursor):
        desk.queue_page(reviewer, desk.QueueFilters(sort="risk"), after=page.next_cursor)
    for bad in ("nonsense", "W10", page.next_cursor[:-3] + "AAA"):
        with pytest.raises(desk.BadCursor):
            desk.queue_page(reviewer, desk.QueueFilters(), after=bad)
    response = browser.get("/", {"after": "nonsense", "risk": "low"}, follow=True)
    assert response.redirect_chain == [("/?risk=low", 302)]
    assert "That page link is not valid" in response.content.decode()


def test_queue_page_shows_filters_counts_and_pager(browser, reviewers_group, agent, monkeypatch):
    for i in range(3):
        make_action(agent, reviewers_group, minutes_ago=i, summary=f"Action <b>{i}</b>", risk="high")
    monkeypatch.setattr(desk, "PAGE_SIZE", 2)
    html = browser.get("/", {"risk": "high"}).content.decode()
    assert 'id="queue-count" data-count-for="total">3<' in html
    assert html.count('class="row risk-high"') == 2
    assert "Action &lt;b&gt;2&lt;/b&gt;" in html and "<b>2</b>" not in html  # the first to expire
    assert re.search(r'<a href="\?risk=high&amp;after=[\w-]+" rel="next" id="page-next">', html)
    assert 'data-count-for="risk-high">3<' in html
    assert 'aria-sort="ascending"' in html  # by expiry, soonest first


def test_a_live_row_is_drawn_as_the_queue_draws_it(browser, reviewer, second_reviewer, reviewers_group, agent):
    # Ages half a minute from a change of minute, so both reads print the same "… minutes".
    action = make_action(
        agent, reviewers_group, minutes_ago=90.5, summary="Pay <b>Acme</b>", on_behalf_of="ann@example.com"
    )
    action.required_approvals = 2
    action.save(update_fields=["required_approvals"])
    Review.objects.create(action=action, reviewer=second_reviewer, verdict="approve", via="web")
    make_action(agent, reviewers_group, minutes_ago=10.5, risk="high")
    page = browser.get("/").content.decode()
    row = browser.get(f"/actions/{action.id}/row").content.decode()
    drawn = re.search(rf'<tr id="action-{action.id}".*?</tr>', page, re.S).group(0)
    assert row.strip() == drawn
    assert f'data-href="/actions/{action.id}"' in row and f'<a href="/actions/{action.id}">' in row
    assert "Pay &lt;b&gt;Acme&lt;/b&gt;" in row and "· for ann@example.com" in row
    assert '<td class="num approvals-cell">1 of 2</td>' in row
    assert "1\xa0hour, 30\xa0minutes ago" in row and "in 22\xa0hours, 29\xa0minutes" in row
    assert 'class="ttl-left" style="width: 94%"' in row
    assert page.count("<tr id=") == 2


def test_the_queue_page_reads_as_many_queries_for_many_rows_as_for_one(browser, reviewers_group, agent, monkeypatch):
    # The banner's entry, once filled, must not lapse between the counts (its 10 s ran out once on a loaded machine).
    monkeypatch.setattr(containment, "BANNER_TTL_SECONDS", 3600)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert browser.get("/").status_code == 200
        return len(captured.captured_queries)

    make_action(agent, reviewers_group, minutes_ago=1)
    queries()  # the first page fills the cached banner of kill switches (approvals.web.context_processors)
    one = queries()
    for i in range(12):
        action = make_action(agent, reviewers_group, minutes_ago=2 + i, risk=["low", "high"][i % 2])
        Review.objects.create(action=action, verdict="approve", via="policy")
    assert queries() == one


def test_queue_and_dashboard_pages_carry_no_inline_script(browser, reviewers_group, agent):
    make_action(agent, reviewers_group)
    for path in ("/", "/dashboard", "/dashboard?days=30", "/history"):
        response = browser.get(path)
        assert response.status_code == 200
        assert "script-src 'self'" in response["Content-Security-Policy"]
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", response.content.decode()), path


# --- dashboard ----------------------------------------------------------------------------------


def decided(agent, group, *, status, minutes_to_decide: float, days_ago: float = 0, **fields):
    now = timezone.now() - timedelta(days=days_ago)
    created = now - timedelta(minutes=minutes_to_decide)
    return make_action(
        agent,
        group,
        status=status,
        created_at=created,
        decided_at=now,
        finished_at=now if status in (ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.REJECTED) else None,
        **fields,
    )


@pytest.fixture
def known_data(reviewers_group, agent, other_agent):
    finance = Group.objects.create(name="finance-reviewers")
    g = reviewers_group
    # Decisions by people within the last 7 days: times to decide 1, 2, 3, 4, 10 minutes.
    decided(agent, g, status=ActionStatus.SUCCEEDED, minutes_to_decide=1)
    decided(agent, g, status=ActionStatus.REJECTED, minutes_to_decide=2)
    decided(agent, g, status=ActionStatus.FAILED, minutes_to_decide=3, days_ago=2, result={"error": "HTTP 500 <boom>"})
    decided(other_agent, g, status=ActionStatus.APPROVED, minutes_to_decide=4, days_ago=3, action_type="http.request")
    decided(other_agent, g, status=ActionStatus.REJECTED, minutes_to_decide=10, days_ago=5, action_type="http.request")
    # Older than 7 days, within 30: a rejection that took an hour.
    decided(agent, g, status=ActionStatus.REJECTED, minutes_to_decide=60, days_ago=20)
    # Not decisions by people: an auto-approval, an expiry.
    decided(agent, g, status=ActionStatus.SUCCEEDED, minutes_to_decide=0, policy_effect="auto_approve")
    decided(agent, g, status=ActionStatus.EXPIRED, minutes_to_decide=1440, days_ago=1)
    # Pending now: two of rita's, one of finance's.
    make_action(agent, g)
    make_action(agent, g)
    make_action(agent, finance)
    # Another group's decisions never count for rita.
    decided(agent, finance, status=ActionStatus.FAILED, minutes_to_decide=500)


def test_dashboard_numbers_on_known_data(reviewer, known_data):
    board = dashboard.dashboard_for(reviewer, days=7)
    assert board.pending_now == 2
    assert board.decided_today == 2
    assert (board.decisions, board.approved, board.rejected) == (5, 3, 2)
    assert board.approval_rate == pytest.approx(0.6)
    assert board.median_seconds == pytest.approx(180)  # 1, 2, [3], 4, 10 minutes
    assert board.p90_seconds == pytest.approx(60 * (4 + 0.6 * (10 - 4)))  # percentile_cont interpolation
    assert (board.succeeded, board.failed) == (2, 1)
    assert board.expired == 1 and board.by_policy == 1
    assert {(r.label, r.approved, r.rejected) for r in board.by_agent} == {("helper-bot", 2, 1), ("deploy-bot", 1, 1)}
    assert {(r.label, r.approved, r.rejected) for r in board.by_type} == {
        ("decision.only", 2, 1),
        ("http.request", 1, 1),
    }
    assert len(board.per_day) == 7
    assert (board.per_day[-1].approved, board.per_day[-1].rejected) == (1, 1)
    assert sum(d.total for d in board.per_day) == 6  # five decisions and one expiry
    assert [a.result["error"] for a in board.recent_failures] == ["HTTP 500 <boom>"]

    month = dashboard.dashboard_for(reviewer, days=30)
    assert (month.decisions, month.rejected) == (6, 3)
    assert month.median_seconds == pytest.approx(210)
    assert len(month.per_day) == 30


def test_dashboard_percentiles_match_between_postgres_and_python(reviewer, known_data):
    assert connection.vendor == "postgresql"
    board = dashboard.dashboard_for(reviewer, days=30)
    seconds = sorted(
        (a.decided_at - a.created_at).total_seconds()
        for a in ActionRequest.objects.filter(
            reviewer_group__name="reviewers", policy_effect="require", status__in=dashboard.DECIDED
        )
    )
    assert dashboard.percentile(seconds, 0.5) == pytest.approx(board.median_seconds)
    assert dashboard.percentile(seconds, 0.9) == pytest.approx(board.p90_seconds)
    assert dashboard.percentile([], 0.5) is None


def test_dashboard_page_draws_escaped_svg_charts_and_the_staff_see_everything(browser, known_data, owner):
    create_agent(name="evil-bot", owner=owner, actor=CLI, allow=["decision.only"])
    html = browser.get("/dashboard").content.decode()
    assert '<svg class="chart" id="chart-daily"' in html and 'role="img"' in html
    assert "helper-bot" in html and "HTTP 500 &lt;boom&gt;" in html and "<boom>" not in html
    assert re.search(r'id="stat-pending">.*?class="stat-value">2<', html, re.S)
    assert re.search(r'id="stat-median">.*?class="stat-value">3 min<', html, re.S)

    staff = User.objects.create_user("stella", password="pw-stella", is_staff=True)
    assert dashboard.dashboard_for(staff, days=7).pending_now == 3
    assert dashboard.dashboard_for(staff, days=7).failed == 2


def test_charts_scale_and_label():
    days = [dashboard.Day(timezone.localdate() - timedelta(days=6 - i), i, 1, 0) for i in range(7)]
    chart = charts.daily_chart(days)
    assert len([r for r in chart.rects if r.kind == "approved"]) == 6  # the first day approved none
    assert "21 approved, 7 rejected" in chart.summary
    rates = charts.rate_chart([dashboard.RateRow("a" * 40, 3, 1)], what="agent")
    assert rates.labels[0].text.endswith("…") and rates.labels[0].title == "a" * 40
    assert rates.labels[1].text == "75% of 4"


# --- approve with edits: checked inline ---------------------------------------------------------


def test_edited_params_are_checked_without_deciding(browser, agent_api, credential, agent):
    from agents.models import Capability

    action = api_propose(
        agent_api,
        action_type="http.request",
        params={"credential": "internal-api", "method": "POST", "path": "/v1/restarts"},
    )
    url = f"/actions/{action['id']}/check-params"

    def check(params):
        text = params if isinstance(params, str) else json.dumps(params)
        response = browser.post(url, {"params": text})
        assert response.status_code == 200
        return response.json()

    result = check({"credential": "internal-api", "method": "PUT", "path": "/v1/restarts"})
    assert (result["ok"], result["changed"], result["errors"]) == (True, True, {})
    # The policy is re-evaluated on the edit, as approving would (approvals.policies.evaluation).
    assert result["policy"]["rule"] == "default" and result["policy"]["your_approval_counts"] is True
    assert check({"credential": "internal-api", "method": "POST", "path": "/v1/restarts"})["changed"] is False
    assert check("")["ok"] is True

    result = check({"credential": "internal-api", "method": "TELEPORT", "path": "/v1/restarts"})
    assert result["ok"] is False and "params.method" in result["errors"]
    result = check({"credential": "internal-api", "path": "/v1/restarts"})
    assert result["errors"]["params.method"] == ["This field is required."]
    result = check({"credential": "nope", "method": "GET", "path": "/x"})
    assert "params.credential" in result["errors"]
    assert check("{not json")["errors"]["params"][0].startswith("Not valid JSON")
    assert check("[1, 2]")["errors"] == {"params": ["The parameters must be a JSON object."]}

    Capability.objects.filter(agent=agent, action_type="http.request").update(constraints={"path": ["/v1/*"]})
    result = check({"credential": "internal-api", "method": "POST", "path": "/admin"})
    assert result["ok"] is False and "capability" in result["errors"]["params"][0]

    assert ActionRequest.objects.get(id=action["id"]).status == ActionStatus.PENDING  # nothing was decided


def test_params_check_needs_csrf_and_visibility(reviewer, outsider, agent_api):
    action = api_propose(agent_api)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(reviewer)
    assert strict.post(f"/actions/{action['id']}/check-params", {"params": "{}"}).status_code == 403
    nosy = Client()
    nosy.force_login(outsider)
    assert nosy.post(f"/actions/{action['id']}/check-params", {"params": "{}"}).status_code == 404
    assert nosy.get(f"/actions/{action['id']}/check-params").status_code == 405


# --- high and critical risk ask twice --------------------------------------------------------------


def test_high_risk_approval_in_the_web_form_needs_the_confirmation(browser, agent_api):
    action = api_propose(agent_api)
    ActionRequest.objects.filter(id=action["id"]).update(risk="high")
    page = browser.get(f"/actions/{action['id']}").content.decode()
    assert 'data-confirm="high"' in page and 'name="confirm_risk"' in page

    response = browser.post(f"/actions/{action['id']}/approve", {}, follow=True)
    assert "This is a high-risk action: confirm" in response.content.decode()
    assert ActionRequest.objects.get(id=action["id"]).status == ActionStatus.PENDING

    browser.post(f"/actions/{action['id']}/approve", {"confirm_risk": "yes"})
    assert ActionRequest.objects.get(id=action["id"]).status == ActionStatus.APPROVED


def test_medium_risk_needs_no_confirmation(browser, agent_api):
    action = api_propose(agent_api)
    assert "data-confirm=" not in browser.get(f"/actions/{action['id']}").content.decode()
    browser.post(f"/actions/{action['id']}/approve", {})
    assert ActionRequest.objects.get(id=action["id"]).status == ActionStatus.APPROVED


# --- execution progress -------------------------------------------------------------------------


def test_progress_steps_follow_the_action(reviewers_group, agent):
    def steps(**fields):
        return [(s.label, s.state) for s in progress.progress_steps(make_action(agent, reviewers_group, **fields))]

    assert steps()[1] == ("Awaiting approval", "current")
    assert steps(status="approved")[-2:] == [("Queued", "current"), ("Executing", "todo")]
    assert steps(status="executing")[-1] == ("Executing", "current")
    now = timezone.now()
    assert steps(status="succeeded", execution_started_at=now, finished_at=now)[-1] == ("Succeeded", "done")
    assert steps(status="failed", execution_started_at=now, finished_at=now)[-2:] == [
        ("Executed", "done"),
        ("Failed", "failed"),
    ]
    assert steps(status="rejected") == [("Proposed", "done"), ("Rejected", "stopped")]
    assert steps(status="approved", finished_at=now)[-1] == ("Handed back to the agent", "done")


def test_detail_page_shows_the_failure_and_history_keeps_the_result(browser, reviewers_group, agent):
    now = timezone.now()
    failed = make_action(
        agent,
        reviewers_group,
        status="failed",
        decided_at=now,
        execution_started_at=now,
        finished_at=now,
        result={"error": "target said 503 <b>"},
    )
    live = browser.get(f"/actions/{failed.id}/live").content.decode()
    assert 'class="step failed"' in live and "target said 503 &lt;b&gt;" in live
    history = browser.get("/history").content.decode()
    assert "target said 503 &lt;b&gt;" in history


# --- the websocket: presence and catching up -----------------------------------------------------


IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture(params=["channels-redis", "in-memory"])
def layer(request):
    """Each test drives the app from its own event loop: a fresh layer per test (as in test_live)."""
    channel_layers.backends.clear()
    if request.param == "in-memory":
        with override_settings(CHANNEL_LAYERS=IN_MEMORY):
            channel_layers.backends.clear()
            yield request.param
    else:
        yield request.param
    channel_layers.backends.clear()


def session_headers(username: str) -> list[tuple[bytes, bytes]]:
    client = Client()
    assert client.login(username=username, password=f"pw-{username}")
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    return [
        (b"host", b"127.0.0.1"),
        (b"origin", b"http://127.0.0.1"),
        (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode()),
    ]


class Socket:
    """A page's live connection, spoken in ASGI messages."""

    def __init__(self, headers):
        scope = {
            "type": "websocket",
            "path": "/ws/events/",
            "query_string": b"",
            "headers": headers,
            "subprotocols": [],
        }
        self.comm = ApplicationCommunicator(application, scope)

    async def open(self) -> None:
        await self.comm.send_input({"type": "websocket.connect"})
        reply = await self.comm.receive_output(timeout=WAIT)
        assert reply["type"] == "websocket.accept", reply

    async def send(self, data: dict) -> None:
        await self.comm.send_input({"type": "websocket.receive", "text": json.dumps(data)})

    async def receive(self, timeout: float = WAIT) -> dict:
        message = await self.comm.receive_output(timeout=timeout)
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])

    async def until(self, predicate, what: str) -> dict:
        heard = []
        while True:
            try:
                message = await self.receive()
            except TimeoutError:
                raise AssertionError(f"never heard {what} within {WAIT}s; heard {heard}") from None
            heard.append(message)
            if predicate(message):
                return message

    async def presence(self, action_id: str, viewers: list[str]) -> dict:
        return await self.until(
            lambda m: m.get("type") == "presence" and m["action_id"] == action_id and m["viewers"] == viewers,
            f"presence {viewers} for {action_id}",
        )

    async def close(self) -> None:
        await self.comm.send_input({"type": "websocket.disconnect", "code": 1000})
        with contextlib.suppress(TimeoutError):
            await self.comm.wait(timeout=1)


@override_settings(COUNTERSIGN_PRESENCE_HEARTBEAT_SECONDS=0.3)
def test_presence_appears_disappears_and_is_kept_from_outsiders(layer, reviewer, second_reviewer, outsider, agent_api):
    outsider.groups.add(Group.objects.create(name="finance-reviewers"))
    action_id = api_propose(agent_api)["id"]
    headers = {name: session_headers(name) for name in ("rita", "sam", "oscar")}

    async def scenario():
        rita, sam, oscar = (Socket(headers[n]) for n in ("rita", "sam", "oscar"))
        for s in (rita, sam, oscar):
            await s.open()
        try:
            await rita.send({"type": "watch", "action_id": action_id})
            await rita.presence(action_id, [])
            await oscar.send({"type": "watch", "action_id": action_id})  # may not see it: joins nothing
            await sam.send({"type": "watch", "action_id": action_id})
            await sam.presence(action_id, ["rita"])  # rita answered sam's join directly
            await rita.presence(action_id, ["sam"])
            # Heartbeats keep sam listed (unheard for three of them, rita would drop him and say so),
            # and oscar never comes in.
            assert await rita.comm.receive_nothing(timeout=1.5)
            assert await sam.comm.receive_nothing(timeout=0.1)
            await sam.close()
            await rita.presence(action_id, [])  # sam said goodbye
        finally:
            for s in (rita, oscar):
                await s.close()

    async_to_sync(scenario)()


@override_settings(COUNTERSIGN_PRESENCE_HEARTBEAT_SECONDS=0.2)
def test_a_watcher_that_vanishes_without_a_goodbye_is_forgotten(layer, reviewer, agent_api):
    action_id = api_propose(agent_api)["id"]
    headers = session_headers("rita")

    async def scenario():
        rita = Socket(headers)
        await rita.open()
        try:
            await rita.send({"type": "watch", "action_id": action_id})
            await rita.presence(action_id, [])
            # A socket in a process that then crashed: it joined, and was never heard from again.
            layer_ = channel_layers["default"]
            ghost = {"action_id": action_id, "channel": "ghost-channel", "user_id": 999, "username": "ghost"}
            await layer_.group_send(f"presence-{action_id}", {"type": "presence.join", **ghost})
            await rita.presence(action_id, ["ghost"])
            await rita.presence(action_id, [])  # three missed heartbeats later
        finally:
            await rita.close()

    async_to_sync(scenario)()


def test_a_reconnecting_page_catches_up_on_what_it_missed_and_nothing_else(
    reviewer, outsider, reviewers_group, agent_api, agent
):
    channel_layers.backends.clear()
    finance = Group.objects.create(name="finance-reviewers")
    before = OutboxMessage.objects.filter(kind="push").order_by("-id").values_list("id", flat=True).first() or 0
    seen_by_rita = api_propose(agent_api)["id"]
    api = token_client(reviewer)
    assert api.post(f"/api/v1/actions/{seen_by_rita}/approve", {}, format="json").status_code == 200
    # A push for another group's action, written like the services write them.
    other = make_action(agent, finance)
    from django.db import transaction

    from approvals.services.transitions import publish

    with transaction.atomic():
        publish(other)
    headers = session_headers("rita")

    async def scenario():
        rita = Socket(headers)
        await rita.open()
        try:
            await rita.send({"type": "resume", "since": before})
            first = await rita.receive()
            second = await rita.receive()
            assert [(m["action_id"], m["status"]) for m in (first, second)] == [
                (seen_by_rita, "pending"),
                (seen_by_rita, "approved"),
            ]
            assert first["replayed"] is True and first["seq"] < second["seq"]
            assert set(first) == {
                "type",
                "action_id",
                "status",
                "approvals",
                "required_approvals",
                "reviewer_group_id",
                "seq",
                "replayed",
            }, "a replayed push carries ids and status only, like a live one"
            await rita.send({"type": "ping"})
            assert await rita.receive() == {"type": "pong"}, "the other group's push was not replayed"

            await rita.send({"type": "resume", "since": 10**12})  # a seq nobody wrote: nothing newer, nothing to do
            await rita.send({"type": "resume", "since": "yesterday"})
            assert await rita.receive() == {"type": "resync"}
        finally:
            await rita.close()
        channel_layers.backends.clear()

    async_to_sync(scenario)()


def test_replay_includes_a_late_commit_just_before_the_last_seen_seq(reviewer, reviewers_group, agent):
    from approvals.live.events import missed_events

    early = OutboxMessage.objects.create(
        kind="push", payload={"action_id": "a", "status": "pending", "reviewer_group_id": reviewers_group.id}
    )
    last_seen = OutboxMessage.objects.create(
        kind="push", payload={"action_id": "b", "status": "pending", "reviewer_group_id": reviewers_group.id}
    )
    events, complete = missed_events(staff=False, group_ids={reviewers_group.id}, since=last_seen.id)
    assert complete
    assert [e["seq"] for e in events] == [early.id, last_seen.id], "recent rows are sent again; pages skip seen seqs"
    events, complete = missed_events(staff=False, group_ids={reviewers_group.id + 1}, since=last_seen.id)
    assert events == [] and complete


@pytest.mark.django_db
@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="a PostgreSQL plan")
@pytest.mark.parametrize("staff", [False, True], ids=["reviewer", "staff"])
def test_the_queue_of_every_status_reads_its_page_not_the_whole_history(staff, reviewer, reviewers_group, agent):
    """The default sort, expiring soonest, with "any status": a group's page and staff's read the page's rows from an
    index in that order (migration approvals 0023), where PostgreSQL read and sorted every action ever proposed (537 ms
    at a million; docs/BENCHMARKS.md, section 4)."""
    from bench.api_cost import copy_pending

    copy_pending(str(propose(agent).id), 3000)
    with connection.cursor() as cursor:  # a history, each action expiring at its own time
        cursor.execute("UPDATE approvals_actionrequest SET expires_at = created_at + random() * interval '30 days'")
        cursor.execute("ANALYZE approvals_actionrequest")
    principal = User.objects.create_user("stella", is_staff=True) if staff else reviewer
    with CaptureQueriesContext(connection) as queries:
        page = desk.queue_page(principal, desk.QueueFilters(status=desk.ALL), with_facets=False)
    soonest = ActionRequest.objects.order_by("expires_at", "id").values_list("id", flat=True)[: desk.PAGE_SIZE]
    assert [row.id for row in page.rows] == list(soonest)
    (statement,) = (
        q["sql"] for q in queries.captured_queries if 'ORDER BY "approvals_actionrequest"."expires_at"' in q["sql"]
    )
    assert rows_read(analyzed_plan(statement)) <= desk.PAGE_SIZE + 1  # the page, and one more to know if more follow
