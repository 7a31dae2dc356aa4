# ruff: noqa: F811 - pytest fixtures come from tests/support/browser_support and tests/access/desk_support
"""The Active access page in a real Chromium against a real uvicorn (issue 23): the countdown runs, and staff end
a grant early from it; a reviewer who is not staff sees no button. Screenshot: test-artifacts/screenshots/."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from approvals.models import AccessLease, ActionRequest
from tests.access.desk_support import (
    granted,
    idp,  # noqa: F401 - fixture
    requester,  # noqa: F401 - fixture
    scim,  # noqa: F401 - fixture
    staff,  # noqa: F401 - fixture
)
from tests.support.browser_support import (  # noqa: F401 - fixtures, found by pytest in this module's namespace
    LIVE,
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


def test_the_countdown_runs_and_staff_end_access_early(page, web_server, idp, scim, reviewer, second_reviewer, staff):
    action = granted(idp, [reviewer, second_reviewer])
    log_in(page, "stella")
    page.get_by_role("link", name="Active access").click()
    expect(page).to_have_url(re.compile(r"/access$"))
    row = page.locator(f"#access-{action.id}")
    expect(row).to_contain_text("alice")
    expect(row).to_contain_text("rita, sam")

    countdown = row.locator("[data-countdown]")
    expect(countdown).to_have_text(re.compile(r"^1 h 59 min \d+ s left$|^2 h left$"))
    first = countdown.inner_text()
    expect(countdown).not_to_have_text(first, timeout=LIVE)  # it counts down in the page, without a reload
    screenshot(page, "access-active.png")

    row.get_by_role("button", name=re.compile("End early")).click()
    expect(page.locator(".messages")).to_contain_text("Ending the access now")
    expect(page.locator(f"#access-{action.id}")).to_contain_text("being taken back")
    # Taken back by the reversal, which a Celery worker running beside the suite (started by an earlier test) may
    # already have executed.
    assert AccessLease.objects.get(action=action).state in (AccessLease.State.REVERTING, AccessLease.State.REVERTED)
    assert ActionRequest.objects.filter(reverts=action).count() == 1


def test_a_reviewer_who_is_not_staff_sees_the_countdown_but_no_end_early(
    page, web_server, idp, scim, reviewer, second_reviewer
):
    action = granted(idp, [reviewer, second_reviewer])
    log_in(page, "rita")
    page.goto("/access")
    row = page.locator(f"#access-{action.id}")
    expect(row.locator("[data-countdown]")).to_contain_text("left")
    expect(row.get_by_role("button")).to_have_count(0)
