"""A person settles an execution whose outcome nobody knows.

An execution interrupted after it may have reached the target ends ``unknown`` (approvals.services.execution):
Countersign cannot tell whether it took effect, so it neither retries it nor calls it failed. Someone who may
decide the action (its reviewer group, under the same rule as approving it) or staff checks the target and
says what happened: ``succeeded`` (it took effect) or ``failed`` (it did not happen). The original result is
kept; ``result.resolution`` records who said what, when, and what they checked.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from approvals.errors import InvalidInput, NotAllowed, NotFound, NotUnknown
from approvals.models import ActionRequest, ActionStatus
from approvals.policies.separation_of_duties import review_refusal
from approvals.services import access
from approvals.services.reviews import record_decision_refused
from approvals.services.transitions import lock_action, transition
from audit.chain import Actor, audited_atomic

OUTCOMES = {"succeeded": ActionStatus.SUCCEEDED, "failed": ActionStatus.FAILED}
MAX_NOTE = 2000
# The verdict refusals are recorded under (decision.refused, data.verdict), beside "approve" and "reject".
VERDICT = "resolve"


def resolution_of(action: ActionRequest) -> dict[str, Any] | None:
    """How a person settled the action's unknown outcome (``result.resolution``), or None if nobody did."""
    result = action.result if isinstance(action.result, dict) else {}
    found = result.get("resolution")
    return found if isinstance(found, dict) else None


def resolution_refusal(user, action: ActionRequest) -> str | None:
    """Why ``user`` may not resolve ``action``'s unknown outcome, or None: staff, or whoever may decide it."""
    if getattr(user, "is_authenticated", False) and user.is_active and user.is_staff:
        return None
    return review_refusal(user, action)


def resolve_unknown_outcome(action_id, *, user, outcome: str, note: str, via: str) -> ActionRequest:
    """Settle an ``unknown`` execution as ``succeeded`` or ``failed``, after ``user`` checked the target.

    Raises InvalidInput (no such outcome, no note), NotFound, NotAllowed (not a reviewer of this action nor
    staff) or NotUnknown (409: the action is not ``unknown``). Refusals (not allowed, not unknown) are
    recorded as ``decision.refused`` after the transaction rolled back, as refused approvals are.
    """
    target = OUTCOMES.get(outcome)
    if target is None:
        raise InvalidInput(
            "Say whether it took effect.",
            errors={"outcome": ['"succeeded" (it took effect) or "failed" (it did not).']},
        )
    note = (note or "").strip()
    if not note:
        raise InvalidInput(
            "A resolution needs a note.", errors={"note": ["Say what you checked on the target, and what you found."]}
        )
    if len(note) > MAX_NOTE:
        raise InvalidInput("Note too long.", errors={"note": [f"At most {MAX_NOTE} characters."]})
    try:
        return _resolve(action_id, user=user, target=target, note=note, via=via)
    except (NotAllowed, NotUnknown) as exc:
        record_decision_refused(action_id, user, via, VERDICT, exc.detail)
        raise


def _resolve(action_id, *, user, target: str, note: str, via: str) -> ActionRequest:
    with audited_atomic():
        try:
            action = lock_action(action_id)
        except (ActionRequest.DoesNotExist, ValueError):
            raise NotFound("No such action.") from None
        refusal = resolution_refusal(user, action)
        if refusal:
            raise NotAllowed(refusal)
        if action.status != ActionStatus.UNKNOWN:
            raise NotUnknown(f"The action is {action.status}; only an action whose outcome is unknown is resolved.")
        resolution = {
            "outcome": target,
            "by": user.get_username(),
            "note": note,
            "at": timezone.now().isoformat().replace("+00:00", "Z"),
        }
        action.result = {**_original(action.result), "resolution": resolution}
        transition(
            action,
            target,
            actor=Actor.user(user, via),
            verb="execution.resolved",
            data={"outcome": target, "note": note},
        )
        # A time-boxed grant that did take effect ends like any other (approvals.services.access).
        access.after_execution(action, target)
    return action


def _original(result: Any) -> dict[str, Any]:
    """The result the interrupted execution left, kept as it was (a non-object one under ``result``)."""
    if isinstance(result, dict):
        return dict(result)
    return {} if result is None else {"result": result}
