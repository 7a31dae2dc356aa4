"""The history page (issue 20, point 7): ordered by decision time, who decided each action, its filters (status,
agent, type, decided by, date range) and keyset pages that keep them."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from approvals import services
from approvals.models import ActionRequest, Review
from approvals.web import views
from tests.factories import AgentFactory, propose

pytestmark = pytest.mark.django_db


@pytest.fixture
def decided(agent, reviewer, second_reviewer):
    """Three proposals decided in another order than proposed: the last proposed is decided first."""
    first = propose(agent, summary="First proposed, decided last")
    second = propose(agent, summary="Second proposed, rejected by sam")
    third = propose(agent, summary="Third proposed, decided first")
    services.approve_action(action_id=third.id, reviewer=second_reviewer, via=Review.Via.WEB)
    services.reject_action(action_id=second.id, reviewer=second_reviewer, via=Review.Via.WEB, reason="Not now.")
    services.approve_action(action_id=first.id, reviewer=reviewer, via=Review.Via.WEB)
    return first, second, third


def summaries(html: str) -> list[str]:
    return re.findall(r'<td class="summary"><a href="[^"]+">([^<]+)</a>', html)


def rows(html: str) -> list[tuple[str, str]]:
    """(summary, decided by) per row, in order."""
    found = re.findall(
        r'<td class="summary"><a href="[^"]+">([^<]+)</a>.*?<td class="decided-by">([^<]*)</td>', html, re.S
    )
    return [(s, by) for s, by in found]


def test_history_is_ordered_by_decision_time_and_says_who_decided(reviewer, decided):
    browser = Client()
    browser.force_login(reviewer)
    html = browser.get("/history").content.decode()
    assert rows(html) == [
        ("First proposed, decided last", "rita"),
        ("Second proposed, rejected by sam", "sam"),
        ("Third proposed, decided first", "sam"),
    ]
    assert '<th scope="col">Decided by</th>' in html and 'class="badge status rejected">rejected<' in html


def test_the_filters_narrow_the_history_and_say_when_nothing_matches(reviewer, decided, owner):
    first = decided[0]
    other_agent = AgentFactory(name="deploy-bot", owner=owner)
    elsewhere = propose(other_agent, summary="Deploy bot proposal")
    services.reject_action(action_id=elsewhere.id, reviewer=reviewer, via=Review.Via.WEB, reason="No.")
    browser = Client()
    browser.force_login(reviewer)

    def shown(**query):
        return summaries(browser.get("/history", query).content.decode())

    assert shown(status="rejected") == ["Deploy bot proposal", "Second proposed, rejected by sam"]
    assert shown(decided_by="sam") == ["Second proposed, rejected by sam", "Third proposed, decided first"]
    assert shown(decided_by="SAM", status="approved") == ["Third proposed, decided first"]
    assert shown(agent="deploy-bot") == ["Deploy bot proposal"]
    assert shown(action_type="decision.only", agent="helper-bot", decided_by="rita") == [first.summary]
    today = timezone.now().date()
    assert len(shown(since=today.isoformat(), until=today.isoformat())) == 4
    assert shown(since=(today + timedelta(days=1)).isoformat()) == []
    assert shown(until=(today - timedelta(days=1)).isoformat()) == []
    html = browser.get("/history", {"decided_by": "nobody-here"}).content.decode()
    assert "No decided actions match these filters." in html and 'id="history-clear"' in html
    # Values not understood are dropped, not a 500: a made-up status, a date that is not one.
    assert len(shown(status="bogus", since="yesterday", until="2026-13-45")) == 4


def test_keyset_pages_keep_the_filters_and_cover_everything_once(reviewer, decided, monkeypatch):
    monkeypatch.setattr(views, "HISTORY_PAGE", 1)
    browser = Client()
    browser.force_login(reviewer)
    seen, url = [], "/history?action_type=decision.only"
    while url:
        html = browser.get(url).content.decode()
        seen += summaries(html)
        older = re.search(r'<a href="([^"]+)" id="history-older">', html)
        url = "/history" + older.group(1).replace("&amp;", "&") if older else ""
        if url:
            assert "action_type=decision.only" in url, "the next page keeps the filters"
    expected = list(ActionRequest.objects.order_by("-decided_at", "-id").values_list("summary", flat=True))
    assert seen == expected and len(seen) == 3

    response = browser.get("/history", {"before": "not-a-cursor", "status": "approved"}, follow=True)
    assert response.redirect_chain == [("/history?status=approved", 302)]
    assert "That page link is not valid" in response.content.decode()


def test_history_shows_only_what_the_reviewer_may_see(decided, outsider):
    browser = Client()
    browser.force_login(outsider)
    html = browser.get("/history").content.decode()
    assert summaries(html) == [] and "No decided actions yet." in html


def test_a_late_decision_says_who_decided_and_when(agent, reviewer, second_reviewer):
    action = propose(agent, summary="Decided under rita's nose")
    services.reject_action(action_id=action.id, reviewer=second_reviewer, via=Review.Via.SLACK, reason="No.")
    at = ActionRequest.objects.get(id=action.id).decided_at.strftime("%H:%M")
    response = client_for(reviewer).post(f"/actions/{action.id}/reject", {"reason": "Too risky"}, follow=True)
    html = response.content.decode()
    assert "sam rejected this " in html and f"at {at} UTC; it can no longer be decided." in html
    assert 'id="decided-by" data-by="sam" data-outcome="rejected"' in html  # and the page says it too
    assert ActionRequest.objects.get(id=action.id).decision_reason == "No."


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client
