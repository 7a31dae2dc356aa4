"""Approve with edits, in a form (issue 20): a reviewer edits an nginx config in a text area and watches the diff
against the agent's proposal and the preview recomputed from the target, picks the mode from a select, is told a bad
number is bad before approving, and the approval carries exactly the edit. Real Chromium, real uvicorn.

Screenshots: test-artifacts/screenshots/edit-form-{light,dark,phone}.png.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import Page, expect

from approvals.models import ActionRequest
from tests.factories import AgentFactory, propose
from tests.support.browser_support import (  # noqa: F401 - fixtures, found by pytest in this module's namespace
    LIVE,
    SCREENSHOTS,
    allow_sync_orm_beside_playwright,
    browser,
    browser_context_args,
    browser_type,
    browser_type_launch_args,
    log_in,
    playwright,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SERVER = "server {\n    listen 443 ssl;\n    server_name shop.example.com;\n"
ON_DISK = SERVER + "    location /api/ { proxy_pass http://backend.internal:8080; }\n}\n"
PROPOSED = SERVER + "    location /api/ { proxy_pass http://backend-canary.internal:8080; }\n}\n"
EDITED = PROPOSED.replace("backend-canary.internal:8080", "backend-canary.internal:8443")


def field(page: Page, key: str):
    """The form's widget for the top-level parameter ``key`` (its label is the key)."""
    return page.locator("#edit-form").get_by_label(key, exact=True)


def test_a_reviewer_edits_a_config_in_a_form_watches_the_change_and_approves_exactly_the_edit(
    page: Page, web_server, reviewer, owner
):
    folder = f"edit-form-{uuid.uuid4().hex[:8]}"
    conf = Path(settings.COUNTERSIGN_FILE_ROOT) / folder / "nginx.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(ON_DISK)
    agent = AgentFactory(name="deploy-bot", owner=owner, allow=["file.write", "decision.only"])
    config = propose(
        agent,
        "file.write",
        {"path": f"{folder}/nginx.conf", "content": PROPOSED, "mode": "replace"},
        summary="Point /api at the canary",
    )
    seats = propose(agent, "decision.only", {"plan": "team", "seats": 40}, summary="Buy 40 seats")

    log_in(page, "rita")
    page.goto(f"/actions/{config.id}")
    page.keyboard.press("e")
    # The form, not escaped JSON: the config in a monospaced text area, the mode in a select.
    expect(field(page, "path")).to_be_focused()
    content = field(page, "content")
    expect(content).to_have_value(PROPOSED)
    assert content.evaluate("el => el.tagName") == "TEXTAREA"
    assert "mono" in content.evaluate("el => getComputedStyle(el).fontFamily")
    mode = field(page, "mode")
    assert mode.evaluate("el => el.tagName") == "SELECT"
    expect(page.get_by_label("Parameters (JSON)")).to_be_hidden()

    content.fill(EDITED)
    against_proposal = page.locator("#edit-compare .edit-vs-proposal")
    against_target = page.locator("#edit-compare .edit-vs-target")
    # The edit against the agent's proposal, as a line diff of the config...
    expect(against_proposal).to_contain_text("params.content", timeout=LIVE)
    expect(against_proposal.locator("tr.ins").first).to_contain_text("8443")
    expect(against_proposal.locator("tr.del").first).to_contain_text("backend-canary.internal:8080")
    # ...and the preview recomputed from the edit against the file on disk, with the rule that now applies.
    expect(against_target.locator("tr.ins").first).to_contain_text("backend-canary.internal:8443")
    expect(against_target.locator("tr.del").first).to_contain_text("backend.internal:8080")
    expect(page.locator("#params-errors")).to_contain_text("✓ Valid")
    expect(page.locator("#params-errors .policy-check")).to_contain_text("applies")

    # A mode from the select: the recomputed preview says at once that "create" would fail on an existing file.
    mode.select_option("create")
    expect(against_target).to_contain_text("Execution will fail", timeout=LIVE)
    expect(against_proposal).to_contain_text("params.mode")
    mode.select_option("replace")
    expect(against_target).not_to_contain_text("Execution will fail", timeout=LIVE)
    expect(against_proposal).not_to_contain_text("params.mode")

    editor = page.locator("#edits")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    editor.screenshot(path=str(SCREENSHOTS / "edit-form-light.png"))
    page.emulate_media(color_scheme="dark")
    editor.screenshot(path=str(SCREENSHOTS / "edit-form-dark.png"))
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    editor.screenshot(path=str(SCREENSHOTS / "edit-form-phone.png"))
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": 1280, "height": 900})

    page.get_by_role("button", name="Approve", exact=True).click()
    expect(page.locator(".messages")).to_contain_text("Approved.")
    approved = ActionRequest.objects.get(id=config.id)
    assert approved.edited_params == {"path": f"{folder}/nginx.conf", "content": EDITED, "mode": "replace"}
    assert approved.effective_params["content"] == EDITED

    # A free-form proposal: its number is a number field, and a bad number is refused before anything is sent.
    page.goto(f"/actions/{seats.id}")
    page.keyboard.press("e")
    count = field(page, "seats")
    assert count.get_attribute("type") == "number"
    approve = page.get_by_role("button", name="Approve", exact=True)
    count.fill("")
    count.press_sequentially("3e")
    errors = page.locator('#edit-form .ef-error[data-error-for="params.seats"]')
    expect(errors).to_have_text("Not a number.")
    expect(count).to_have_attribute("aria-invalid", "true")
    expect(approve).to_be_disabled()
    count.fill("35")
    expect(errors).to_be_hidden()
    expect(approve).to_be_enabled(timeout=LIVE)
    expect(page.locator("#edit-compare .edit-vs-proposal")).to_contain_text("params.seats", timeout=LIVE)
    approve.click()
    expect(page.locator(".messages")).to_contain_text("Approved.")
    assert ActionRequest.objects.get(id=seats.id).effective_params == {"plan": "team", "seats": 35}


def test_an_edit_that_fixes_a_failing_proposal_is_approved_without_the_override(
    page: Page, web_server, reviewer, owner
):
    """The proposal would fail ("create" on a file that exists): Approve is disabled. Switching the mode to
    "replace" in the form makes the recomputed preview succeed, so Approve is enabled and approves the edit
    without a typed reason; switching back to the proposal disables it again."""
    folder = f"edit-fix-{uuid.uuid4().hex[:8]}"
    conf = Path(settings.COUNTERSIGN_FILE_ROOT) / folder / "nginx.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(ON_DISK)
    agent = AgentFactory(name="fix-bot", owner=owner, allow=["file.write"])
    failing = propose(
        agent, "file.write", {"path": f"{folder}/nginx.conf", "content": PROPOSED, "mode": "create"}, summary="x"
    )

    log_in(page, "rita")
    page.goto(f"/actions/{failing.id}")
    approve = page.get_by_role("button", name="Approve", exact=True)
    expect(approve).to_be_disabled()
    page.keyboard.press("e")
    mode = field(page, "mode")
    mode.select_option("replace")
    expect(page.locator("#edit-compare .edit-vs-target")).not_to_contain_text("Execution will fail", timeout=LIVE)
    expect(approve).to_be_enabled(timeout=LIVE)
    mode.select_option("create")  # back to the proposal, which fails: Approve is disabled again
    expect(page.locator("#params-errors")).to_contain_text("No edits yet", timeout=LIVE)
    expect(approve).to_be_disabled(timeout=LIVE)
    mode.select_option("replace")
    expect(approve).to_be_enabled(timeout=LIVE)
    approve.click()
    expect(page.locator(".messages")).to_contain_text("Approved.")
    approved = ActionRequest.objects.get(id=failing.id)
    assert approved.effective_params["mode"] == "replace"
    assert approved.reviews.get().override_reason == ""
