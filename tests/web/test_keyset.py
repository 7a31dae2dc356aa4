"""The one keyset pager (approvals/selectors/keyset.py): its cursor, and the lists that page with it (the history page,
the API's action list; the queue's and the audit log's are in test_desk.py and test_audit_page.py)."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from approvals.models import ActionRequest, ActionStatus
from approvals.web import views
from tests.conftest import propose_body

pytestmark = pytest.mark.django_db


def test_the_history_pages_through_ties_without_repeats(reviewer, reviewers_group, agent, monkeypatch):
    now = timezone.now()
    same = now - timedelta(minutes=5)  # four rows share a time: the id decides their order
    for i in range(7):
        created = same if i < 4 else now - timedelta(minutes=i)
        ActionRequest.objects.create(
            agent=agent,
            action_type="decision.only",
            params={},
            summary=f"done {i}",
            request_digest=uuid.uuid4().hex,
            reviewer_group=reviewers_group,
            status=ActionStatus.REJECTED,
            created_at=created,
            updated_at=created,
            decided_at=created,  # the history is ordered by decision time
            expires_at=created + timedelta(hours=1),
        )
    monkeypatch.setattr(views, "HISTORY_PAGE", 3)
    browser = Client()
    browser.force_login(reviewer)
    seen, query = [], {}
    while True:
        response = browser.get("/history", query)
        assert response.status_code == 200
        seen += [a.id for a in response.context["actions"]]
        cursor = response.context["next_cursor"]
        if not cursor:
            break
        assert f"before={cursor}" in response.content.decode()
        query = {"before": cursor}
    expected = list(ActionRequest.objects.order_by("-decided_at", "-id").values_list("id", flat=True))
    assert seen == expected and len(seen) == 7


def test_the_api_list_pages_forward_and_back(agent_api):
    ids = [
        agent_api.post("/api/v1/actions", propose_body(summary=f"a{i}"), format="json").json()["id"] for i in range(5)
    ]
    pages, url = [], "/api/v1/actions?limit=2&status=pending"
    while url:
        page = agent_api.get(url).json()
        pages.append([a["id"] for a in page["results"]])
        assert "status=pending" in (page["next"] or "status=pending") and "limit=2" in (page["next"] or "limit=2")
        url = page["next"]
    assert pages == [ids[4:2:-1], ids[2:0:-1], ids[:1]]
    assert agent_api.get("/api/v1/actions?limit=2").json()["previous"] is None

    last = agent_api.get("/api/v1/actions?limit=2&cursor=" + _cursor_of(agent_api, 2)).json()
    back = agent_api.get(last["previous"]).json()
    assert [a["id"] for a in back["results"]] == pages[1]
    first = agent_api.get(back["previous"]).json()
    assert [a["id"] for a in first["results"]] == pages[0] and first["previous"] is None
    assert agent_api.get("/api/v1/actions?cursor=").status_code == 200  # empty: the first page


def _cursor_of(client, n: int) -> str:
    """The cursor of the ``n``-th page (0-based) of two."""
    url = "/api/v1/actions?limit=2"
    for _ in range(n):
        url = client.get(url).json()["next"]
    return re.search(r"cursor=([\w-]+)", url).group(1)
