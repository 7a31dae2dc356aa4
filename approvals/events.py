"""Live events: what a push says, and which channel-layer groups hear it.

A push carries only ids and status; pages fetch what they show through
their own authenticated request, so a push never leaks more than the
recipient could read anyway.
"""

from __future__ import annotations

from typing import TypedDict


class ActionEvent(TypedDict):
    action_id: str
    status: str
    approvals: int
    required_approvals: int
    reviewer_group_id: int | None


STAFF_GROUP = "queue-staff"


def action_group(action_id) -> str:
    return f"action-{action_id}"


def reviewer_group(group_id: int) -> str:
    return f"queue-group-{group_id}"


def groups_for(event: ActionEvent) -> list[str]:
    groups = [action_group(event["action_id"]), STAFF_GROUP]
    if event["reviewer_group_id"] is not None:
        groups.append(reviewer_group(event["reviewer_group_id"]))
    return groups
