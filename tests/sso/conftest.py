"""The SSO tests' provider (a real OpenID Connect provider on loopback) and a "browser" that signs in through it.

In-process tests talk to Countersign through Django's test client and to the provider over HTTP (httpx), each
with its own cookies, as a browser would: Countersign redirects to the provider, the provider's log-in page is
filled in, and its redirect back (the code) is handed to Countersign's callback, which exchanges the code with
the provider for real (PKCE, client secret) and checks the ID token against the provider's JWKS.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from approvals.sso import provider as sso_provider
from tests.conftest import ARTIFACTS
from tests.support.oidc_provider import OidcProvider

CLIENT_ID = "countersign"
CLIENT_SECRET = "countersign-test-client-secret"
TEST_CALLBACK = "http://testserver/oidc/callback/"
GROUP_MAP = {
    "approvers": ["reviewers"],
    "platform-admins": ["staff", "reviewers"],
    "sre-oncall": "sre",
}
PROVIDER_NAME = "Example Directory"


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory):
    server = OidcProvider(tmp_path_factory.mktemp("oidc-provider"), ARTIFACTS / "logs").start()
    server.register_client(CLIENT_ID, CLIENT_SECRET, [TEST_CALLBACK])
    yield server
    server.stop()


@pytest.fixture
def sso(settings, oidc_provider):
    """Countersign configured for the provider, as the environment would (docs/sso.md)."""
    settings.OIDC_OP_ISSUER = oidc_provider.issuer
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    settings.OIDC_RP_CLIENT_SECRET = CLIENT_SECRET
    settings.COUNTERSIGN_OIDC_PROVIDER_NAME = PROVIDER_NAME
    settings.COUNTERSIGN_OIDC_GROUP_MAP = json.dumps(GROUP_MAP)
    sso_provider.forget_discovery()
    oidc_provider.mode("normal")
    yield oidc_provider
    oidc_provider.mode("normal")
    sso_provider.forget_discovery()


class DirectoryBrowser:
    """Countersign's test client and a session at the provider, walking the authorization-code flow."""

    def __init__(self, client, provider: OidcProvider):
        self.client, self.provider = client, provider
        self.at_provider = httpx.Client(timeout=10)
        self.password_asked = False
        self.last_callback = ""

    def sign_in(self, username: str, password: str, *, next_path: str = "/", max_age: int | None = None):
        """Through the provider and back; returns Countersign's answer to the callback."""
        query = {"next": next_path} | ({"max_age": str(max_age)} if max_age is not None else {})
        start = self.client.get("/oidc/authenticate/", query)
        assert start.status_code == 302, start.content
        return self.follow(start["Location"], username, password)

    def follow(self, url: str, username: str, password: str):
        self.password_asked = False
        for _ in range(10):
            if url.startswith("http://testserver/"):
                self.last_callback = url
                parts = urlsplit(url)
                return self.client.get(f"{parts.path}?{parts.query}")
            response = self.at_provider.get(url)
            if response.status_code == 200 and "Directory username" in response.text:
                self.password_asked = True
                token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.text).group(1)
                next_value = re.search(r'name="next" value="([^"]*)"', response.text).group(1).replace("&amp;", "&")
                response = self.at_provider.post(
                    str(response.url),
                    data={"csrfmiddlewaretoken": token, "username": username, "password": password, "next": next_value},
                )
            assert response.status_code in (301, 302), (response.status_code, response.text[:500])
            url = urljoin(str(response.url), response.headers["location"])
        raise AssertionError("the flow did not come back to Countersign")

    def close(self) -> None:
        self.at_provider.close()


@pytest.fixture
def directory_browser(client, sso):
    browser = DirectoryBrowser(client, sso)
    yield browser
    browser.close()
