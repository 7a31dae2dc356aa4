"""Every screen fits, reads and works without a mouse (issue 20, point 9), in a real Chromium.

One walk over every page a reviewer reaches (login, queue, the detail of each action type including e-mail and
file diffs, a decided and executed action, history, dashboard, policies, audit, and whatever else the top
navigation links to) at 360, 390, 768, 1024 and 1440 px, light and dark: nothing wider than the window, every
scrollable box reachable by keyboard, and axe-core (tests/support/vendor/axe-core, test tooling that is never
served) finds nothing serious or critical. Screenshots of every page in light, dark and phone (390 px) go to
test-artifacts/screens/.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import Page, expect

from agents.services import grant_capability
from approvals import services
from approvals.models import ActionStatus, PolicyRule, Review
from approvals.services.credentials import create_credential
from audit.models import AuditEvent
from tests import factories
from tests.conftest import ARTIFACTS, CLI, TARGET_SECRET
from tests.support.browser_support import (  # noqa: F401 - fixtures, found by pytest in this module's namespace
    allow_sync_orm_beside_playwright,
    browser,
    browser_context_args,
    browser_type,
    browser_type_launch_args,
    log_in,
    playwright,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENS = ARTIFACTS / "screens"
AXE_SOURCE = (Path(__file__).resolve().parents[1] / "support" / "vendor" / "axe-core" / "axe.min.js").read_text()
WIDTHS = (360, 390, 768, 1024, 1440)
PHONE = 390
THEMES = ("light", "dark")
TYPES = [
    "decision.only",
    "human.question",
    "http.request",
    "email.send",
    "file.write",
    "slack.post_message",
    "scim.group_membership",
]
LONG_WORD = "https://status.example.com/incidents/2026-12-05/" + "x" * 80  # a line that cannot wrap on its own

# What a page is asked in one round trip: the widest thing it lays out, and every box that scrolls but cannot be
# reached with the keyboard (a scrollable region needs tabindex and a name to be focused and announced).
MEASURE = """() => {
  const clipped = (el) => {  // inside a box that scrolls or clips: that box is what must fit
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      if (getComputedStyle(p).overflowX !== 'visible') return true;
    }
    return false;
  };
  const wide = [];
  const limit = document.documentElement.clientWidth;
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.width && r.right > limit + 1 && !el.closest('[hidden], dialog:not([open])') && !clipped(el)) {
      wide.push((el.id ? '#' + el.id : el.tagName.toLowerCase() + '.' + [...el.classList].join('.')) + ':' + Math.round(r.right));
    }
  }
  const unreachable = [];
  for (const el of document.querySelectorAll('main *:not(textarea, select, input)')) {
    const style = getComputedStyle(el);
    const scrolls = /(auto|scroll)/.test(style.overflowX + style.overflowY)
      && (el.scrollHeight > el.clientHeight + 1 || el.scrollWidth > el.clientWidth + 1);
    if (scrolls && !(el.tabIndex >= 0 && (el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')))) {
      unreachable.push(el.id || el.className || el.tagName);
    }
  }
  return {scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
          wide: wide.slice(0, 6), unreachable};
}"""

AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations.filter(v => v.impact === 'serious' || v.impact === 'critical').map(v => ({
    id: v.id, impact: v.impact,
    nodes: v.nodes.slice(0, 3).map(n => n.target.join(' ') + ' ' + (n.failureSummary || '').split('\\n').slice(1, 2).join('')),
  }));
}"""


@pytest.fixture
def staff_reviewer(reviewers_group):
    """rita reviews and, as staff, reads the audit log."""
    return factories.ReviewerFactory(username="rita", is_staff=True)


@pytest.fixture
def desk(staff_reviewer, second_reviewer, owner, target):
    """One pending action of every type, with the long, unbreakable text agents send, and one executed action."""
    PolicyRule.objects.create(
        name="two-approvals-for-production-config-writes-by-deploy-agents",
        description="Production configuration is reviewed twice. " * 3,
        agent="deploy-*",
        action_type="file.write",
        conditions=[{"path": "params.path", "op": "matches", "value": "srv/production/nginx/sites-enabled/*.conf"}],
        required_approvals=2,
        reviewer_group="platform-reviewers-europe-west",
        notify=["slack:#platform-reviews", "email:platform-reviews@example.com"],
    )
    requester = factories.UserFactory(username="ann.lee")
    agent = factories.AgentFactory(name="ops-bot-with-a-rather-long-name", owner=owner, allow=TYPES)
    for name, kind, scope, reads in [
        ("internal-api", "http_bearer", {"base_url": target.url}, True),
        ("slack-bot", "slack_bot", {}, False),
        ("idp", "scim_bearer", {"base_url": target.url}, False),
    ]:
        create_credential(name=name, kind=kind, secret=TARGET_SECRET, scope=scope, actor=CLI, allow_preview_reads=reads)
    for action_type in ("http.request", "slack.post_message", "scim.group_membership"):
        grant_capability(agent=agent, action_type=action_type, actor=CLI)
    target.resources["/v1/users/7"] = {"name": "Ann", "groups": ["staff"], "note": "short"}

    # file.write reads the real file under COUNTERSIGN_FILE_ROOT, the same directory the web server reads.
    folder = f"screens-{uuid.uuid4().hex[:8]}"
    conf = Path(settings.COUNTERSIGN_FILE_ROOT) / folder / "nginx.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    old = "".join(f"    location /api/v{i}/ {{ proxy_pass http://backend-{i}.internal:8080; }}\n" for i in range(40))
    conf.write_text(f"server {{\n    listen 443 ssl;\n{old}}}\n")
    new = old.replace("backend-7.internal:8080", "backend-7-canary.internal.example.com:8443/" + "a" * 70)

    context = {
        "reasoning": "The error rate doubled after the last deploy. " * 12 + LONG_WORD,
        "source": {"kind": "incident", "url": LONG_WORD, "text": "Customers report failed checkouts. " * 6},
        "links": [LONG_WORD, "https://runbooks.example.com/checkout"],
    }
    proposals = [
        (
            "decision.only",
            {"command": "restart", "service": "billing", "note": LONG_WORD},
            f"Restart billing ({LONG_WORD})",
        ),
        (
            "http.request",
            {
                "credential": "internal-api",
                "method": "PUT",
                "path": "/v1/users/7",
                "json": {"name": "Ann", "groups": ["staff", "admin"], "note": LONG_WORD},
            },
            "Give Ann the admin group",
        ),
        (
            "email.send",
            {
                "to": [
                    f"very.long.mailbox.name.for.the.oncall.rotation.{i}@subdomain.customers.example.com"
                    for i in range(3)
                ],
                "cc": ["finance-team-with-long-alias@example.com"],
                "subject": "Refund for order #88213 and the outage of " + "checkout-service-" * 6,
                "body": ("Hello,\n\nWe are refunding your order. " * 20) + "\n" + LONG_WORD + "\n\nRegards",
            },
            "E-mail the customers about the refund",
        ),
        (
            "file.write",
            {
                "path": f"{folder}/nginx.conf",
                "content": f"server {{\n    listen 443 ssl;\n{new}}}\n",
                "mode": "replace",
            },
            "Point /api/v7 at the canary",
        ),
        (
            "slack.post_message",
            {"credential": "slack-bot", "channel": "#incidents", "text": "Checkout is degraded. " * 10 + LONG_WORD},
            "Tell #incidents",
        ),
        (
            "scim.group_membership",
            {"credential": "idp", "group": "billing-admins", "add": ["dana"], "remove": ["bob"]},
            "Swap bob for dana in billing-admins",
        ),
    ]
    pending = {}
    for action_type, params, summary in proposals:
        pending[action_type] = factories.propose(
            agent,
            action_type,
            params,
            summary=f"{summary}: " + "with a summary long enough to wrap " * 2,
            context=context,
            on_behalf_of=requester.username,  # access changes must say whom they are for
        )
    # Time-boxed access (issue 23): the duration shown prominently, and the field that shortens it when approving.
    pending["scim.group_membership-time-boxed"] = factories.propose(
        agent,
        "scim.group_membership",
        {"credential": "idp", "group": "billing-admins", "add": ["dana"], "duration": "PT8H"},
        summary="Give dana billing-admins for the incident: " + "with a summary long enough to wrap " * 2,
        context=context,
        on_behalf_of=requester.username,
    )
    pending["human.question"] = factories.propose(
        agent, "human.question", {"question": "Which region should take the traffic? " * 8}, summary="Which region?"
    )

    done = factories.propose(
        agent,
        "http.request",
        {"credential": "internal-api", "method": "PUT", "path": "/v1/users/7", "json": {"note": LONG_WORD}},
        summary="Update Ann's note",
    )
    for who in (staff_reviewer, second_reviewer):
        done.refresh_from_db()
        if done.status == ActionStatus.PENDING:
            services.approve_action(action_id=done.id, reviewer=who, via=Review.Via.API, comment="Looks right.")
    done = factories.executed(done.id)
    assert done.status == ActionStatus.SUCCEEDED, done.status
    rejected = factories.propose(agent, summary="Restart search")
    services.reject_action(action_id=rejected.id, reviewer=staff_reviewer, via=Review.Via.WEB, reason="Not now.")
    return {"pending": pending, "done": done}


def measure(page: Page) -> dict:
    return page.evaluate(MEASURE)


def axe(page: Page) -> list[dict]:
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.evaluate(AXE_SOURCE + "\n;0")  # through the debugger: the page's CSP stays on, as users have it
    return page.evaluate(AXE_RUN)


def shot(page: Page, name: str, *, full_page: bool = True) -> None:
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=full_page)


def check_page(page: Page, url: str, name: str, problems: list[str]) -> None:
    """Every width and theme of one page: no overflow, no unreachable scroll box, no serious axe finding."""
    page.goto(url)
    for theme in THEMES:
        page.emulate_media(color_scheme=theme)
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            m = measure(page)
            if m["scrollWidth"] > m["innerWidth"]:
                problems.append(f"{name} {theme} {width}px: {m['scrollWidth']}px wide; widest {m['wide']}")
            if m["unreachable"]:
                problems.append(f"{name} {theme} {width}px: scrollable but not focusable: {m['unreachable']}")
            if width == 1440 or (width == PHONE and theme == "light"):  # colours per theme; the phone's own layout
                for finding in axe(page):
                    problems.append(
                        f"{name} {theme} {width}px: axe {finding['impact']} {finding['id']}: {finding['nodes']}"
                    )
            if width == PHONE and theme == "light":
                shot(page, f"{name}-phone")
        shot(page, f"{name}-{theme}", full_page=theme == "light")  # dark: the first screen is enough to judge
    page.emulate_media(color_scheme="light")


def test_every_page_fits_every_width_and_theme_with_no_serious_accessibility_finding(page, desk):
    problems: list[str] = []
    check_page(page, "/accounts/login/", "login", problems)
    log_in(page, "rita")

    pages = {"queue": "/"}
    for link in page.locator("header.topbar nav a").all():
        href = link.get_attribute("href")
        if href and not href.startswith("/admin"):
            pages.setdefault(re.sub(r"\W+", "-", link.inner_text().strip().lower()), href)
    for action_type, action in desk["pending"].items():
        pages[f"detail-{action_type.replace('.', '-')}"] = f"/actions/{action.id}"
    pages["detail-executed"] = f"/actions/{desk['done'].id}"
    assert {"queue", "history", "dashboard", "active-access", "policies", "audit"} <= set(pages), pages

    for name, url in pages.items():
        check_page(page, url, name, problems)
    report = SCREENS / "problems.txt"  # the whole list, which the assertion's message cuts short
    report.write_text("".join(f"{p}\n" for p in problems)) if problems else report.unlink(missing_ok=True)
    assert not problems, "\n".join(problems)


def test_on_a_phone_the_decision_stays_within_reach(page, desk):
    action = desk["pending"]["file.write"]
    page.set_viewport_size({"width": PHONE, "height": 780})
    log_in(page, "rita")
    page.goto(f"/actions/{action.id}")
    assert page.evaluate("document.documentElement.scrollHeight") > 3 * 780  # a long page: the diff, the timeline

    bar = page.locator("#decision-bar")
    for where in ("window.scrollTo(0, 0)", "window.scrollTo(0, document.documentElement.scrollHeight / 2)"):
        page.evaluate(where)
        for name in ("Approve", "Reject"):
            control = bar.get_by_role("link", name=name)
            expect(control).to_be_in_viewport()
    bar.get_by_role("link", name="Reject").click()
    expect(page.locator("#reject-reason")).to_be_focused()
    expect(page.locator("#reject-reason")).to_be_in_viewport()
    page.evaluate("window.scrollTo(0, 0)")
    bar.get_by_role("link", name="Approve").click()
    expect(page.get_by_role("button", name="Approve", exact=True)).to_be_in_viewport()
    shot(page, "decision-bar-phone")

    page.set_viewport_size({"width": 1440, "height": 900})  # beside the page on a wide screen: no bar needed
    expect(bar).to_be_hidden()


def test_the_audit_page_shows_one_line_per_event_with_details_on_demand(page, desk):
    page.set_viewport_size({"width": 1440, "height": 900})
    log_in(page, "rita")
    page.goto("/audit")
    rows = page.locator("#audit-events tbody tr")
    assert rows.count() >= 20
    line = page.evaluate("parseFloat(getComputedStyle(document.querySelector('#audit-events td')).lineHeight)")
    heights = [box["height"] for box in (rows.nth(i).bounding_box() for i in range(rows.count()))]
    # One line of text and its padding in every row: no row is taller by a wrapped date, name or data.
    assert max(heights) < 2 * line, (line, heights)
    assert page.evaluate(  # and the date fits its column, on one line
        "[...document.querySelectorAll('#audit-events td.when')].every(td => td.scrollWidth <= td.clientWidth)"
    )

    details = page.locator("#audit-events details").first
    expect(details.locator("pre")).to_be_hidden()
    details.locator("summary").click()
    expect(details.locator("pre")).to_be_visible()
    expect(details.locator("pre")).to_contain_text('"')  # the event's data, as JSON


def test_the_timeline_says_what_happened_in_plain_words(desk, staff_reviewer):
    client = Client()
    client.force_login(staff_reviewer)
    html = client.get(f"/actions/{desk['done'].id}").content.decode()
    timeline = re.sub(r"<[^>]+>", " ", html[html.index('class="timeline"') :])
    timeline = re.sub(r"\s+", " ", timeline)
    for words in ("Proposed by ops-bot", "Approved by rita", "Execution started", "Succeeded"):
        assert words in timeline, (words, timeline)
    verbs = set(AuditEvent.objects.filter(action_id=desk["done"].id).values_list("verb", flat=True))
    assert "grant.minted" in verbs
    for verb in verbs:
        assert f" {verb} " not in timeline  # internal names only in attributes, for people who grep the log
