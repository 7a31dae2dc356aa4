"""Reads, always scoped to who is asking."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import BooleanField, ExpressionWrapper, Field, Prefetch, QuerySet, Subquery, Value

from agents.authentication import key_and_agent_columns, key_from_row
from agents.models import Agent, AgentKey
from approvals.models import ActionRequest, Review
from approvals.policies.separation_of_duties import counted_approvals, user_group_ids
from approvals.selectors.presenters import API_FIELDS
from config.prepared import PreparedQuery, concrete_columns, from_row


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


# --- the API's read of one action: prepared statements (config/prepared.py) ---------------------------------------
# Agents read their actions on every poll, so the API reads one action with two statements compiled once per
# process instead of three built anew (docs/BENCHMARKS.md): the action with what present_action shows of its agent,
# requester and reviewer group, then its reviews, each marked whether it counts (counted_approvals, as above); only
# the first when the action has no reviews yet (it says so).

# The fields the API presents (presenters.API_FIELDS), not the context (up to 64 KiB of JSON) nor bookkeeping times.
_ACTION_FIELDS = tuple(f.attname for f in ActionRequest._meta.concrete_fields if f.attname in API_FIELDS)
_ACTION_COLUMNS = _ACTION_FIELDS
_RELATED_COLUMNS = ("agent__name", "agent__owner_id", "on_behalf_of_user__username", "reviewer_group__name")
_REVIEW_COLUMNS = tuple(concrete_columns(Review))
# A read action holds what present_action shows of these, as select_related would (config.prepared.from_row makes
# the instances without Model.__init__, so they are held without the descriptors' checks of a fresh assignment).
_AGENT, _REQUESTER, _GROUP = (
    ActionRequest._meta.get_field(name) for name in ("agent", "on_behalf_of_user", "reviewer_group")
)
_REVIEWER = Review._meta.get_field("reviewer")
_ACTION_PK = ActionRequest._meta.pk
_User = get_user_model()


def _one_action_row(qs: QuerySet, first: Sequence[str] = (), then: Sequence[Any] = ()) -> QuerySet:
    """The action's columns the API presents, what it shows of the agent, requester and reviewer group, and whether
    the action has reviews at all (``has_reviews``, which the database keeps): a pending action (what an agent polls,
    what a reviewer's queue lists) has none, and then its reviews are not read. ``first``: columns before those;
    ``then``: columns after them."""
    return qs.values_list(*first, *_ACTION_COLUMNS, *_RELATED_COLUMNS, "has_reviews", *then)


_AGENTS_ACTION = PreparedQuery(
    lambda action_id, agent_id: _one_action_row(ActionRequest.objects.filter(id=action_id, agent_id=agent_id)),
    action_id=_ACTION_PK,
    agent_id=Agent._meta.pk,
)
_STAFFS_ACTION = PreparedQuery(
    lambda action_id: _one_action_row(ActionRequest.objects.filter(id=action_id)), action_id=_ACTION_PK
)
_REVIEWERS_ACTION = PreparedQuery(
    lambda action_id, user_id: _one_action_row(
        ActionRequest.objects.filter(
            id=action_id,
            reviewer_group_id__in=_User.groups.through.objects.filter(user_id=user_id).values("group_id"),
        )
    ),
    action_id=_ACTION_PK,
    user_id=_User._meta.pk,
)
_REVIEWS = PreparedQuery(
    lambda action_id: (
        Review.objects.filter(action_id=action_id)
        .annotate(counts=ExpressionWrapper(counted_approvals(), output_field=BooleanField()))
        .order_by("created_at", "id")
        .values_list(*_REVIEW_COLUMNS, "reviewer__username", "counts")
    ),
    action_id=_ACTION_PK,
)


def read_action_for(principal, action_id) -> ActionRequest | None:
    """``get_action_for`` for the API: the action, holding its reviews, with its agent (name and owner), requester and
    reviewer group read as far as the API presents them (other fields of those load on first use)."""
    asked = _action_query_for(principal, action_id)
    row = asked[0].first(**asked[1]) if asked is not None else None
    if row is None:
        return None
    *row, reviewed = row
    action = _action_from_row(tuple(row))
    action.hold_reviews(reviews_with_counts(action.id) if reviewed else [])
    return action


async def aread_action_for(aconnection, principal, action_id) -> ActionRequest | None:
    """``read_action_for`` on a psycopg ``AsyncConnection``: a ``wait``'s reads after a change (approvals.api.wait)."""
    asked = _action_query_for(principal, action_id)
    row = await asked[0].afirst(aconnection, **asked[1]) if asked is not None else None
    if row is None:
        return None
    *row, reviewed = row
    action = _action_from_row(tuple(row))
    await ahold_reviews(aconnection, action, reviewed)
    return action


def _action_query_for(principal, action_id) -> tuple[PreparedQuery, dict[str, Any]] | None:
    """The statement that reads ``action_id`` as ``principal`` may see it, and its values; None: nobody to see it."""
    if isinstance(principal, Agent):
        return _AGENTS_ACTION, {"action_id": action_id, "agent_id": principal.pk}
    if not getattr(principal, "is_authenticated", False) or not principal.is_active:
        return None
    if principal.is_staff:
        return _STAFFS_ACTION, {"action_id": action_id}
    return _REVIEWERS_ACTION, {"action_id": action_id, "user_id": principal.pk}


# An agent's read on the event loop (approvals.api.agent_reads) reads its key, with its agent, and the action in one
# statement: the action as _AGENTS_ACTION reads it, joined to the key that asks, so only that key's agent's action.
_KEY_AND_AGENT_WIDTH = len(key_and_agent_columns())
_ACTION_WITH_KEY = PreparedQuery(
    lambda action_id, public_id: _one_action_row(
        ActionRequest.objects.filter(id=action_id, agent__keys__public_id=public_id),
        key_and_agent_columns(key="agent__keys__"),
    ),
    action_id=_ACTION_PK,
    public_id=AgentKey._meta.get_field("public_id"),
)


async def aread_action_with_key(aconnection, public_id: str, action_id) -> tuple[AgentKey, ActionRequest, bool] | None:
    """(the agent key ``public_id``, holding its agent; that agent's action ``action_id``, as ``read_action_for``
    reads it, without its reviews; whether it has any: ``ahold_reviews``), on a psycopg ``AsyncConnection``. None
    when there is no such key, or its agent has no such action. Nothing here says whether the key authenticates."""
    row = await _ACTION_WITH_KEY.afirst(aconnection, action_id=action_id, public_id=public_id)
    if row is None:
        return None
    *action_row, reviewed = row[_KEY_AND_AGENT_WIDTH:]
    return key_from_row(row[:_KEY_AND_AGENT_WIDTH]), _action_from_row(tuple(action_row)), reviewed


async def ahold_reviews(aconnection, action: ActionRequest, reviewed: bool) -> None:
    """``action`` holds its reviews, as ``read_action_for`` gives them (read only when it has any)."""
    reviews = await _REVIEWS.arows(aconnection, action_id=action.id) if reviewed else []
    action.hold_reviews([_review_from_row(review) for review in reviews])


def _action_from_row(row: tuple, related: dict | None = None) -> ActionRequest:
    """``related``: the agents, people and groups already made for earlier rows of the same read (a page of fifty
    is mostly one agent's, one group's): each is made once and shared, as the rows say the same of it."""
    related = {} if related is None else related
    split = len(_ACTION_COLUMNS)
    action = from_row(ActionRequest, _ACTION_FIELDS, row[:split])
    agent_name, owner_id, requester_name, group_name = row[split:]
    key = ("agent", action.agent_id)
    if key not in related:
        related[key] = from_row(Agent, ("id", "name", "owner_id"), (action.agent_id, agent_name, owner_id))
    _AGENT.set_cached_value(action, related[key])
    if action.on_behalf_of_user_id is not None:
        key = ("user", action.on_behalf_of_user_id)
        if key not in related:
            related[key] = from_row(_User, ("id", "username"), (action.on_behalf_of_user_id, requester_name))
        _REQUESTER.set_cached_value(action, related[key])
    if action.reviewer_group_id is not None:
        key = ("group", action.reviewer_group_id)
        if key not in related:
            related[key] = from_row(Group, ("id", "name"), (action.reviewer_group_id, group_name))
        _GROUP.set_cached_value(action, related[key])
    return action


def reviews_with_counts(action_id) -> list[Review]:
    """The action's reviews, oldest first, each with its reviewer's name and whether it ``counts`` (prepared)."""
    return [_review_from_row(row) for row in _REVIEWS.rows(action_id=action_id)]


def _review_from_row(row: tuple) -> Review:
    split = len(_REVIEW_COLUMNS)
    review = from_row(Review, _REVIEW_COLUMNS, row[:split])
    reviewer_name, review.counts = row[split:]
    if review.reviewer_id is not None:
        _REVIEWER.set_cached_value(review, from_row(_User, ("id", "username"), (review.reviewer_id, reviewer_name)))
    return review


# --- the API's first page of actions, newest first: prepared per shape --------------------------------------------
# An agent polling its list reads the first page again and again; later pages (a cursor) take the general path.


def _scoped(kind: str, value) -> QuerySet:
    if kind == "agent":
        return ActionRequest.objects.filter(agent_id=value)
    if kind == "agent key":  # the key's columns by the join; its agent's id, a constant, picks the agent's index
        agent_of_key = Subquery(AgentKey.objects.filter(public_id=value).order_by().values("agent_id")[:1])
        return ActionRequest.objects.filter(agent_id=agent_of_key, agent__keys__public_id=value)
    if kind == "reviewer":
        groups = _User.groups.through.objects.filter(user_id=value).values("group_id")
        return ActionRequest.objects.filter(reviewer_group_id__in=groups)
    return ActionRequest.objects.all()


_PRINCIPAL_FIELD = {
    "agent": Agent._meta.pk,
    "agent key": AgentKey._meta.get_field("public_id"),
    "reviewer": _User._meta.pk,
}
_STATUS_FIELD = ActionRequest._meta.get_field("status")
_first_pages: dict[tuple[str, bool, int], tuple[PreparedQuery, PreparedQuery]] = {}


def _first_page_queries(kind: str, by_status: bool, size: int) -> tuple[PreparedQuery, PreparedQuery]:
    shape = (kind, by_status, size)
    if shape not in _first_pages:

        def newest(principal=None, status=None) -> QuerySet:
            qs = _scoped(kind, principal)
            if by_status:
                qs = qs.filter(status=status)
            return qs.order_by("-created_at", "-id")

        def page(**values) -> QuerySet:
            if kind == "agent key":
                return _page_and_key(newest(**values), values["principal"], size + 1)
            return _one_action_row(newest(**values))[: size + 1]

        fields = {"status": _STATUS_FIELD} if by_status else {}
        if kind in _PRINCIPAL_FIELD:
            fields["principal"] = _PRINCIPAL_FIELD[kind]
        actions = PreparedQuery(page, **fields)
        reviews = PreparedQuery(
            lambda **values: (
                Review.objects.filter(action_id__in=newest(**values)[: size + 1].values("id"))
                .annotate(counts=ExpressionWrapper(counted_approvals(), output_field=BooleanField()))
                .order_by("created_at", "id")
                .values_list(*_REVIEW_COLUMNS, "reviewer__username", "counts")
            ),
            **fields,
        )
        _first_pages[shape] = (actions, reviews)
    return _first_pages[shape]


def first_page_for(principal, *, status: str | None, size: int) -> tuple[list[ActionRequest], bool]:
    """(the ``size`` newest actions ``principal`` may read, optionally of one status, holding their reviews; whether
    more follow): ``actions_for`` ordered newest first, read as ``read_action_for`` reads one action."""
    if isinstance(principal, Agent):
        kind, values = "agent", {"principal": principal.pk}
    elif not getattr(principal, "is_authenticated", False) or not principal.is_active:
        return [], False
    elif principal.is_staff:
        kind, values = "staff", {}
    else:
        kind, values = "reviewer", {"principal": principal.pk}
    if status is not None:
        values["status"] = status
    actions_query, reviews_query = _first_page_queries(kind, status is not None, size)
    rows = actions_query.rows(**values)
    reviewed = any(row[_ACTION_ROW_WIDTH] for row in rows[:size])  # has_reviews: a page of new proposals has none
    reviews = reviews_query.rows(**values) if reviewed else []
    return _page([row[:_ACTION_ROW_WIDTH] for row in rows], reviews, size)


async def afirst_page_with_key(
    aconnection, public_id: str, *, status: str | None, size: int
) -> tuple[AgentKey, list[ActionRequest], bool] | None:
    """(the agent key ``public_id``, holding its agent; ``first_page_for`` that agent; whether more follow), on a
    psycopg ``AsyncConnection`` (approvals.api.agent_reads): the key read with the page (``_page_and_key``), and the
    reviews only when an action on the page has any. None when there is no such key or its agent has no such action yet.
    Nothing here says whether the key authenticates."""
    values = {"principal": public_id} if status is None else {"principal": public_id, "status": status}
    actions_query, reviews_query = _first_page_queries("agent key", status is not None, size)
    key_row, *rows = await actions_query.arows(aconnection, **values) or [None]
    if not rows:  # no such key (no rows at all), or an empty page
        return None
    reviewed = any(row[_ACTION_ROW_WIDTH] for row in rows[:size])
    reviews = await reviews_query.arows(aconnection, **values) if reviewed else []
    actions, more = _page([row[:_ACTION_ROW_WIDTH] for row in rows], reviews, size)
    return key_from_row(key_row[_ACTION_ROW_WIDTH + 1 :]), actions, more


# A first page read with the key that asks for it: the page's rows, each saying whether its action has reviews, then
# one row of the key with its agent; NULL where a row has none of the other's columns. The key's eighteen columns on
# every row of the page (a join) cost a quarter of the page's CPU to load, secrets and times included, for one key.
_ACTION_ROW_WIDTH = len(_ACTION_COLUMNS) + len(_RELATED_COLUMNS)
_KEY_AND_AGENT_FIELDS = (*AgentKey._meta.concrete_fields, *Agent._meta.concrete_fields)


def _page_and_key(newest: QuerySet, public_id: str, rows: int) -> QuerySet:
    """The first ``rows`` of ``newest`` as ``_one_action_row`` reads them, and the key ``public_id`` with its agent, in
    one statement: the key's row first (its action columns NULL, and PostgreSQL sorts NULL first in a descending
    order), then the page's rows newest first."""
    page = _one_action_row(newest, then=[_null(field) for field in _KEY_AND_AGENT_FIELDS])[:rows]
    key = (
        AgentKey.objects.filter(public_id=public_id)
        .order_by()
        .values_list(*[_null(Field()) for _ in range(_ACTION_ROW_WIDTH + 1)], *key_and_agent_columns())
    )
    return page.union(key, all=True).order_by("-created_at", "-id")


def _null(field) -> ExpressionWrapper:
    """NULL in the SQL (a literal: ``Value(None, output_field=JSONField())`` would be a parameter), read back as
    ``field`` reads its values: the first query of a UNION gives every row its converters (and PostgreSQL the
    columns' types), so the later query's NULLs need no field of their own."""
    return ExpressionWrapper(Value(None), output_field=field)


def _page(action_rows: list[tuple], review_rows: list[tuple], size: int) -> tuple[list[ActionRequest], bool]:
    related: dict = {}
    actions = [_action_from_row(row, related) for row in action_rows]
    more = len(actions) > size
    actions = actions[:size]
    held: dict = {action.id: [] for action in actions}
    for row in review_rows:
        review = _review_from_row(row)
        if review.action_id in held:
            held[review.action_id].append(review)
    for action in actions:
        action.hold_reviews(held[action.id])
    return actions, more
