"""Diffs reviewers trust, in a real Chromium (issue 20, point 3).

Side by side, an unchanged line has no red or green background (computed style, not class names);
collapsed context expands in place; lines are syntax-highlighted without losing the word marks; a SCIM
membership change reads "added Dana Smith (dana)". Screenshots: test-artifacts/screenshots/diffs-*.png.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from agents.services import grant_capability
from approvals.services.credentials import create_credential
from tests import factories
from tests.conftest import CLI
from tests.support.browser_support import (  # noqa: F401 - fixtures, found by pytest in this module's namespace
    allow_sync_orm_beside_playwright,
    browser,
    browser_context_args,
    browser_type,
    browser_type_launch_args,
    log_in,
    playwright,
    screenshot,
    wait_until_live,
)
from tests.support.scim import USER, ScimServer, idp_credential

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TRANSPARENT = "rgba(0, 0, 0, 0)"


def background(locator) -> str:
    return locator.evaluate("el => getComputedStyle(el).backgroundColor")


def reddish_or_greenish(colour: str) -> bool:
    """Whether a computed colour is tinted (the danger or ok colour mixed in), not transparent or grey.

    Chromium reports a color-mix() as ``color(srgb r g b / a)`` (0..1), a plain colour as ``rgba(r, g, b, a)``.
    """
    numbers = [float(n) for n in re.findall(r"\d*\.?\d+(?:e-?\d+)?", colour)]
    scale = 255 if colour.startswith("color(srgb") else 1
    r, g, b = (n * scale for n in numbers[:3])
    alpha = numbers[3] if len(numbers) > 3 else 1
    return alpha > 0 and (abs(r - g) > 20 or abs(g - b) > 20)


def test_side_by_side_colours_expandable_context_and_highlighting(page: Page, web_server, reviewer, agent, target):
    credential = create_credential(
        name="internal-api",
        kind="http_bearer",
        secret="t0ken",
        scope={"base_url": target.url},
        actor=CLI,
        allow_preview_reads=True,
    )
    before = {f"key{i:02}": f"value {i}" for i in range(30)}
    target.resources["/settings"] = before
    after = {**before, "key15": "value fifteen"}
    action = factories.propose(
        agent,
        "http.request",
        {"credential": credential.name, "method": "PUT", "path": "/settings", "json": after},
        summary="Rename one setting",
    )
    log_in(page, "rita")
    page.goto(f"/actions/{action.id}")
    wait_until_live(page)  # the connection banner has settled: nothing moves under the clicks below
    page.locator("details.whole > summary").click()
    diff = page.locator("details.whole .diff")
    expect(diff).to_have_attribute("data-language", "json")

    # Unified: two line-number columns, old and new.
    changed_old = diff.locator("table.unified tr.del").first
    expect(changed_old.locator("td.ln").nth(0)).to_have_text("17")
    expect(changed_old.locator("td.ln").nth(1)).to_have_text("")
    expect(diff.locator("table.unified tr.ins").first.locator("td.ln").nth(1)).to_have_text("17")

    diff.get_by_role("button", name="Side by side").click()
    expect(diff).to_have_attribute("data-view", "split")
    split = diff.locator("table.split")
    expect(split).to_be_visible()
    unchanged = split.locator("tr.equal").first
    for cell in (unchanged.locator("td.code.old"), unchanged.locator("td.code.new")):
        assert background(cell) == TRANSPARENT, "an unchanged line is tinted"
    replaced = split.locator("tr.replace").first
    assert reddish_or_greenish(background(replaced.locator("td.code.old")))
    assert reddish_or_greenish(background(replaced.locator("td.code.new")))
    # Word level: only the changed word is marked, and highlighting kept it.
    expect(diff).to_have_attribute("data-highlighted", "json")
    expect(replaced.locator("td.code.new mark")).to_have_text("fifteen")
    expect(replaced.locator("td.code.new .hljs-attr")).to_have_text('"key15"')

    # "N unchanged lines" expands in place, with their numbers.
    gap = split.get_by_role("button", name="13 unchanged lines (show)")
    expect(split.locator("tbody.diff-hidden").first).to_be_hidden()
    gap.click()
    expect(gap).to_be_hidden()
    shown = split.locator("tbody.diff-hidden").first
    expect(shown).to_be_visible()
    expect(shown.locator("tr")).to_have_count(13)
    expect(shown.locator("tr").first.locator("td.ln").first).to_have_text("1")
    assert background(shown.locator("td.code.new").first) == TRANSPARENT
    screenshot(page, "diffs-side-by-side.png")
    page.emulate_media(color_scheme="dark")
    assert background(unchanged.locator("td.code.new")) == TRANSPARENT
    assert reddish_or_greenish(background(replaced.locator("td.code.new")))
    screenshot(page, "diffs-side-by-side-dark.png")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "diffs-side-by-side-phone.png")


def test_a_membership_change_names_people_added_and_removed(page: Page, web_server, reviewer, agent, owner):
    scim = ScimServer()
    try:
        for name, display in (("bob", "Bob Jones"), ("carol", ""), ("dana", "Dana Smith")):
            body = {"schemas": [USER], "userName": name, **({"displayName": display} if display else {})}
            scim.ids[name] = scim.api.post("/Users", json=body).json()["id"]
        scim.add_group("engineering", ["bob", "carol"])
        idp_credential(scim)
        grant_capability(agent=agent, action_type="scim.group_membership", actor=CLI)
        action = factories.propose(
            agent,
            "scim.group_membership",
            {"credential": "idp", "group": "engineering", "add": ["dana"], "remove": ["bob"]},
            summary="Swap on-call",
            on_behalf_of=owner.get_username(),
        )
        log_in(page, "rita")
        page.goto(f"/actions/{action.id}")
        change = page.locator("#membership-change")
        expect(change.locator(".member-added")).to_have_text("+ added Dana Smith (dana)")
        expect(change.locator(".member-removed")).to_have_text("\u2212 removed Bob Jones (bob)")
        expect(change).to_contain_text("1 member unchanged")
        # The text diff below says the same, by the same names.
        expect(page.locator("#preview table.unified tr.ins td.code")).to_have_text("Dana Smith (dana)")
        screenshot(page, "diffs-membership.png", full_page=False)
    finally:
        scim.stop()


def test_long_reasoning_expands_and_links_open_safely(page: Page, web_server, reviewer, agent):
    reasoning = (
        "\n".join(f"Step {i}: checked the queue depth." for i in range(30)) + "\nTrace: https://traces.example/r/1"
    )
    action = factories.propose(agent, summary="Restart billing", context={"reasoning": reasoning})
    log_in(page, "rita")
    page.goto(f"/actions/{action.id}")
    box = page.locator("#reasoning")
    clamped = box.evaluate("el => el.clientHeight")
    more = page.get_by_role("button", name="Show more")
    expect(more).to_be_visible()
    more.click()
    expect(page.get_by_role("button", name="Show less")).to_have_attribute("aria-expanded", "true")
    assert box.evaluate("el => el.clientHeight") > clamped * 2
    link = box.get_by_role("link", name="https://traces.example/r/1")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(link).to_have_attribute("target", "_blank")
    expect(box.locator(".link-host")).to_have_text("(traces.example)")
