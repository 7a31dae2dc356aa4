"""Who may see and decide an action. Pure functions of the user and the action."""

from __future__ import annotations

from approvals.models.action import RISK_ORDER, ActionRequest, Risk


def user_group_ids(user) -> set[int]:
    cached = getattr(user, "_countersign_group_ids", None)
    if cached is None:
        cached = set(user.groups.values_list("id", flat=True))
        user._countersign_group_ids = cached
    return cached


def can_see(user, action: ActionRequest) -> bool:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    return user.is_staff or action.reviewer_group_id in user_group_ids(user)


def review_refusal(user, action: ActionRequest) -> str | None:
    """Why ``user`` may not decide ``action``, or None when they may."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return "you are not signed in as an active reviewer"
    if action.reviewer_group_id is None or action.reviewer_group_id not in user_group_ids(user):
        group = action.reviewer_group.name if action.reviewer_group_id else "no group"
        return f"only members of {group} may decide this action"
    if RISK_ORDER.get(Risk(action.risk), 0) >= RISK_ORDER[Risk.HIGH]:
        identities = {user.get_username().lower(), (user.email or "").lower()} - {""}
        if action.on_behalf_of and action.on_behalf_of.lower() in identities:
            return "this action was requested on your behalf; someone else must decide it"
        if action.agent.owner_id == user.pk:
            return "you own the agent that proposed this action; someone else must decide it"
    return None


def eligible_reviewers(action: ActionRequest, *, exclude: set[int] = frozenset(), limit: int = 50) -> list:
    """Who could still approve ``action``: its group's active members whom no rule refuses."""
    if action.reviewer_group_id is None:
        return []
    members = action.reviewer_group.user_set.filter(is_active=True).exclude(pk__in=exclude).order_by("username")
    return [user for user in members[:limit] if review_refusal(user, action) is None]
