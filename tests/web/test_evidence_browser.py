# ruff: noqa: F811 - the SCIM fixtures come from tests/execution/test_type_scim
"""Issue 20, points 2 and 4 in a real Chromium: a preview that knows execution will fail leads with it and
disables Approve (approving anyway takes a typed reason); a decided action shows what was approved, what ran,
then the original proposal, with what the reviewer was shown. Screenshots: test-artifacts/screenshots/evidence-*."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from approvals import services
from approvals.models import ActionRequest, Review
from tests import factories
from tests.execution.test_type_scim import propose, scim, scim_agent  # noqa: F401 - fixtures
from tests.support.browser_support import (  # noqa: F401 - fixtures, found by pytest in this module's namespace
    allow_sync_orm_beside_playwright,
    browser,
    browser_context_args,
    browser_type,
    browser_type_launch_args,
    log_in,
    playwright,
    screenshot,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_will_fail_disables_approve_and_a_decided_action_shows_its_evidence(
    page, new_context, web_server, reviewer, scim, scim_credential, scim_agent
):
    action = propose(scim_agent, add=["alice", "zed"], remove=[])
    log_in(page, "rita")
    page.goto(f"/actions/{action.id}")

    warning = page.locator("#will-fail")
    expect(warning).to_contain_text("Execution will fail: the SCIM server knows no user zed")
    expect(page.locator("#preview-says")).to_have_text("Add alice and zed to engineering")
    approve = page.get_by_role("button", name="Approve", exact=True)
    expect(approve).to_be_disabled()
    # The warning comes before the diff it qualifies.
    assert warning.bounding_box()["y"] < page.locator("#preview .diff").bounding_box()["y"]
    screenshot(page, "evidence-will-fail.png", full_page=False)

    anyway = page.get_by_role("button", name="Approve anyway")
    anyway.click()  # no reason typed: nothing is sent
    expect(page.locator("#override-reason")).to_be_focused()
    assert not Review.objects.filter(action_id=action.id).exists()

    page.locator("#override-reason").fill("zed is being created in the IdP now")
    anyway.click()
    page.get_by_label("Type approve to confirm").fill("approve")
    page.get_by_role("button", name="Yes, approve").click()
    expect(page.locator(".messages")).to_contain_text("Approved.")
    review = Review.objects.get(action_id=action.id)
    assert review.override_reason == "zed is being created in the IdP now"
    assert review.evidence["preview"]["will_fail"] is True

    # A decision.only seat change approved at 35 instead of 40: the page leads with the 35.
    seats = factories.propose(
        scim_agent, "decision.only", {"action": "set_seats", "seats": 40, "account": "acme"}, summary="40 seats"
    )
    # (Editing in the page is point 1's, tested there; here the edited approval arrives through the service.)
    services.approve_action(
        action_id=seats.id,
        reviewer=reviewer,
        via=Review.Via.WEB,
        edited_params={"action": "set_seats", "seats": 35, "account": "acme"},
    )
    page.goto(f"/actions/{seats.id}")
    expect(page.locator("#describe")).to_have_text("Set seats account acme (seats: 35)")
    assert ActionRequest.objects.get(id=seats.id).effective_params["seats"] == 35

    approved, ran, proposal = (page.locator(s) for s in ("#approved-h", "#ran-h", "#params-h"))
    assert approved.bounding_box()["y"] < ran.bounding_box()["y"] < proposal.bounding_box()["y"]
    expect(page.locator("#approved-edits")).to_contain_text("params.seats")
    expect(page.locator("#ran")).to_contain_text("Countersign ran nothing")
    shown = page.locator(".evidence-shown").first
    shown.locator("summary").click()
    expect(shown).to_contain_text("Their edit")
    screenshot(page, "evidence-decided.png")

    for name, context in (
        ("dark", new_context(color_scheme="dark")),
        ("phone", new_context(viewport={"width": 390, "height": 844})),
    ):
        other = context.new_page()
        log_in(other, "rita")
        other.goto(f"/actions/{seats.id}")
        expect(other.locator("#approved-h")).to_be_visible()
        assert other.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), f"{name} overflows"
        screenshot(other, f"evidence-decided-{name}.png")
