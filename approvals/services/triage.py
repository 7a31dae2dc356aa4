"""Bulk decisions from the desk's triage mode: several low-risk actions of one type, decided one by one.

The batch is checked first (every action visible to the reviewer, pending, low risk, of one type); a batch that
fails the check decides nothing. Each action is then approved or rejected through the ordinary services, so
each is checked (eligibility, separation of duties, the target's state) and audited on its own; one refused
action does not stop the others.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from approvals.errors import InvalidInput, ServiceError
from approvals.models import ActionStatus
from approvals.selectors import actions as selectors
from approvals.services.reviews import approve_action, reject_action
from catalog.risk import Risk

MAX_BULK = 50


@dataclass(frozen=True)
class BulkResult:
    action_id: str
    ok: bool
    status: str
    message: str


def decide_in_bulk(action_ids: list[str], reviewer, *, verdict: str, via: str, reason: str = "") -> list[BulkResult]:
    """Approve or reject each of ``action_ids`` as ``reviewer``; InvalidInput (nothing decided) for a bad batch."""
    if verdict not in ("approve", "reject"):
        raise InvalidInput("Choose approve or reject.", errors={"verdict": ["approve or reject"]})
    ids = list(dict.fromkeys(str(i) for i in action_ids if i))
    if not ids:
        raise InvalidInput("Select at least one action.", errors={"ids": ["Select at least one action."]})
    if len(ids) > MAX_BULK:
        raise InvalidInput(f"At most {MAX_BULK} actions at once.", errors={"ids": [f"At most {MAX_BULK}."]})
    try:
        ids = [str(uuid.UUID(i)) for i in ids]
    except ValueError:
        raise InvalidInput("Those are not action ids.", errors={"ids": ["Not action ids."]}) from None
    found = {str(a.id): a for a in selectors.actions_for(reviewer).filter(id__in=ids)}
    missing = [i for i in ids if i not in found]
    if missing:
        raise InvalidInput(f"{len(missing)} of the selected actions are not yours to see.", errors={"ids": missing})
    actions = [found[i] for i in ids]
    if any(a.status != ActionStatus.PENDING for a in actions):
        raise InvalidInput("Some selected actions are no longer pending; reload and select again.")
    if any(a.risk != Risk.LOW for a in actions):
        # Anything riskier deserves its own look (and, high and critical, the typed confirmation).
        raise InvalidInput("Only low-risk actions are decided in bulk.")
    if len({a.action_type for a in actions}) != 1:
        raise InvalidInput("Bulk decisions take actions of one type at a time.")
    if verdict == "reject" and not reason.strip():
        raise InvalidInput("A rejection needs a reason.", errors={"reason": ["Say why, so the agent can adapt."]})
    results = []
    for action in actions:
        try:
            if verdict == "approve":
                decided = approve_action(action_id=action.id, reviewer=reviewer, via=via)
            else:
                decided = reject_action(action_id=action.id, reviewer=reviewer, via=via, reason=reason)
        except ServiceError as exc:
            results.append(BulkResult(str(action.id), False, action.status, exc.detail))
        else:
            results.append(BulkResult(str(action.id), True, decided.status, ""))
    return results
