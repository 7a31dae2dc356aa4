"""Typed views of what Countersign returns (see the API contract, "An action, as returned")."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
EXPIRED = "expired"
CANCELLED = "cancelled"
EXECUTING = "executing"
SUCCEEDED = "succeeded"
FAILED = "failed"  # known not to have taken effect: safe to retry with a new proposal
# Interrupted after it may have reached the target: nobody knows whether it took effect. Check the target before
# retrying. A reviewer who checked may resolve it to succeeded or failed (``result["resolution"]``).
UNKNOWN = "unknown"

STATUSES = (PENDING, APPROVED, REJECTED, EXPIRED, CANCELLED, EXECUTING, SUCCEEDED, FAILED, UNKNOWN)
TERMINAL = frozenset({REJECTED, EXPIRED, CANCELLED, SUCCEEDED, FAILED, UNKNOWN})


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    # Python 3.10's fromisoformat does not read a trailing "Z".
    return datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)


@dataclass(frozen=True)
class Review:
    """One verdict: by a person (``via`` web, slack or api) or by a policy (``via`` policy)."""

    reviewer: str
    verdict: str  # "approve" | "reject"
    via: str
    comment: str
    at: datetime | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Review:
        return cls(
            reviewer=data.get("reviewer", ""),
            verdict=data.get("verdict", ""),
            via=data.get("via", ""),
            comment=data.get("comment") or "",
            at=_when(data.get("at")),
        )


@dataclass(frozen=True)
class Decision:
    outcome: str  # "approved" | "rejected"
    reviews: list[Review]
    edited_params: dict[str, Any] | None
    reason: str

    @property
    def approved(self) -> bool:
        return self.outcome == APPROVED

    @property
    def comments(self) -> list[str]:
        """What approving reviewers wrote, in order (for a ``human.question``, the answer)."""
        return [r.comment for r in self.reviews if r.verdict == "approve" and r.comment]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decision:
        return cls(
            outcome=data.get("outcome", ""),
            reviews=[Review.from_json(r) for r in data.get("reviews") or []],
            edited_params=data.get("edited_params"),
            reason=data.get("reason") or "",
        )


@dataclass(frozen=True)
class Action:
    id: str
    status: str
    action_type: str
    params: dict[str, Any]
    summary: str
    risk: str
    required_approvals: int
    approvals: int
    policy: dict[str, Any]
    decision: Decision | None
    result: Any
    created_at: datetime | None
    expires_at: datetime | None
    decided_at: datetime | None
    finished_at: datetime | None
    links: dict[str, str]
    agent: str = ""
    on_behalf_of: str = ""
    approved_by: list[str] = field(default_factory=list)
    trace_url: str = ""
    run_id: str = ""
    confidence: float | None = None
    # Time-boxed access: when Countersign takes the change back (None: not time-boxed), when it did, and on a
    # revert, undo or extension the id of the action it reverses or extends.
    access_expires_at: datetime | None = None
    reverted_at: datetime | None = None
    reverts: str | None = None
    extends: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Action:
        decision = data.get("decision")
        return cls(
            id=str(data["id"]),
            status=data["status"],
            action_type=data.get("action_type", ""),
            params=data.get("params") or {},
            summary=data.get("summary", ""),
            risk=data.get("risk", ""),
            required_approvals=int(data.get("required_approvals") or 0),
            approvals=int(data.get("approvals") or 0),
            policy=data.get("policy") or {},
            decision=Decision.from_json(decision) if decision else None,
            result=data.get("result"),
            created_at=_when(data.get("created_at")),
            expires_at=_when(data.get("expires_at")),
            decided_at=_when(data.get("decided_at")),
            finished_at=_when(data.get("finished_at")),
            links=data.get("links") or {},
            agent=data.get("agent", ""),
            on_behalf_of=data.get("on_behalf_of", ""),
            approved_by=list(data.get("approved_by") or []),
            trace_url=data.get("trace_url") or "",
            run_id=data.get("run_id") or "",
            confidence=data.get("confidence"),
            access_expires_at=_when(data.get("access_expires_at")),
            reverted_at=_when(data.get("reverted_at")),
            reverts=data.get("reverts"),
            extends=data.get("extends"),
            raw=data,
        )

    @property
    def is_pending(self) -> bool:
        return self.status == PENDING

    @property
    def is_decided(self) -> bool:
        return self.status != PENDING

    @property
    def is_finished(self) -> bool:
        """Nothing more will happen: a final state, or approved with nothing for Countersign to run."""
        return self.status in TERMINAL or (self.status == APPROVED and self.finished_at is not None)

    @property
    def approved(self) -> bool:
        return self.decision is not None and self.decision.approved

    @property
    def effective_params(self) -> dict[str, Any]:
        """The parameters a reviewer approved: their edits if they made any, else the proposal's."""
        if self.decision is not None and self.decision.edited_params is not None:
            return self.decision.edited_params
        return self.params

    @property
    def error(self) -> str:
        """For a failed action (or one whose outcome is unknown), what went wrong."""
        if isinstance(self.result, dict):
            return str(self.result.get("error") or "")
        return ""

    @property
    def outcome_unknown(self) -> bool:
        """Interrupted after it may have reached the target: check the target before retrying."""
        return self.status == UNKNOWN

    @property
    def resolution(self) -> dict[str, Any] | None:
        """How a reviewer settled an unknown outcome: ``{"outcome", "by", "note", "at"}``, else None."""
        found = self.result.get("resolution") if isinstance(self.result, dict) else None
        return found if isinstance(found, dict) else None


@dataclass(frozen=True)
class ActionType:
    name: str
    title: str
    description: str
    risk: str
    modifies_access: bool
    params_schema: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ActionType:
        return cls(
            name=data["name"],
            title=data.get("title", ""),
            description=data.get("description", ""),
            risk=data.get("risk", ""),
            modifies_access=bool(data.get("modifies_access")),
            params_schema=data.get("params_schema") or {},
        )
