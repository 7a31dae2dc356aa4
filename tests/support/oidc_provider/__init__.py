"""A real OpenID Connect provider on loopback for the SSO tests (django-oauth-toolkit; see settings.py).

provider = OidcProvider(tmp_dir).start()
provider.register_client("countersign", "secret", ["http://127.0.0.1:8123/oidc/callback/"])
provider.person("rita", password="pw", email="rita@example.com", email_verified=True, groups=["approvers"])
... provider.issuer ...
provider.stop()
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.servers import ROOT, ManagedProcess, free_port, wait_started


class OidcProvider:
    def __init__(self, directory: Path, log_dir: Path):
        self.directory, self.log_dir = directory, log_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.issuer = f"{self.url}/o"
        self.token = secrets.token_urlsafe(16)
        self.process: ManagedProcess | None = None

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_", "DATABASE_"))}
        key = self.directory / "provider-rsa.pem"
        if not key.exists():
            pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            key.write_bytes(pem)
        env.update(
            DJANGO_SETTINGS_MODULE="tests.support.oidc_provider.settings",
            OIDC_PROVIDER_DB=str(self.directory / "provider.sqlite3"),
            OIDC_PROVIDER_KEY_FILE=str(key),
            OIDC_PROVIDER_ISSUER=self.issuer,
            OIDC_PROVIDER_CONTROL_TOKEN=self.token,
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self) -> OidcProvider:
        env = self._env()
        subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
        )
        self.process = ManagedProcess(
            "oidc-provider",
            [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{self.port}", "--noreload"],
            env,
            self.log_dir,
        ).start()
        wait_started(self.process, self._answers)
        return self

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def _control(self, what: str, body: dict) -> httpx.Response:
        response = httpx.post(
            f"{self.url}/control/{what}", json=body, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )
        response.raise_for_status()
        return response

    def register_client(self, client_id: str, client_secret: str, redirect_uris: list[str]) -> None:
        self._control(
            "client", {"client_id": client_id, "client_secret": client_secret, "redirect_uris": redirect_uris}
        )

    def person(self, username: str, **fields) -> str:
        """Create or change a person at the provider; returns their subject (sub)."""
        return self._control("person", {"username": username, **fields}).json()["sub"]

    def mode(self, mode: str) -> None:
        """normal, other-audience (ID tokens for another client) or foreign-key (signed by a key not in the JWKS)."""
        self._control("mode", {"mode": mode})
