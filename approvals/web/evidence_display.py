"""What a decided action's page draws: what was approved (with the edit against the proposal), what ran, the
original proposal, and the evidence each review was decided on (Review.evidence), drawn again as it was shown."""

from __future__ import annotations

import json
from typing import Any

from approvals.models import ActionRequest, ActionStatus, Review
from approvals.presentation.previews import describe_params, preview_from_dict
from approvals.web.preview_display import edits_display, preview_display
from audit.canonical import digest
from catalog import registry
from catalog.base import Preview

# Statuses an approval led to: something was (or is about to be) run.
APPROVED_STATUSES = {
    ActionStatus.APPROVED,
    ActionStatus.EXECUTING,
    ActionStatus.SUCCEEDED,
    ActionStatus.FAILED,
    ActionStatus.UNKNOWN,
}


def shown_preview(preview: Preview) -> dict[str, Any]:
    """The preview as the templates draw it, with whether execution will fail (said first, Approve disabled)."""
    return {**preview_display(preview), "will_fail": preview.will_fail, "failure": preview.failure}


def describe_context(action: ActionRequest) -> dict[str, Any]:
    """The plain words under the title: what the parameters that run will do (the reviewer's edit, if any)."""
    return {"describe": describe_params(action.action_type, action.effective_params)}


def review_evidence(review: Review) -> dict[str, Any] | None:
    """One review's stored evidence, drawn as it was shown; None for a review that kept none (before 0017)."""
    evidence = review.evidence or {}
    if not evidence.get("preview"):
        return None
    edits = evidence.get("edits")
    approved = evidence.get("approved_preview")
    return {
        "describe": evidence.get("describe", ""),
        "preview": shown_preview(preview_from_dict(evidence["preview"])),
        "approved_preview": shown_preview(preview_from_dict(approved)) if approved else None,
        "edits": edits_display(edits["before"], edits["after"]) if edits else None,
        "computed_at": evidence.get("computed_at", ""),
        "fingerprint_checked": bool(evidence.get("fingerprint_checked")),
        "digest": digest(evidence),
    }


def decided_context(action: ActionRequest, reviews: list[Review]) -> dict[str, Any]:
    """Everything the decided layout (templates/approvals/_decided.html) draws; empty while pending."""
    if action.is_pending:
        return {}
    approved = action.status in APPROVED_STATUSES
    action_type = registry.get(action.action_type)
    return {
        "decided": {
            "approved": approved,
            "describe": describe_params(action.action_type, action.effective_params),
            "proposal_describe": describe_params(action.action_type, action.params),
            "edited": action.edited_params is not None and action.edited_params != action.params,
            "edits": edits_display(action.params, action.edited_params) if action.edited_params is not None else None,
            "params_json": json.dumps(action.effective_params, indent=2, sort_keys=True, ensure_ascii=False),
            "executes": action_type.executes if action_type is not None else True,
            "reviews": [(review, review_evidence(review)) for review in reviews],
        }
    }
