# ruff: noqa: F811 - the SCIM fixtures come from tests/execution/test_type_scim
"""A preview that knows execution will fail says so first and disables Approve; approving anyway needs a typed
reason, stored with the review and audited (issue 20, point 4). A SCIM change naming a user the server does not
know, against a real SCIM server (tests/execution/test_type_scim.py)."""

from __future__ import annotations

import pytest
from django.test import Client

from approvals.models import ActionStatus, Review
from audit.models import AuditEvent
from tests.api.test_api import assert_problem
from tests.execution.test_type_scim import propose, scim, scim_agent  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db


def test_an_unknown_user_leads_the_preview_and_disables_approve(scim, scim_credential, scim_agent, reviewer):
    action = propose(scim_agent, add=["alice", "zed"], remove=[])
    client = Client()
    client.force_login(reviewer)

    page = client.get(f"/actions/{action.id}").content.decode()

    failure = "Execution will fail: the SCIM server knows no user zed; nothing would change."
    assert failure in page
    # Said first: before what it would do, the diff and the notes.
    lead = page.index('id="will-fail"')
    assert lead < page.index('id="preview-says"') < page.index('<div class="diff"') < page.index('"preview-notes"')
    approve_button = page[page.index('<button type="submit" class="primary approve"') :].split(">", 1)[0]
    assert " disabled" in approve_button
    assert 'name="override_reason"' in page and 'id="approve-anyway"' in page


def test_the_api_refuses_approving_without_a_reason_and_records_one_given(
    scim, scim_credential, scim_agent, reviewer, reviewer_api
):
    action = propose(scim_agent, add=["alice", "zed"], remove=[])

    refused = reviewer_api.post(f"/api/v1/actions/{action.id}/approve", {"comment": "fine"}, format="json")

    body = assert_problem(refused, 400, "override_reason")
    assert "will fail" in body["detail"] and "zed" in body["detail"]
    assert body["preview"]["will_fail"] is True
    assert not Review.objects.filter(action=action).exists()
    assert AuditEvent.objects.filter(verb="decision.refused", action_id=action.id).exists()

    reason = "zed is being created in the IdP right now; the second approver will wait for it"
    approved = reviewer_api.post(f"/api/v1/actions/{action.id}/approve", {"override_reason": reason}, format="json")

    assert approved.status_code == 200, approved.content
    review = Review.objects.get(action=action)
    assert review.override_reason == reason
    assert review.evidence["preview"]["will_fail"] is True
    event = AuditEvent.objects.get(action_id=action.id, verb="action.reviewed")
    assert event.data["override_reason"] == reason
    assert "zed" in event.data["will_fail"]
    action.refresh_from_db()
    assert action.status == ActionStatus.PENDING  # an access change needs a second person


def test_an_edit_that_removes_the_failure_needs_no_reason(scim, scim_credential, scim_agent, reviewer_api):
    action = propose(scim_agent, add=["alice", "zed"], remove=[])
    edited = {**action.params, "add": ["alice"]}

    response = reviewer_api.post(f"/api/v1/actions/{action.id}/approve", {"params": edited}, format="json")

    assert response.status_code == 200, response.content
    review = Review.objects.get(action=action)
    assert review.override_reason == ""
    assert review.evidence["approved_preview"]["will_fail"] is False
    assert review.evidence["edits"]["after"]["add"] == ["alice"]
