"""The scoped view of a credential an action type's executor or preview is handed: its name, kind, scope and secret,
never the model (which could reach every other credential through the ORM)."""

from __future__ import annotations

from typing import Any

from approvals.credentials.redaction import wire_values


class CredentialView:
    """What an action type's ``make_client`` sees of a credential: never the model."""

    __slots__ = ("_secret", "kind", "name", "scope")

    def __init__(self, name: str, kind: str, scope: dict[str, Any], secret: str | None):
        self.name, self.kind, self.scope, self._secret = name, kind, scope, secret

    def reveal(self) -> str | None:
        return self._secret

    def wire_secrets(self) -> set[str]:
        """The secret values any client of this credential sends (clients add the exact header values)."""
        return wire_values(self.kind, self._secret)

    def __repr__(self) -> str:
        return f"<CredentialView {self.name} kind={self.kind}>"


def credential_view(credential, secret: str | None) -> CredentialView | None:
    if credential is None:
        return None
    return CredentialView(credential.name, credential.kind, dict(credential.scope or {}), secret)
