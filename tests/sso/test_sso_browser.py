"""A reviewer signs in through the company's provider in a real browser, against a real Countersign server
(uvicorn, configured from the environment as in production, password log-in off) and a real provider."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from approvals.models import OidcIdentity
from tests.conftest import ARTIFACTS
from tests.sso.conftest import CLIENT_ID, CLIENT_SECRET, GROUP_MAP, PROVIDER_NAME, TEST_CALLBACK
from tests.support.browser_support import (  # noqa: F401 - fixtures
    allow_sync_orm_beside_playwright,
    browser,
    browser_type,
    browser_type_launch_args,
    playwright,
    screenshot,
)
from tests.support.servers import free_port, start_web

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def sso_web(stack_env, oidc_provider, tmp_path_factory):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    oidc_provider.register_client(CLIENT_ID, CLIENT_SECRET, [TEST_CALLBACK, f"{url}/oidc/callback/"])
    secret = tmp_path_factory.mktemp("sso-secrets") / "client-secret"
    secret.write_text(CLIENT_SECRET + "\n")
    env = {
        **stack_env,
        "OIDC_OP_ISSUER": oidc_provider.issuer,
        "OIDC_RP_CLIENT_ID": CLIENT_ID,
        "OIDC_RP_CLIENT_SECRET_FILE": str(secret),  # a secret file, as in production
        "COUNTERSIGN_OIDC_PROVIDER_NAME": PROVIDER_NAME,
        "COUNTERSIGN_OIDC_GROUP_MAP": json.dumps(GROUP_MAP),
        "COUNTERSIGN_LOCAL_LOGIN": "false",
        "COUNTERSIGN_BREAK_GLASS_USERS": "root",
    }
    web, url = start_web(env, ARTIFACTS / "logs", name="web-sso", port=port)
    web.url = url
    yield web
    web.stop()


@pytest.fixture(scope="module")
def browser_context_args(sso_web) -> dict:
    return {"base_url": sso_web.url}


def test_a_reviewer_signs_in_with_the_company_provider(page: Page, oidc_provider, sso_web):
    oidc_provider.mode("normal")
    oidc_provider.person(
        "rita", password="pw-rita-dir", email="rita@example.com", email_verified=True, groups=["approvers"]
    )
    page.goto("/history")
    expect(page).to_have_url(f"{sso_web.url}/accounts/login/?next=/history")
    expect(page.get_by_label("Password")).to_have_count(0)  # password log-in is off
    screenshot(page, "sso-log-in-page.png")
    page.get_by_role("link", name=f"Sign in with {PROVIDER_NAME}").click()

    page.get_by_label("Directory username").fill("rita")
    page.get_by_label("Directory password").fill("pw-rita-dir")
    page.get_by_role("button", name="Sign in to the directory").click()

    expect(page.locator(".who .username")).to_have_text("rita")
    expect(page).to_have_url(f"{sso_web.url}/history")
    screenshot(page, "sso-signed-in.png")
    rita = get_user_model().objects.get(username="rita")
    assert OidcIdentity.objects.get(user=rita).issuer == oidc_provider.issuer
    assert list(rita.groups.values_list("name", flat=True)) == ["reviewers"]
