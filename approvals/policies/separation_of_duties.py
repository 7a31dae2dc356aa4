"""Who may see and decide an action. Pure functions of the user and the action."""

from __future__ import annotations

from collections.abc import Set as AbstractSet

from django.contrib.auth import get_user_model
from django.db.models import Aggregate, Exists, F, OuterRef, Q, Subquery, TextField

from approvals.models.action import ActionRequest, Review
from approvals.policies import people
from catalog.risk import RISK_ORDER, Risk
from config.prepared import PreparedQuery

# A user's group ids, read once per request: by user_group_ids, or with the reviewer token (remember_group_ids).
_GROUP_IDS_ATTR = "_countersign_group_ids"


def user_group_ids(user) -> set[int]:
    cached = getattr(user, _GROUP_IDS_ATTR, None)
    if cached is None:
        cached = {group_id for (group_id,) in _GROUP_IDS.rows(user_id=user.pk)}
        setattr(user, _GROUP_IDS_ATTR, cached)
    return cached


def _memberships(user_id):
    return get_user_model().groups.through.objects.filter(user_id=user_id)


# Read for every decision and every reviewer's API request: compiled once (config/prepared.py).
_GROUP_IDS = PreparedQuery(
    lambda user_id: _memberships(user_id).values_list("group_id"),
    user_id=get_user_model()._meta.pk,
)


class _JoinedIds(Aggregate):
    """Ids as one text value, "3,7,12" (string_agg on PostgreSQL, group_concat on SQLite)."""

    function = "STRING_AGG"
    template = "%(function)s(CAST(%(expressions)s AS text), ',')"
    output_field = TextField()

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, function="GROUP_CONCAT", template="%(function)s(%(expressions)s, ',')")


def group_ids_of(user_id: OuterRef) -> Subquery:
    """The groups of the user ``user_id`` refers to, as one value of a statement that reads something else (a reviewer
    token's row: a round trip less on every reviewer request); ``remember_group_ids`` takes it."""
    return Subquery(
        _memberships(user_id).values("user_id").annotate(joined=_JoinedIds("group_id")).values(ids=F("joined"))[:1]
    )


def remember_group_ids(user, joined: str | None) -> None:
    """``user``'s groups as ``group_ids_of`` read them (None: no group), for ``user_group_ids`` in this request."""
    setattr(user, _GROUP_IDS_ATTR, {int(group_id) for group_id in joined.split(",")} if joined else set())


def review_refusal(user, action: ActionRequest) -> str | None:
    """Why ``user`` may not decide ``action``, or None when they may."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return "you are not signed in as an active reviewer"
    if action.reviewer_group_id is None or action.reviewer_group_id not in user_group_ids(user):
        group = action.reviewer_group.name if action.reviewer_group is not None else "no group"
        return f"only members of {group} may decide this action"
    if separation_applies(action):
        # People, not strings: the person resolved at proposal (approvals.policies.people), and for actions proposed
        # before that existed, any spelling of this user (username, email, "Name <email>", linked Slack id).
        # Deciding either way is refused: the requester and the owner neither approve nor reject (the agent
        # can still cancel its own proposal).
        resolved = action.on_behalf_of_user_id is not None
        if action.on_behalf_of_user_id == user.pk or people.names_user(
            action.on_behalf_of, user, check_slack=not resolved
        ):
            return "this action was requested on your behalf; someone else must decide it"
        if action.agent.owner_id == user.pk:
            return "you own the agent that proposed this action; someone else must decide it"
    return None


def counted_approvals() -> Q:
    """The reviews (a ``Review`` filter) that count toward their action's required approvals.

    An approval counts only from someone eligible under the rule now in force (an edit can change the rule,
    approvals.policies.evaluation): the policy's own, or a member of the action's reviewer group who is,
    where separation of duties applies, neither the agent's owner nor the person it acts for. A withdrawn
    approval (undone within its window, approvals.services.undo) counts for nothing.
    """
    in_group = Exists(
        get_user_model().groups.through.objects.filter(
            user_id=OuterRef("reviewer_id"), group_id=OuterRef("action__reviewer_group_id")
        )
    )
    no_separation = Q(action__modifies_access=False, action__risk__in=[Risk.LOW, Risk.MEDIUM])
    not_owner = ~Q(reviewer_id=F("action__agent__owner_id"))
    not_requester = Q(action__on_behalf_of_user_id__isnull=True) | ~Q(reviewer_id=F("action__on_behalf_of_user_id"))
    person = Q(in_group) & (no_separation | (not_owner & not_requester))
    return Q(verdict=Review.Verdict.APPROVE, withdrawn_at__isnull=True) & (Q(reviewer_id__isnull=True) | person)


def review_counts(review: Review, action: ActionRequest) -> bool:
    """``counted_approvals`` for one review already read (``counts`` annotated by approvals.selectors.actions, or
    checked)."""
    annotated = getattr(review, "counts", None)
    if annotated is not None:
        return bool(annotated)
    if review.verdict != Review.Verdict.APPROVE or review.withdrawn_at is not None:
        return False
    if review.reviewer_id is None:
        return True
    if separation_applies(action) and review.reviewer_id in (action.agent.owner_id, action.on_behalf_of_user_id):
        return False
    return action.reviewer_group_id is not None and action.reviewer_group_id in user_group_ids(review.reviewer)


def uncounted_reason(review: Review, action: ActionRequest) -> str:
    """Why an approval does not count (for the page and the API), or "" when it counts."""
    if review.verdict != Review.Verdict.APPROVE or review.withdrawn_at is not None or review_counts(review, action):
        return ""  # a withdrawn approval is no longer an approval at all
    if review.reviewer_id in (action.agent.owner_id, action.on_behalf_of_user_id):
        return "separation of duties: the agent's owner or the person it acts for"
    group = action.reviewer_group.name if action.reviewer_group is not None else "no group"
    return f"not a member of {group}, the group the rule now in force requires"


def separation_required(*, modifies_access: bool, risk: str) -> bool:
    """Neither the agent's owner nor the person it acts for may decide: at the access floor, or high and critical.

    The one statement of the rule; ``counted_approvals`` says the same in SQL."""
    return modifies_access or RISK_ORDER.get(Risk(risk), 0) >= RISK_ORDER[Risk.HIGH]


def separation_applies(action: ActionRequest) -> bool:
    return separation_required(modifies_access=action.modifies_access, risk=action.risk)


def approval_would_count(user, action: ActionRequest, *, reviewer_group: str, modifies_access: bool, risk: str) -> bool:
    """Whether ``user``'s approval would count were ``action`` under a rule needing ``reviewer_group``, at this
    risk and exposure: the desk's live check of an edit, which can move an action to another rule."""
    if not user.groups.filter(name=reviewer_group).exists():
        return False
    conflicted = user.pk in (action.agent.owner_id, action.on_behalf_of_user_id)
    return not (conflicted and separation_required(modifies_access=modifies_access, risk=risk))


def eligible_reviewers(
    action: ActionRequest, *, exclude: AbstractSet[int | None] = frozenset(), limit: int = 50
) -> list:
    """Who could still approve ``action``: its group's active members whom no rule refuses."""
    group = action.reviewer_group
    if group is None:
        return []
    members = group.user_set.filter(is_active=True).exclude(pk__in=exclude).order_by("username")
    return [user for user in members[:limit] if review_refusal(user, action) is None]
