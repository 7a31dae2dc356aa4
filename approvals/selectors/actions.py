"""Reads, always scoped to who is asking."""

from __future__ import annotations

from django.db.models import BooleanField, ExpressionWrapper, Prefetch, QuerySet

from agents.models import Agent
from approvals.models import ActionRequest, Review
from approvals.policies.separation_of_duties import counted_approvals, user_group_ids


def _reviews() -> Prefetch:
    # ``counts``: whether each approval counts under the rule now in force (permissions.review_counts).
    counts = ExpressionWrapper(counted_approvals(), output_field=BooleanField())
    return Prefetch(
        "reviews",
        queryset=Review.objects.select_related("reviewer").annotate(counts=counts).order_by("created_at", "id"),
    )


def reviews_of(action: ActionRequest) -> list[Review]:
    """``action``'s reviews, oldest first, each annotated with whether it ``counts`` (for Slack and email)."""
    prefetch = _reviews()
    return list(prefetch.queryset.filter(action_id=action.id))


def _with_related(qs: QuerySet) -> QuerySet:
    return qs.select_related("agent", "agent__owner", "reviewer_group", "on_behalf_of_user").prefetch_related(
        _reviews()
    )


def actions_for(principal) -> QuerySet:
    """Actions ``principal`` may read: an agent its own; a reviewer those routed to their groups; staff all."""
    if isinstance(principal, Agent):
        return _with_related(ActionRequest.objects.filter(agent=principal))
    if not getattr(principal, "is_authenticated", False) or not principal.is_active:
        return ActionRequest.objects.none()
    if principal.is_staff:
        return _with_related(ActionRequest.objects.all())
    return _with_related(ActionRequest.objects.filter(reviewer_group_id__in=user_group_ids(principal)))


def get_action_for(principal, action_id) -> ActionRequest | None:
    return actions_for(principal).filter(id=action_id).first()


def reviewed_by(user, action_id) -> ActionRequest | None:
    """An action ``user`` reviewed, even if it has since moved to a group they are not in (an edit's rule)."""
    return _with_related(ActionRequest.objects.filter(id=action_id, reviews__reviewer=user)).first()
