"""Reading the audit log: the staff page (filters, keyset pages), the action timeline, and export_audit."""

from __future__ import annotations

import io
import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from approvals import services
from approvals.selectors.audit import PAGE_SIZE, AuditFilter, audit_page
from audit import chain as audit
from audit.chain import Actor, record_event
from audit.models import AuditEvent
from tests import factories

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ACTION_A = uuid.UUID("aaaaaaaa-0000-4000-8000-000000000001")
ACTION_B = uuid.UUID("bbbbbbbb-0000-4000-8000-000000000002")


@pytest.fixture
def staff_client():
    user = User.objects.create_user("ada", "ada@example.com", "pw-ada", is_staff=True)
    client = Client()
    client.force_login(user)
    return client


def write(verb, *, actor="rita", agent="", action=None, at=None, monkeypatch=None, **data) -> AuditEvent:
    if at is not None:
        monkeypatch.setattr(audit.timezone, "now", lambda: at)
    with transaction.atomic():
        return record_event(
            actor=Actor("user", actor, "web"),
            verb=verb,
            object_type="action" if action else "user",
            object_id=str(action or actor),
            action_id=action,
            agent_name=agent,
            data=data,
        )


@pytest.fixture
def known_events(monkeypatch):
    """A small log with one hour between events, starting at T0."""
    rows = [
        ("action.proposed", "helper-bot", "helper-bot", ACTION_A),
        ("action.reviewed", "rita", "helper-bot", ACTION_A),
        ("action.approved", "rita", "helper-bot", ACTION_A),
        ("action.proposed", "deploy-bot", "deploy-bot", ACTION_B),
        ("action.rejected", "sam", "deploy-bot", ACTION_B),
        ("user.logged_in", "sam", "", None),
        ("user.login_failed", "anonymous", "", None),
    ]
    return [
        write(verb, actor=actor, agent=agent, action=action, at=T0 + timedelta(hours=i), monkeypatch=monkeypatch)
        for i, (verb, actor, agent, action) in enumerate(rows)
    ]


def seqs_on(response) -> list[int]:
    assert response.status_code == 200
    return [int(s) for s in re.findall(r'<tr id="event-(\d+)"', response.content.decode())]


def link(response, name: str) -> str | None:
    match = re.search(rf'<a href="([^"]+)"[^>]*id="audit-{name}"', response.content.decode())
    return match.group(1).replace("&amp;", "&") if match else None


# --- who may see it ---------------------------------------------------------------------------------


def test_the_audit_page_is_for_staff_only(known_events, reviewer, staff_client):
    anonymous = Client().get("/audit")
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]

    reviewer_client = Client()
    reviewer_client.force_login(reviewer)
    assert reviewer_client.get("/audit").status_code == 404
    assert 'href="/audit"' not in reviewer_client.get("/").content.decode()

    page = staff_client.get("/audit")
    everything = list(AuditEvent.objects.order_by("-seq").values_list("seq", flat=True))
    assert seqs_on(page) == everything  # newest first: the log-ins above, then the known events
    assert set(e.seq for e in known_events) < set(everything)
    html = staff_client.get("/").content.decode()
    assert 'href="/audit"' in html


def test_each_row_says_who_what_when_and_through_what(known_events, staff_client):
    html = staff_client.get("/audit", {"verb": "action.rejected"}).content.decode()
    row = re.search(r'<tr id="event-\d+".*?</tr>', html, re.S).group(0)
    assert "sam" in row and "user via web" in row and "action.rejected" in row
    assert "2026-03-01 13:00:00" in row and "agent deploy-bot" in row
    assert f'href="/actions/{ACTION_B}"' in row


def test_event_data_is_escaped(staff_client, monkeypatch):
    write("action.proposed", actor="helper-bot", summary="<script>alert(1)</script>")
    html = staff_client.get("/audit").content.decode()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html


# --- filters --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"actor": "sam"}, [5, 4]),
        ({"agent": "helper-bot"}, [2, 1, 0]),
        ({"verb": "action.proposed"}, [3, 0]),
        ({"verb": "user.*"}, [6, 5]),
        ({"action": str(ACTION_A)}, [2, 1, 0]),
        ({"since": "2026-03-01T11:00", "until": "2026-03-01T14:00"}, [4, 3, 2]),
        ({"since": "2026-03-01T14:00"}, [6, 5]),
        ({"until": "2026-03-01T10:00:00"}, [0]),
        ({"actor": "rita", "since": "2026-03-01T11:00"}, [2]),
        ({"agent": "deploy-bot", "verb": "action.rejected"}, [4]),
        ({"since": "2027-01-01T00:00"}, []),
        ({"actor": "nobody"}, []),
    ],
)
def test_filters(known_events, staff_client, query, expected):
    response = staff_client.get("/audit", query)
    shown = [s for s in seqs_on(response) if s <= known_events[-1].seq]
    assert shown == [known_events[i].seq for i in expected]


def test_an_invalid_filter_says_what_is_wrong(known_events, staff_client):
    response = staff_client.get("/audit", {"action": "not-a-uuid", "since": "yesterday"})
    html = response.content.decode()
    assert response.status_code == 200 and seqs_on(response) == []
    assert 'id="audit-errors"' in html and "action:" in html and "since:" in html


# --- keyset pages -----------------------------------------------------------------------------------


def test_pages_walk_the_whole_log_newest_first_without_gaps_or_repeats(staff_client):
    for i in range(2 * PAGE_SIZE + 20):
        write("test.event", actor="bulk", n=i)
    total = AuditEvent.objects.count()

    seen, response, pages = [], staff_client.get("/audit"), 0
    assert link(response, "newer") is None
    while True:
        pages += 1
        seen += seqs_on(response)
        older = link(response, "older")
        if older is None:
            break
        response = staff_client.get("/audit" + older)
    assert pages == 3
    assert seen == list(range(total, 0, -1))

    # And back again: "newer" from the last page returns the middle page exactly.
    middle = staff_client.get("/audit" + link(response, "newer"))
    assert seqs_on(middle) == list(range(total - PAGE_SIZE, total - 2 * PAGE_SIZE, -1))
    assert link(middle, "newer") is not None and link(middle, "older") is not None


def test_pages_keep_their_filter(staff_client):
    for i in range(2 * PAGE_SIZE + 10):
        write("test.even" if i % 2 else "test.odd", actor="bulk", n=i)
    first = staff_client.get("/audit", {"verb": "test.odd"})
    older = link(first, "older")
    assert "verb=test.odd" in older
    second = staff_client.get("/audit" + older)
    shown = seqs_on(first) + seqs_on(second)
    assert shown == list(AuditEvent.objects.filter(verb="test.odd").order_by("-seq").values_list("seq", flat=True))
    assert link(second, "older") is None


def test_the_page_stays_fast_on_a_large_log():
    """A few hundred thousand events: every filter is an index range, never a scan of the table."""
    n = 200_000
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {AuditEvent._meta.db_table}
                (seq, at, actor_type, actor, via, verb, object_type, object_id, action_id, agent_name,
                 data, request_id, body, prev_hash, hash)
            SELECT i, %s::timestamptz + i * interval '1 second', 'user', 'user-' || (i %% 500), 'web',
                   'verb.' || (i %% 40), 'action', i::text,
                   CASE WHEN i %% 1000 = 0 THEN %s::uuid END, 'agent-' || (i %% 200), '{{}}', '', '{{}}',
                   md5(i::text) || md5((i - 1)::text), md5(i::text) || md5((i + 1)::text)
            FROM generate_series(1, %s) AS i
            """,
            [T0, str(ACTION_A), n],
        )
        cursor.execute(f"ANALYZE {AuditEvent._meta.db_table}")

    mid = T0 + timedelta(seconds=n // 2)
    filters = [
        AuditFilter(),
        AuditFilter(actor="user-7"),
        AuditFilter(agent="agent-13"),
        AuditFilter(verb="verb.3"),
        AuditFilter(action_id=ACTION_A),
        AuditFilter(since=mid, until=mid + timedelta(hours=1)),
        AuditFilter(actor="user-7", since=T0, until=mid),
        AuditFilter(agent="agent-13", verb="verb.13", since=mid),
    ]

    # Speed itself is measured in bench/, not asserted here; the plans below must not scan the table.
    def timed_page(f, **cursor):
        with CaptureQueriesContext(connection) as queries:
            page = audit_page(f, **cursor)
        assert page.events, (f, cursor)
        for query in queries.captured_queries:
            with connection.cursor() as c:
                c.execute("EXPLAIN " + query["sql"])
                plan = "\n".join(row[0] for row in c.fetchall())
            assert "Seq Scan" not in plan, f"{f} {cursor}:\n{query['sql']}\n{plan}"
        return page

    for f in filters:
        first = timed_page(f)
        assert first.older is not None, f
        second = timed_page(f, before=first.older)
        back = timed_page(f, after=second.events[0].seq)
        assert [e.seq for e in back.events] == [e.seq for e in first.events]
        deep = timed_page(f, before=second.events[-1].seq - 1000) if not (f.since or f.action_id) else second
        assert all(e.seq < first.older for e in deep.events)


# --- the action page's timeline ---------------------------------------------------------------------


def test_the_action_timeline_shows_who_what_when_and_via(agent, reviewer):
    action = factories.propose(agent)
    services.approve_action(action_id=action.id, reviewer=reviewer, via="web", comment="fine by me")
    client = Client()
    client.force_login(reviewer)
    html = client.get(f"/actions/{action.id}").content.decode()
    timeline = html[html.index('class="timeline"') :]
    for event in AuditEvent.objects.filter(action_id=action.id):
        assert event.verb in timeline
        assert event.at.strftime("%Y-%m-%d %H:%M:%S") in timeline
    assert 'title="action.proposed">Proposed</span> by helper-bot <span class="via">via api' in timeline
    assert 'title="action.reviewed">Approved</span> by rita <span class="via">via web' in timeline
    assert "fine by me" in timeline


# --- export_audit -----------------------------------------------------------------------------------


def export(*args) -> list[dict]:
    out = io.StringIO()
    call_command("export_audit", *args, stdout=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_export_has_the_same_filters(known_events):
    assert [e["seq"] for e in export()] == [e.seq for e in known_events]
    assert [e["seq"] for e in export("--actor", "sam")] == [known_events[4].seq, known_events[5].seq]
    assert [e["verb"] for e in export("--agent", "deploy-bot")] == ["action.proposed", "action.rejected"]
    assert [e["verb"] for e in export("--verb", "user.*")] == ["user.logged_in", "user.login_failed"]
    assert [e["seq"] for e in export("--action", str(ACTION_A))] == [e.seq for e in known_events[:3]]
    window = export("--since-time", "2026-03-01T10:00:00Z", "--until-time", "2026-03-01T12:00")
    assert [e["seq"] for e in window] == [known_events[1].seq, known_events[2].seq]
    assert [e["seq"] for e in export("--since", str(known_events[4].seq))] == [e.seq for e in known_events[5:]]
    assert [e["seq"] for e in export("--since-time", "2026-03-01")] == [e.seq for e in known_events]
    line = export("--actor", "sam")[0]
    assert line["hash"] == known_events[4].hash and line["prev_hash"] == known_events[4].prev_hash


def test_export_refuses_a_bad_filter(known_events):
    with pytest.raises(CommandError, match="invalid filter value"):
        export("--since-time", "last tuesday")
    with pytest.raises(CommandError, match="invalid filter value"):
        export("--action", "123")
