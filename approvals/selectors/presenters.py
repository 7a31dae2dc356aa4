"""The action as the API returns it (docs/API.md)."""

from __future__ import annotations

from typing import Any

from approvals.models import ActionRequest, ActionStatus, Review
from approvals.models.action import DECIDED, TERMINAL
from approvals.policies.separation_of_duties import review_counts, uncounted_reason

# The action's own fields present_action (and the approval count it calls) reads: what the API's prepared reads load
# (approvals.selectors.actions). Any other field of an action read that way loads on first use, one query each, so a
# field added to the presentation belongs here too (tests/api/test_api.py checks that a read makes no extra query).
API_FIELDS = frozenset(
    {
        "id",
        "status",
        "action_type",
        "params",
        "summary",
        "trace_url",
        "run_id",
        "confidence",
        "agent_id",
        "on_behalf_of",
        "on_behalf_of_user_id",
        "risk",
        "modifies_access",
        "required_approvals",
        "reviewer_group_id",
        "policy_rule",
        "policy_effect",
        "policy_explanation",
        "edited_params",
        "decision_reason",
        "result",
        "created_at",
        "expires_at",
        "decided_at",
        "finished_at",
        "access_expires_at",
        "reverted_at",
        "reverts_id",
        "extends_id",
    }
)


def _iso(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def present_review(review: Review, policy_rule: str) -> dict[str, Any]:
    presented = {
        "reviewer": review.reviewer.get_username() if review.reviewer_id else f"policy:{policy_rule}",
        "verdict": review.verdict,
        "via": review.via,
        "comment": review.comment,
        "at": _iso(review.created_at),
    }
    if review.withdrawn_at is not None:
        # An approval undone within its undo window (approvals.services.undo): it counts for nothing.
        presented["withdrawn_at"] = _iso(review.withdrawn_at)
    return presented


def is_finished(action: ActionRequest) -> bool:
    """Nothing more will happen: terminal, or approved with nothing for Countersign to run."""
    return action.status in TERMINAL or (action.status == ActionStatus.APPROVED and action.finished_at is not None)


def present_action(action: ActionRequest) -> dict[str, Any]:
    # Held by a proposal just written in this process (ActionRequest.hold_reviews), else prefetched by selectors.
    reviews = action.held_reviews if action.held_reviews is not None else list(action.reviews.all())
    # Only approvals from someone eligible under the rule now in force count (an edit can change the rule).
    approvals = sum(1 for r in reviews if review_counts(r, action))
    decision = None
    if action.status in DECIDED:
        decision = {
            "outcome": "rejected" if action.status == ActionStatus.REJECTED else "approved",
            "reviews": [present_review(r, action.policy_rule) for r in reviews],
            "edited_params": action.edited_params,
            "reason": action.decision_reason,
        }
    action_id = str(action.id)
    path = f"/api/v1/actions/{action_id}"
    return {
        "id": action_id,
        "status": action.status,
        "action_type": action.action_type,
        "params": action.params,
        "summary": action.summary,
        "trace_url": action.trace_url,
        "run_id": action.run_id,
        "confidence": action.confidence,
        "agent": action.agent.name,
        "on_behalf_of": action.on_behalf_of,
        # The person on_behalf_of was resolved to when proposed (approvals.policies.people), or null: nobody known.
        "on_behalf_of_user": action.on_behalf_of_user.get_username() if action.on_behalf_of_user_id else None,
        "risk": action.risk,
        "modifies_access": action.modifies_access,
        "required_approvals": action.required_approvals,
        "approvals": approvals,
        "approved_by": [
            present_review(r, action.policy_rule)["reviewer"]
            for r in reviews
            if r.verdict == "approve" and r.withdrawn_at is None
        ],
        # Approvals given but not counted under the rule now in force, and why (e.g. the editor is not in it).
        "uncounted_approvals": [
            {"reviewer": present_review(r, action.policy_rule)["reviewer"], "reason": uncounted_reason(r, action)}
            for r in reviews
            if r.verdict == "approve" and r.withdrawn_at is None and not review_counts(r, action)
        ],
        "policy": {
            "rule": action.policy_rule,
            "effect": action.policy_effect,
            "explanation": action.policy_explanation,
        },
        "decision": decision,
        "result": action.result,
        "created_at": _iso(action.created_at),
        "expires_at": _iso(action.expires_at),
        "decided_at": _iso(action.decided_at),
        "finished_at": _iso(action.finished_at),
        # Time-boxed access and reverts (approvals.services.access): when the access ends, when it was taken back,
        # and the action a revert or undo reverses / an extension extends.
        "access_expires_at": _iso(action.access_expires_at),
        "reverted_at": _iso(action.reverted_at),
        "reverts": str(action.reverts_id) if action.reverts_id else None,
        "extends": str(action.extends_id) if action.extends_id else None,
        "links": {"self": path, "wait": f"{path}/wait", "review": f"/actions/{action_id}"},
    }
