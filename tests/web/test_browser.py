"""The reviewer's pages in a real Chromium, against a real uvicorn and Celery worker.

The agent talks to the same uvicorn over HTTP; the pages learn about changes
only through the websocket (channels-redis), so every "without reload" below
is the live path end to end.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import TARGET_SECRET, propose_body
from tests.support.browser_support import (  # noqa: F401 - fixtures, found by pytest in this module's namespace
    LIVE,
    agent_http,
    allow_sync_orm_beside_playwright,
    assert_not_reloaded,
    browser,
    browser_context_args,
    browser_type,
    browser_type_launch_args,
    log_in,
    mark_document,
    playwright,
    screenshot,
    wait_until_live,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


# --- tests ---------------------------------------------------------------------------------


def test_reviewer_sees_a_proposal_arrive_approves_it_and_watches_it_succeed(
    page, web_server, celery_worker, reviewer, agent_key, credential, target
):
    # The target answers slowly, so "succeeded" can only reach the page after it is open and live.
    target.delay = 1.5
    log_in(page, "rita")
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_role("heading", name=re.compile("Waiting for you"))).to_be_visible()
    expect(page.locator("#queue-empty")).to_be_visible()
    wait_until_live(page)
    mark_document(page)

    # The agent proposes over HTTP, as an agent would.
    with agent_http(web_server, agent_key) as agent:
        response = agent.post(
            "/api/v1/actions",
            json=propose_body(
                action_type="http.request",
                params={
                    "credential": "internal-api",
                    "method": "POST",
                    "path": "/v1/restarts",
                    "json": {"service": "billing"},
                },
                summary="Restart the billing service via the ops API",
                context={"reasoning": "Billing has been stuck for ten minutes."},
            ),
        )
    assert response.status_code == 201, response.text
    action = response.json()
    assert action["status"] == "pending"

    # The row arrives without a reload.
    row = page.locator(f"#action-{action['id']}")
    expect(row).to_be_visible(timeout=LIVE)
    expect(row).to_contain_text("Restart the billing service via the ops API")
    expect(row).to_contain_text("helper-bot")
    expect(row).to_contain_text("http.request")
    expect(row).to_contain_text("0 of 1")
    expect(page.locator("#queue-count")).to_have_text("1")
    expect(page.locator("#queue-empty")).to_be_hidden()
    assert_not_reloaded(page)
    assert target.requests == [], "nothing runs before a human approves"
    screenshot(page, "queue.png")

    # The detail page shows what it would do and who asks.
    row.get_by_role("link", name="Restart the billing service via the ops API").click()
    expect(page).to_have_url(re.compile(rf"/actions/{action['id']}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Restart the billing service via the ops API")
    expect(page.locator(".meta")).to_contain_text("proposed by helper-bot (owner olivia)")
    params = page.locator("#params")
    for fragment in (
        '"credential": "internal-api"',
        '"method": "POST"',
        '"path": "/v1/restarts"',
        '"service": "billing"',
    ):
        expect(params).to_contain_text(fragment)
    expect(page.locator(".reasoning")).to_have_text("Billing has been stuck for ten minutes.")
    expect(page.locator(".policy")).to_contain_text("needs 1 approval from reviewers")
    expect(page.locator("#action-status")).to_have_text("pending")
    screenshot(page, "detail.png")

    # Approve through the form; the post redirects back to the detail page.
    page.get_by_label("Comment (optional)").fill("Go ahead.")
    page.get_by_role("button", name="Approve", exact=True).click()
    expect(page.locator(".messages")).to_contain_text("Approved.")
    wait_until_live(page)
    status_when_live = page.evaluate("window.__marker = 1; document.getElementById('action-status').textContent")
    assert status_when_live in ("approved", "executing"), status_when_live

    # The worker runs it; the page follows without a reload.
    expect(page.locator("#action-status")).to_have_text("succeeded", timeout=LIVE)
    assert_not_reloaded(page)
    expect(page.locator("#result")).to_contain_text('"status_code": 200')
    expect(page.locator(".decide")).to_have_count(0)  # nothing left to decide
    assert TARGET_SECRET not in page.content()
    screenshot(page, "succeeded.png")

    [request] = target.requests
    assert (request.method, request.path) == ("POST", "/v1/restarts")
    assert request.headers["Authorization"] == f"Bearer {TARGET_SECRET}"
    assert request.json() == {"service": "billing"}


def test_rejection_with_a_reason_reaches_the_agent_and_clears_other_queues(
    page, new_context, web_server, reviewer, second_reviewer, agent_key
):
    with agent_http(web_server, agent_key) as agent:
        response = agent.post("/api/v1/actions", json=propose_body(summary="Restart the billing service now"))
        assert response.status_code == 201, response.text
        action_id = response.json()["id"]

        # Sam has the queue open; the row is there when the page loads.
        sam = new_context().new_page()
        log_in(sam, "sam")
        sam_row = sam.locator(f"#action-{action_id}")
        expect(sam_row).to_be_visible()
        expect(sam.locator("#queue-count")).to_have_text("1")
        wait_until_live(sam)
        mark_document(sam)

        # Rita rejects it with a reason.
        log_in(page, "rita")
        page.locator(f"#action-{action_id}").get_by_role("link").click()
        page.get_by_label("Reason for rejecting (sent to the agent)").fill(
            "Billing is mid-invoice run; wait until 18:00."
        )
        page.get_by_role("button", name="Reject").click()
        expect(page.locator(".messages")).to_contain_text("Rejected; the reason goes back to the agent.")
        expect(page.locator("#action-status")).to_have_text("rejected")
        expect(page.locator(".status-card")).to_contain_text("Billing is mid-invoice run; wait until 18:00.")
        expect(page.locator(".decide")).to_have_count(0)

        # The row leaves Sam's queue without a reload.
        expect(sam_row).to_have_count(0, timeout=LIVE)
        expect(sam.locator("#queue-count")).to_have_text("0")
        expect(sam.locator("#queue-empty")).to_be_visible()
        assert_not_reloaded(sam)

        # The agent reads the outcome and the reason.
        seen = agent.get(f"/api/v1/actions/{action_id}").json()
    assert seen["status"] == "rejected"
    assert seen["decision"]["outcome"] == "rejected"
    assert seen["decision"]["reason"] == "Billing is mid-invoice run; wait until 18:00."
    assert [(r["reviewer"], r["verdict"], r["via"]) for r in seen["decision"]["reviews"]] == [("rita", "reject", "web")]


def test_page_shows_what_changed_before_its_socket_first_opened(page, web_server, reviewer, agent_key):
    """A change between the server rendering a page and its socket opening still shows.

    (Seen without this: right after Approve, the detail page stayed "approved" or
    "executing" although the worker had already finished.)
    """
    log_in(page, "rita")
    # Hold live.js, so this page's socket opens only after the proposal below.
    held = []
    page.route("**/static/js/live.js", lambda route: held.append(route))
    with page.expect_request("**/static/js/live.js"):
        page.goto("/", wait_until="commit")
    expect(page.locator("#queue-empty")).to_be_visible()

    with agent_http(web_server, agent_key) as agent:
        response = agent.post("/api/v1/actions", json=propose_body())
    assert response.status_code == 201, response.text  # its push was sent before this answer
    held[0].continue_()
    wait_until_live(page)

    expect(page.locator(f"#action-{response.json()['id']}")).to_be_visible(timeout=3_000)
