"""The contract every action type fulfils.

Shaped like healthchecks' transports: a small class per type, one registry,
and an error type that says whether trying again could help.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from approvals.models.action import Risk


class ExecutionError(Exception):
    """The executor could not do the action. ``permanent`` says retrying won't help."""

    def __init__(self, message: str, *, permanent: bool = True, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.details = details or {}


class ParamsRejected(Exception):
    """Params are schema-valid but unacceptable for this type (e.g. a path escaping its base)."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items()))
        self.errors = errors


@dataclass
class Preview:
    """What reviewers are shown, computed by Countersign, not claimed by the agent."""

    kind: str  # "text" | "json" | "message" | "none" | "unavailable"
    title: str = ""
    before: Any = None
    after: Any = None
    notes: list[str] = field(default_factory=list)
    error: str = ""


class ActionType:
    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str] = ""
    risk: ClassVar[str] = Risk.MEDIUM
    modifies_access: ClassVar[bool] = False
    params_schema: ClassVar[dict[str, Any]]
    # The Credential.kind values this type can execute with; empty = needs none.
    credential_kinds: ClassVar[tuple[str, ...]] = ()
    # Whether approval leads to execution by Countersign (False: the agent acts).
    executes: ClassVar[bool] = True
    # An idempotent type may be retried after a crash mid-execution (see is_idempotent).
    idempotent: ClassVar[bool] = False

    def credential_name(self, params: dict[str, Any]) -> str | None:
        """The credential the params name, if this type uses one."""
        return params.get("credential") if self.credential_kinds else None

    def check_params(self, params: dict[str, Any], credential) -> None:
        """Checks beyond the JSON Schema; raise ParamsRejected. ``credential`` may be None."""

    def preview(self, params: dict[str, Any], client) -> Preview:
        return Preview(kind="none")

    def is_idempotent(self, params: dict[str, Any]) -> bool:
        """Whether running these params twice has the effect of running them once.

        Only then does the stuck-execution sweep retry after a crash, and it
        retries with the same idempotency key (the action id).
        """
        return self.idempotent

    def make_client(self, credential, params: dict[str, Any], *, idempotency_key: str):
        """A client narrowed to exactly what ``params`` need; never the credential itself.

        ``idempotency_key`` is the action id, the same on every attempt, for
        targets that de-duplicate requests.
        """
        return None

    def execute(self, params: dict[str, Any], client) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "risk": str(self.risk),
            "modifies_access": self.modifies_access,
            "params_schema": self.params_schema,
        }
