"""What browser tests share: Playwright scoped to one test module, Debian's Chromium, and page helpers.

A browser test module imports the fixtures by name (pytest finds fixtures in the module's namespace)::

    from tests.support.browser_support import (  # noqa: F401 - fixtures
        allow_sync_orm_beside_playwright, browser, browser_context_args, browser_type,
        browser_type_launch_args, playwright,
    )

Playwright's sync API keeps its event loop marked as running in the test
thread between calls. pytest-playwright starts it once per session, which
would leave every later test in the session (ORM calls, async_to_sync) inside
a "running event loop". So each module starts and stops its own, and allows
Django's sync ORM only while it runs.
"""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Browser, BrowserType, Page, Playwright, expect, sync_playwright

from tests.conftest import ARTIFACTS

SCREENSHOTS = ARTIFACTS / "screenshots"
LIVE = 10_000  # ms for a pushed change to show up when the test is not about speed

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
]


# --- fixtures (module-scoped) ------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def allow_sync_orm_beside_playwright():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture(scope="module")
def playwright() -> Playwright:
    pw = sync_playwright().start()
    yield pw
    pw.stop()


@pytest.fixture(scope="module")
def browser_type(playwright: Playwright, browser_name: str) -> BrowserType:
    return getattr(playwright, browser_name or "chromium")


@pytest.fixture(scope="module")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": "/usr/bin/chromium", "args": CHROMIUM_ARGS}


@pytest.fixture(scope="module")
def browser(browser_type: BrowserType, browser_type_launch_args) -> Browser:
    browser = browser_type.launch(**browser_type_launch_args)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def browser_context_args(web_server) -> dict:
    return {"base_url": web_server.url}


# --- helpers -----------------------------------------------------------------------------------


def screenshot(page: Page, name: str, *, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=full_page)


def log_in(page: Page, username: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(f"pw-{username}")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".who .username")).to_have_text(username)


def wait_until_live(page: Page) -> None:
    """The page's websocket is open (live.js sets data-live once connected)."""
    expect(page.locator("body")).to_have_attribute("data-live", "1", timeout=LIVE)
    expect(page.locator("#live-indicator")).to_have_text("live")


def mark_document(page: Page) -> None:
    """A marker that only survives as long as no navigation or reload happens."""
    page.evaluate("window.__marker = 1")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__marker") == 1, "the page was reloaded or navigated"


def agent_http(web_server, agent_key) -> httpx.Client:
    return httpx.Client(base_url=web_server.url, headers={"Authorization": f"Bearer {agent_key}"}, timeout=10)
