"""Audit events in plain words, for the action's timeline: "Approved by rita", "Execution started".

The audit log keeps its verbs (``grant.minted``): they are what staff filter and export by. A reviewer reading an
action's story needs what happened, and who did it when a person or an agent did; Countersign's own steps (the
worker, the scheduler) read without a "by". One table, here, so every page words an event the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# verb -> (words, whether the words are followed by "by <who>")
EVENT_WORDS: dict[str, tuple[str, bool]] = {
    "action.proposed": ("Proposed", True),
    "action.reviewed": ("Approved", True),
    "action.approved": ("Approval complete", False),
    "action.rejected": ("Rejected", True),
    "action.cancelled": ("Cancelled", True),
    "action.expired": ("Expired", False),
    "action.escalated": ("Escalated", True),
    "action.reminder_due": ("Reminder sent to the reviewers", False),
    "action.policy_reevaluated": ("Policy re-evaluated on the edited parameters", True),
    "action.edit_refused": ("Edit refused", True),
    "action.claimed": ("Claimed", True),
    "action.released": ("Released", True),
    "action.withdrawn": ("Approval withdrawn", True),
    "review.withdrawn": ("Approval withdrawn", True),
    "decision.refused": ("Decision refused", True),
    "preview.read": ("Target read for the preview", True),
    "grant.minted": ("Cleared to run", False),
    "grant.redeemed": ("Picked up for execution", False),
    "grant.refused": ("Execution refused", False),
    "execution.held": ("Execution held: executions are paused", False),
    "execution.started": ("Execution started", False),
    "execution.succeeded": ("Succeeded", False),
    "execution.failed": ("Failed", False),
    "execution.retrying": ("Retrying", False),
    "execution.outcome_unknown": ("Outcome unknown", False),
    "execution.redispatched": ("Execution dispatched again", False),
    "execution.finished_late": ("Finished after it was given up on", False),
    "execution.resolved": ("Outcome recorded", True),
    "notification.sent": ("Reviewers notified", False),
    "notification.failed": ("Notifying the reviewers failed", False),
}

# Who counts as "someone" (Actor.user / Actor.agent); system actors are Countersign itself.
PEOPLE_AND_AGENTS = frozenset({"user", "agent"})


@dataclass(frozen=True)
class EventWords:
    text: str
    by: str  # who did it, or "" when Countersign did


def describe(verb: str, actor_type: str = "", actor: str = "", data: dict[str, Any] | None = None) -> EventWords:
    """What an audit event says, in words; a verb this table does not know yet still reads as words."""
    words, with_actor = EVENT_WORDS.get(verb, (None, True))
    if verb == "action.reviewed" and (data or {}).get("verdict", "approve") != "approve":
        words = "Reviewed"
    if words is None:
        words = verb.replace(".", " ").replace("_", " ").capitalize()
    return EventWords(text=words, by=actor if with_actor and actor_type in PEOPLE_AND_AGENTS else "")
