"""An action whose type was uninstalled after it was proposed (COUNTERSIGN_ACTION_TYPES changed) cannot be
approved: nothing could check edited parameters or run it. The reviewer is told so (409), and may still reject."""

from __future__ import annotations

from approvals.models import ActionStatus
from catalog import registry
from tests.factories import propose


def test_approving_an_uninstalled_type_is_a_clear_conflict_and_rejecting_still_works(agent, reviewer_api, monkeypatch):
    action = propose(agent)
    monkeypatch.delitem(registry._registry, "decision.only")

    for body in ({}, {"edited_params": {"command": "stop", "service": "billing"}}):
        response = reviewer_api.post(f"/api/v1/actions/{action.id}/approve", body, format="json")
        assert response.status_code == 409, response.content
        assert response["Content-Type"] == "application/problem+json"
        assert "no longer installed" in response.json()["detail"]
    action.refresh_from_db()
    assert action.status == ActionStatus.PENDING and action.reviews.count() == 0

    rejected = reviewer_api.post(f"/api/v1/actions/{action.id}/reject", {"reason": "type removed"}, format="json")
    assert rejected.status_code == 200, rejected.content
    action.refresh_from_db()
    assert action.status == ActionStatus.REJECTED
