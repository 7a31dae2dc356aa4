"""Triage mode in a real Chromium: list and detail side by side, a / r decide and move on, undo, bulk, and the
typed confirmation of a risky approval. Screenshots: test-artifacts/screenshots/triage-*.png.

The web server here has an undo window of its own (UNDO seconds); the session's server dispatches at once.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect

from approvals import services
from approvals.models import ActionRequest, ExecutionGrant, OutboxMessage, Review
from audit.models import AuditEvent
from tests.conftest import ARTIFACTS, propose_body
from tests.support.browser_support import (  # noqa: F401 - fixtures, found by pytest in this module's namespace
    agent_http,
    allow_sync_orm_beside_playwright,
    browser,
    browser_context_args,
    browser_type,
    browser_type_launch_args,
    log_in,
    playwright,
    screenshot,
)
from tests.support.servers import start_web

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

UNDO = 2  # seconds: long enough to press u, short enough to wait out


@pytest.fixture(scope="module")
def web_server(stack_env):
    web, url = start_web({**stack_env, "COUNTERSIGN_UNDO_SECONDS": str(UNDO)}, ARTIFACTS / "logs", name="web-triage")
    web.url = url
    yield web
    web.stop()


def propose(web_server, agent_key, *, risk: str = "low", **overrides) -> str:
    with agent_http(web_server, agent_key) as agent:
        response = agent.post("/api/v1/actions", json=propose_body(**overrides))
    assert response.status_code == 201, response.text
    action_id = response.json()["id"]
    ActionRequest.objects.filter(id=action_id).update(risk=risk)  # as a rule for this kind of action would set it
    return action_id


def status(action_id: str) -> str:
    return ActionRequest.objects.values_list("status", flat=True).get(id=action_id)


def pane(page: Page):
    return page.locator("#triage-detail .triage-action")


def test_a_and_r_decide_and_move_to_the_next_keeping_the_filter_and_position(page, web_server, reviewer, agent_key):
    ids = [propose(web_server, agent_key, summary=f"Deploy shard {n}") for n in range(1, 5)]
    other = propose(web_server, agent_key, summary="Rotate the search index")
    for offset, action_id in enumerate(ids):  # the queue sorts by expiry: shard 1 first
        ActionRequest.objects.filter(id=action_id).update(
            expires_at=ActionRequest.objects.get(id=action_id).created_at + timedelta(hours=1, seconds=offset)
        )
    log_in(page, "rita")
    page.goto("/?mode=triage&q=deploy&sort=expiry")
    expect(page.locator("#triage-pane")).to_be_visible()
    expect(pane(page)).to_have_attribute("data-action-id", ids[0])
    expect(page.locator(f"#action-{other}")).to_have_count(0)  # filtered out
    screenshot(page, "triage.png", full_page=False)

    page.keyboard.press("a")  # approve shard 1; the pane moves to shard 2
    expect(pane(page)).to_have_attribute("data-action-id", ids[1])
    expect(page.locator(f"#action-{ids[0]}")).to_have_count(0)
    expect(page.locator("#triage-toast")).to_contain_text("Approved")

    page.keyboard.press("r")  # reject shard 2 with a typed reason; on to shard 3
    expect(page.locator("#triage-reason")).to_be_focused()
    page.keyboard.type("Not during the freeze")
    page.keyboard.press("Enter")
    expect(pane(page)).to_have_attribute("data-action-id", ids[2])
    page.keyboard.press("j")  # skip shard 3
    expect(pane(page)).to_have_attribute("data-action-id", ids[3])
    page.keyboard.press("a")
    expect(pane(page)).to_have_attribute("data-action-id", ids[2])  # the last one decided: its neighbour

    # Nothing reloaded the page: the filter, the sort and the mode are still in force.
    expect(page).to_have_url(re.compile(r"mode=triage"))
    expect(page.locator("#f-q")).to_have_value("deploy")
    assert [status(i) for i in ids] == ["approved", "rejected", "pending", "approved"]
    assert ActionRequest.objects.get(id=ids[1]).decision_reason == "Not during the freeze"
    assert status(other) == "pending"


def test_undo_within_the_window_returns_the_action_and_nothing_runs(
    page, web_server, reviewer, agent_key, target, credential, celery_worker
):
    action_id = propose(
        web_server,
        agent_key,
        action_type="http.request",
        params={"credential": "internal-api", "method": "POST", "path": "/v1/refunds/88213"},
        summary="Refund order 88213",
    )
    log_in(page, "rita")
    page.goto("/?mode=triage")
    expect(pane(page)).to_have_attribute("data-action-id", action_id)
    page.keyboard.press("a")
    undo = page.get_by_role("button", name=re.compile("^Undo"))
    expect(undo).to_be_visible()
    assert status(action_id) == "approved"
    page.keyboard.press("u")
    expect(page.locator("#triage-toast")).to_contain_text("Approval undone")
    expect(page.locator(f"#action-{action_id}")).to_be_visible()
    expect(pane(page)).to_have_attribute("data-action-id", action_id)
    assert status(action_id) == "pending"

    # Past the window the held execution would have gone out: it did not, and its grant was never redeemed.
    time.sleep(UNDO + 1)
    assert target.requests == []
    assert status(action_id) == "pending"
    assert ExecutionGrant.objects.get(action_id=action_id).redeemed_at is None
    message = OutboxMessage.objects.get(action_id=action_id, kind=OutboxMessage.Kind.EXECUTE)
    assert "withdrawn" in message.last_error
    assert AuditEvent.objects.filter(action_id=action_id, verb="action.approval_withdrawn", actor="rita").exists()


def test_bulk_approval_of_selected_low_risk_actions(page, web_server, reviewer, agent_key):
    low = [propose(web_server, agent_key, summary=f"Restart worker {n}") for n in range(3)]
    risky = propose(web_server, agent_key, risk="high", summary="Restart the primary database")
    log_in(page, "rita")
    page.goto("/?mode=triage")
    for action_id in low:
        page.locator(f"#action-{action_id} input.triage-pick").check()
    expect(page.locator(f"#action-{risky} input.triage-pick")).to_have_count(0)  # high risk: one by one
    expect(page.locator("#triage-bulk-count")).to_have_text("3 selected")
    screenshot(page, "triage-bulk.png", full_page=False)
    page.get_by_role("button", name="Approve selected").click()
    expect(page.locator("#triage-toast")).to_contain_text("3 approved")
    for action_id in low:
        expect(page.locator(f"#action-{action_id}")).to_have_count(0)
    assert [status(i) for i in low] == ["approved"] * 3
    assert status(risky) == "pending"
    # One by one through the services: each has its own review and its own audited approval.
    approved = AuditEvent.objects.filter(verb="action.approved", action_id__in=low)
    assert approved.count() == 3 and {e.via for e in approved} == {"web"}


def test_the_keys_still_work_after_the_queue_is_redrawn_under_the_open_confirmation(
    page, web_server, reviewer, agent_key
):
    """A live redraw replaces the rows while the confirmation is open; closing it must not leave focus in the hidden
    dialog (where the next keys would be typed into its box instead of deciding)."""
    action_id = propose(web_server, agent_key, risk="critical", summary="Grant admin to the contractor")
    log_in(page, "rita")
    page.goto("/?mode=triage")
    expect(pane(page)).to_have_attribute("data-action-id", action_id)
    old_row = page.locator(f"#action-{action_id}").element_handle()
    page.keyboard.press("a")
    dialog = page.locator("#triage-confirm")
    expect(dialog).to_be_visible()
    page.get_by_label("Type approve to confirm").focus()

    arrived = propose(web_server, agent_key, summary="Restart the billing service")
    expect(page.locator(f"#action-{arrived}")).to_have_count(1)  # the queue was redrawn behind the dialog
    assert not old_row.evaluate("(row) => row.isConnected")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.locator(f"#action-{action_id} td.summary a")).to_be_focused()
    page.keyboard.press("a")
    expect(dialog).to_be_visible()
    expect(page.locator("#triage-confirm-summary")).to_have_text("Grant admin to the contractor")
    page.keyboard.type("approve")
    page.keyboard.press("Enter")
    expect(page.locator("#triage-toast")).to_contain_text("Approved")
    assert status(action_id) == "approved"
    assert status(arrived) == "pending"


def test_a_confirmation_for_an_action_decided_meanwhile_approves_nothing(
    page, web_server, reviewer, second_reviewer, agent_key
):
    """Sam rejects the action Rita is confirming; its row leaves her queue and her selection moves to the next,
    equally risky one. Her typed word confirmed the first action only: nothing is approved."""
    ids = {propose(web_server, agent_key, risk="critical", summary=f"Grant admin to {who}") for who in ("Ann", "Bob")}
    log_in(page, "rita")
    page.goto("/?mode=triage")
    expect(pane(page)).to_be_visible()
    confirming = pane(page).get_attribute("data-action-id")
    (other,) = ids - {confirming}
    page.keyboard.press("a")
    dialog = page.locator("#triage-confirm")
    expect(dialog).to_be_visible()

    services.reject_action(action_id=confirming, reviewer=second_reviewer, via=Review.Via.API, reason="Not today.")
    expect(page.locator(f"#action-{confirming}")).to_have_count(0)  # redrawn away behind the dialog
    page.keyboard.type("approve")
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()
    expect(page.locator("#triage-toast")).to_contain_text("nothing was approved")
    assert status(confirming) == "rejected" and status(other) == "pending"
    assert not Review.objects.filter(action_id=other).exists()


def test_a_risky_approval_focuses_cancel_and_needs_the_typed_word(page, web_server, reviewer, agent_key):
    action_id = propose(web_server, agent_key, risk="critical", summary="Grant admin to the contractor")
    log_in(page, "rita")
    page.goto("/?mode=triage")
    expect(pane(page)).to_have_attribute("data-action-id", action_id)
    page.keyboard.press("a")
    dialog = page.locator("#triage-confirm")
    expect(dialog).to_be_visible()
    expect(page.get_by_role("button", name="Cancel")).to_be_focused()
    expect(page.get_by_role("button", name="Yes, approve")).to_be_disabled()
    page.keyboard.press("Enter")  # on Cancel: nothing approved
    expect(dialog).to_be_hidden()
    assert status(action_id) == "pending"

    page.keyboard.press("a")
    page.get_by_label("Type approve to confirm").press("Enter")  # empty: Enter does not confirm
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()  # closed before the next key, as a person sees it close
    page.keyboard.press("a")
    expect(dialog).to_be_visible()
    expect(page.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.type("approve")  # typed from Cancel: the letters go into the box
    screenshot(page, "triage-confirm.png", full_page=False)
    page.keyboard.press("Enter")
    expect(page.locator("#triage-toast")).to_contain_text("Approved")
    assert status(action_id) == "approved"

    # The same queue in the dark theme and on a phone.
    propose(web_server, agent_key, summary="Restart the billing service")
    propose(web_server, agent_key, risk="medium", summary="Rotate the search index")
    page.emulate_media(color_scheme="dark")
    page.goto("/?mode=triage")
    expect(pane(page)).to_be_visible()
    # Side by side: the list's column ends where the pane's begins.
    list_right = page.evaluate("document.getElementById('queue').getBoundingClientRect().right")
    assert list_right <= page.evaluate("document.getElementById('triage-pane').getBoundingClientRect().left")
    screenshot(page, "triage-dark.png", full_page=False)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/?mode=triage")
    expect(pane(page)).to_be_visible()
    # The list and the pane stack and fit the phone's width (the page's own chrome is the screens' tests' concern).
    right = page.evaluate(
        "Math.max(...['#triage-pane', '#queue'].map((s) => document.querySelector(s).getBoundingClientRect().right))"
    )
    assert right <= 390
    screenshot(page, "triage-phone.png", full_page=False)
