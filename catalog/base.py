"""The contract every action type fulfils.

Shaped like healthchecks' transports: a small class per type, one registry,
and an error type that says whether trying again could help.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from catalog.risk import Risk


class ExecutionError(Exception):
    """The executor could not do the action. ``permanent`` says retrying won't help.

    ``outcome_unknown`` says the request may have reached the target and nobody knows whether it took effect
    (a timeout or a dropped connection after it was sent): the action then ends ``unknown``, not ``failed``,
    because an agent that retries a ``failed`` action would repeat one that happened (approvals.services.execution).
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = True,
        details: dict[str, Any] | None = None,
        outcome_unknown: bool = False,
    ):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.details = details or {}
        self.outcome_unknown = outcome_unknown


class ParamsRejected(Exception):
    """Params are schema-valid but unacceptable for this type (e.g. a path escaping its base)."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items()))
        self.errors = errors


def shorten(text: Any, limit: int = 80) -> str:
    """One line of at most ``limit`` characters, for plain-word descriptions."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def plain_list(items: list[Any], limit: int = 3) -> str:
    """ "a", "a and b", "a, b and c", "a, b, c and 2 more"."""
    names = [shorten(i, 60) for i in items]
    if len(names) > limit:
        return f"{', '.join(names[:limit])} and {len(names) - limit} more"
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}" if names else ""


@dataclass
class Preview:
    """What reviewers are shown, computed by Countersign, not claimed by the agent."""

    kind: str  # "text" | "json" | "message" | "none" | "unavailable"
    title: str = ""
    before: Any = None
    after: Any = None
    notes: list[str] = field(default_factory=list)
    error: str = ""
    # True when no diff was computed because the credential does not allow preview reads.
    reads_off: bool = False
    # The type knows, from what it read, that executing would fail (an unknown user, a file that exists for
    # mode create): the page leads with ``failure`` and approving needs a typed reason (override_reason).
    will_fail: bool = False
    failure: str = ""
    # What the change means, beside the text diff, when the type knows its structure, e.g. group membership:
    # {"kind": "membership", "group": str, "added": [{"user_name", "display_name"}], "removed": [...]}.
    semantic: dict[str, Any] | None = None


@dataclass(frozen=True)
class Reverse:
    """The action that takes a succeeded one back: its type (often the same), params and summary."""

    action_type: str
    params: dict[str, Any]
    summary: str


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
    # Which result keys carry the target's "status", "headers" or "body": the credential's result_visibility
    # drops the parts it does not show (approvals.credentials.redaction.apply_visibility). Unmapped keys are always
    # kept.
    result_parts: ClassVar[dict[str, str]] = {}
    # Whether preview() reads the live target with the credential: then it runs only for a credential that
    # allows preview reads, and preview_without_reads() answers otherwise (approvals.presentation.previews). True
    # unless a
    # type says otherwise: a project's own type that reads is gated too. Types without a credential never are.
    preview_reads: ClassVar[bool] = True
    # Whether preview() is made from the params alone: no request, no file, no server, nothing it could wait on.
    # A decision then computes it under the action's row lock, from the row it locked (one read of the action).
    # False, the default, for every type whose preview may wait on something outside this process: a decision
    # computes that one before taking the lock, so no row lock is ever held across I/O (approvals.services.reviews).
    preview_offline: ClassVar[bool] = False
    # Whether the params may carry ``duration`` (ISO 8601 or seconds): Countersign then takes the change back
    # when it ends, with reverse() of what execution recorded (approvals.services.access). A time-boxed type's
    # reverse only ever removes what the action added.
    time_boxed: ClassVar[bool] = False

    def credential_name(self, params: dict[str, Any]) -> str | None:
        """The credential the params name, if this type uses one."""
        return params.get("credential") if self.credential_kinds else None

    def check_params(self, params: dict[str, Any], credential) -> None:
        """Checks beyond the JSON Schema; raise ParamsRejected. ``credential`` may be None."""

    def preview(self, params: dict[str, Any], client) -> Preview:
        return Preview(kind="none")

    def preview_without_reads(self, params: dict[str, Any], credential_name: str) -> Preview:
        """What reviewers see when the credential does not allow preview reads: no request is made."""
        return Preview(
            kind="unavailable",
            error=f"No diff could be computed: preview reads are off for the credential {credential_name}, "
            "so Countersign did not read the target. Check the current state yourself before approving.",
            reads_off=True,
        )

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

    def record_before(self, params: dict[str, Any], client) -> dict[str, Any] | None:
        """What the target looks like before execution, read with the executor's client just before execute(),
        for reverse() (file.write: the content it replaces). None: nothing to record. An ExecutionError here
        fails the action before any write."""
        return None

    def reverse(
        self, params: dict[str, Any], result: dict[str, Any], before: dict[str, Any] | None, credential
    ) -> Reverse | None:
        """The action that takes back what these params did, from the recorded result and state before; None
        when it cannot be reversed. ``credential`` is the one the action ran with (its scope may define how)."""
        return None

    def describe(self, params: dict[str, Any]) -> str:
        """What these params will do, in plain words for the reviewer ("Post to #ops"). Never reads the target."""
        return self.title

    def catalog_entry(self) -> dict[str, Any]:
        """The type as the API lists it (GET /api/v1/action-types)."""
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "risk": str(self.risk),
            "modifies_access": self.modifies_access,
            "time_boxed": self.time_boxed,
            "params_schema": self.params_schema,
        }
