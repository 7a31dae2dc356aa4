"""The reviewer's desk: the queue's filters, search, sorting, keyset pages and counts.

Everything here reads through ``selectors.actions_for``, so a reviewer only
ever counts, searches and pages through what they may see.

Pages are keyset pages (a cursor holds the sort key of the last row shown),
so page 20 costs what page 1 costs and rows inserted meanwhile never shift a
page. Counts are capped (``COUNT_CAP``): each is a ``COUNT`` over a
``LIMIT``-ed subquery, so a facet over a million historic actions costs at
most ``COUNT_CAP`` index entries. All counts of one page load go to the
database as one statement.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import F, Q, QuerySet

from agents.capabilities import constraint_violation
from agents.models import Agent, Capability
from approvals import selectors
from approvals.action_types import registry
from approvals.errors import InvalidInput
from approvals.models import ActionRequest, ActionStatus, Review
from approvals.models.action import RISK_RANK, Risk
from approvals.services.proposals import validate_params

PAGE_SIZE = 50
COUNT_CAP = 999
MAX_QUERY = 200

STATUS_CHOICES = [s.value for s in ActionStatus]
ALL = "all"


@dataclass(frozen=True)
class SortKey:
    field: str
    descending: bool


# name -> (label, keys). The last key is the primary key, so every sort is total.
SORTS: dict[str, tuple[str, tuple[SortKey, ...]]] = {
    "newest": ("Newest first", (SortKey("created_at", True), SortKey("id", True))),
    "oldest": ("Oldest first", (SortKey("created_at", False), SortKey("id", False))),
    "risk": (
        "Highest risk first",
        (SortKey("risk_rank", True), SortKey("created_at", False), SortKey("id", False)),
    ),
    "expiry": ("Expiring soonest", (SortKey("expires_at", False), SortKey("id", False))),
}
DEFAULT_SORT = "newest"


class BadCursor(ValueError):
    """A page link that is not ours, or was made for another sort."""


# --- filters ----------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueFilters:
    """What the reviewer asked the queue to show. Parsed leniently: unknown values are dropped."""

    status: str = ActionStatus.PENDING  # one status, or "all"
    risks: tuple[str, ...] = ()  # empty: every risk
    agent: str = ""  # agent name
    action_type: str = ""
    on_behalf_of: str = ""
    q: str = ""  # free text, searched in summaries
    sort: str = DEFAULT_SORT

    @classmethod
    def from_query(cls, query: Mapping[str, Any]) -> QueueFilters:
        getlist = getattr(query, "getlist", None)
        raw_risks = getlist("risk") if getlist else query.get("risk", [])
        if isinstance(raw_risks, str):
            raw_risks = [raw_risks]
        status = str(query.get("status") or ActionStatus.PENDING)
        sort = str(query.get("sort") or DEFAULT_SORT)
        return cls(
            status=status if status in (*STATUS_CHOICES, ALL) else ActionStatus.PENDING,
            risks=tuple(r for r in (x.value for x in Risk) if r in raw_risks),
            agent=str(query.get("agent") or "").strip()[:64],
            action_type=str(query.get("action_type") or "").strip()[:100],
            on_behalf_of=str(query.get("on_behalf_of") or "").strip()[:254],
            q=" ".join(str(query.get("q") or "").split())[:MAX_QUERY],
            sort=sort if sort in SORTS else DEFAULT_SORT,
        )

    def query_items(self) -> list[tuple[str, str]]:
        """The filters as query-string pairs, defaults left out."""
        items: list[tuple[str, str]] = []
        if self.status != ActionStatus.PENDING:
            items.append(("status", self.status))
        items.extend(("risk", r) for r in self.risks)
        for name in ("agent", "action_type", "on_behalf_of", "q"):
            if getattr(self, name):
                items.append((name, getattr(self, name)))
        if self.sort != DEFAULT_SORT:
            items.append(("sort", self.sort))
        return items

    def querystring(self, **extra: str) -> str:
        return urlencode(self.query_items() + [(k, v) for k, v in extra.items() if v])

    @property
    def is_default(self) -> bool:
        return not self.query_items()

    @property
    def pending_only(self) -> bool:
        return self.status == ActionStatus.PENDING

    def apply(self, qs: QuerySet, *, agent_id: uuid.UUID | None, without: str = "") -> QuerySet:
        """``qs`` narrowed by every filter but ``without`` (a facet counts with its own filter left out)."""
        if without != "status" and self.status != ALL:
            qs = qs.filter(status=self.status)
        if without != "risk" and self.risks:
            qs = qs.filter(risk__in=self.risks)
        if without != "agent" and self.agent:
            qs = qs.filter(agent_id=agent_id) if agent_id else qs.none()
        if without != "action_type" and self.action_type:
            qs = qs.filter(action_type=self.action_type)
        if self.on_behalf_of:
            qs = qs.filter(on_behalf_of__iexact=self.on_behalf_of)
        if self.q:
            for word in self.q.split(" ")[:8]:
                qs = qs.filter(summary__icontains=word)
        return qs


def _agent_id(name: str) -> uuid.UUID | None:
    if not name:
        return None
    return Agent.objects.filter(name=name).values_list("id", flat=True).first()


# --- cursors -----------------------------------------------------------------------------


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _decode_value(key: SortKey, raw: Any) -> Any:
    if key.field in ("created_at", "expires_at"):
        value = datetime.fromisoformat(str(raw))
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value
    if key.field == "id":
        return uuid.UUID(str(raw))
    if key.field == "risk_rank":
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise ValueError("rank")
        return raw
    raise ValueError(key.field)


def encode_cursor(sort: str, row: ActionRequest) -> str:
    keys = SORTS[sort][1]
    values = [_encode_value(getattr(row, k.field)) for k in keys]
    raw = json.dumps([sort, *values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(sort: str, token: str) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        keys = SORTS[sort][1]
        if not isinstance(data, list) or len(data) != len(keys) + 1 or data[0] != sort:
            raise ValueError("shape")
        return [_decode_value(k, v) for k, v in zip(keys, data[1:], strict=True)]
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadCursor("That page link is not valid for this view.") from exc


def _beyond(keys: tuple[SortKey, ...], values: list[Any], *, forward: bool) -> Q:
    """Rows strictly after (``forward``) or before the row whose sort key is ``values``.

    Written as (k1 > v1) OR (k1 = v1 AND k2 > v2) OR ..., plus a redundant
    ``k1 >= v1`` so the database can start the index scan at the cursor.
    """
    clauses = Q()
    equal = Q()
    for key, value in zip(keys, values, strict=True):
        smaller = key.descending == forward  # descending & forward, or ascending & backward -> smaller values
        clauses |= equal & Q(**{f"{key.field}__{'lt' if smaller else 'gt'}": value})
        equal &= Q(**{key.field: value})
    first, value = keys[0], values[0]
    bound = Q(**{f"{first.field}__{'lte' if first.descending == forward else 'gte'}": value})
    return bound & clauses


def _ordering(keys: tuple[SortKey, ...], *, forward: bool) -> list:
    order = []
    for key in keys:
        descending = key.descending if forward else not key.descending
        order.append(F(key.field).desc() if descending else F(key.field).asc())
    return order


# --- the queue ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FacetOption:
    value: str
    label: str
    count: int
    selected: bool

    @property
    def count_label(self) -> str:
        return f"{COUNT_CAP}+" if self.count > COUNT_CAP else str(self.count)


@dataclass(frozen=True)
class QueuePage:
    filters: QueueFilters
    rows: list[ActionRequest]
    total: int  # capped at COUNT_CAP + 1
    next_cursor: str | None = None
    prev_cursor: str | None = None
    facets: dict[str, list[FacetOption]] = field(default_factory=dict)
    error: str = ""

    @property
    def total_label(self) -> str:
        return f"{COUNT_CAP}+" if self.total > COUNT_CAP else str(self.total)

    @property
    def is_first_page(self) -> bool:
        return self.prev_cursor is None


def _base(principal) -> QuerySet:
    return selectors.actions_for(principal).annotate(risk_rank=RISK_RANK)


def queue_page(
    principal,
    filters: QueueFilters,
    *,
    after: str = "",
    before: str = "",
    page_size: int | None = None,
    with_facets: bool = True,
) -> QueuePage:
    """One page of the queue for ``principal``. Raises BadCursor for a page link that is not valid."""
    page_size = page_size or PAGE_SIZE
    agent_id = _agent_id(filters.agent)
    qs = filters.apply(_base(principal), agent_id=agent_id)
    keys = SORTS[filters.sort][1]
    forward = not before
    cursor = decode_cursor(filters.sort, before or after) if (before or after) else None

    page_qs = qs.filter(_beyond(keys, cursor, forward=forward)) if cursor else qs
    rows = list(page_qs.order_by(*_ordering(keys, forward=forward))[: page_size + 1])
    more = len(rows) > page_size
    rows = rows[:page_size]
    if not forward:
        rows.reverse()

    next_cursor = prev_cursor = None
    if rows:
        first, last = rows[0], rows[-1]
        if forward:
            has_next = more
            has_prev = cursor is not None and _exists_beyond(qs, keys, first, forward=False)
        else:
            has_prev = more
            has_next = _exists_beyond(qs, keys, last, forward=True)
        next_cursor = encode_cursor(filters.sort, last) if has_next else None
        prev_cursor = encode_cursor(filters.sort, first) if has_prev else None

    if with_facets:
        total, facets = _facet_counts(principal, filters, agent_id)
    else:
        total, facets = _count_all([qs])[0], {}
    return QueuePage(
        filters=filters, rows=rows, total=total, next_cursor=next_cursor, prev_cursor=prev_cursor, facets=facets
    )


def _exists_beyond(qs: QuerySet, keys: tuple[SortKey, ...], row: ActionRequest, *, forward: bool) -> bool:
    values = [getattr(row, k.field) for k in keys]
    return qs.filter(_beyond(keys, values, forward=forward)).exists()


def row_in_queue(principal, filters: QueueFilters, action_id) -> ActionRequest | None:
    """The action if it is one ``principal`` may see and it matches ``filters``; else None."""
    qs = filters.apply(_base(principal), agent_id=_agent_id(filters.agent))
    return qs.filter(id=action_id).first()


# --- counts ---------------------------------------------------------------------------------


def _capped(qs: QuerySet) -> QuerySet:
    """The rows to count, at most COUNT_CAP + 1 of them; only the primary key is read."""
    return qs.order_by().values("pk")[: COUNT_CAP + 1]


def _type_names(filters: QueueFilters) -> list[str]:
    names = sorted(t.name for t in registry.all_types())
    if filters.action_type and filters.action_type not in names:
        names.append(filters.action_type)
    return names


MAX_AGENT_OPTIONS = 100


def _agents(filters: QueueFilters) -> list[tuple[uuid.UUID, str]]:
    agents = list(Agent.objects.filter(is_active=True).order_by("name").values_list("id", "name")[:MAX_AGENT_OPTIONS])
    if filters.agent and all(name != filters.agent for _, name in agents):
        extra = Agent.objects.filter(name=filters.agent).values_list("id", "name").first()
        if extra:
            agents.append(extra)
    return agents


def _facet_counts(principal, filters: QueueFilters, agent_id) -> tuple[int, dict[str, list[FacetOption]]]:
    """The total, and each facet's options with how many rows each would show (the facet's own filter aside)."""
    base = selectors.actions_for(principal).select_related(None).prefetch_related(None)
    wanted: list[tuple[str, FacetOption, QuerySet]] = [
        ("total", FacetOption("", "", 0, False), filters.apply(base, agent_id=agent_id))
    ]

    others = filters.apply(base, agent_id=agent_id, without="status")
    wanted.append(("status", FacetOption(ALL, "any status", 0, filters.status == ALL), others))
    for s in STATUS_CHOICES:
        wanted.append(("status", FacetOption(s, s, 0, filters.status == s), others.filter(status=s)))

    others = filters.apply(base, agent_id=agent_id, without="risk")
    for r in Risk:
        wanted.append(("risk", FacetOption(r.value, r.value, 0, r.value in filters.risks), others.filter(risk=r.value)))

    others = filters.apply(base, agent_id=agent_id, without="action_type")
    for t in _type_names(filters):
        wanted.append(("action_type", FacetOption(t, t, 0, filters.action_type == t), others.filter(action_type=t)))

    others = filters.apply(base, agent_id=agent_id, without="agent")
    for aid, name in _agents(filters):
        wanted.append(("agent", FacetOption(name, name, 0, filters.agent == name), others.filter(agent_id=aid)))

    counts = _count_all([qs for _, _, qs in wanted])
    facets: dict[str, list[FacetOption]] = {"status": [], "risk": [], "action_type": [], "agent": []}
    total = 0
    for (facet, option, _), n in zip(wanted, counts, strict=True):
        if facet == "total":
            total = n
        else:
            facets[facet].append(replace(option, count=n))
    return total, facets


def _count_all(querysets: list[QuerySet]) -> list[int]:
    """Capped counts of many querysets in one statement: SELECT (SELECT COUNT(*) FROM (... LIMIT n)), ..."""
    parts, params = [], []
    for qs in querysets:
        try:
            sql, sub_params = _capped(qs).query.sql_with_params()
        except EmptyResultSet:
            sql, sub_params = "SELECT 1 WHERE 1 = 0", ()
        parts.append(f"(SELECT COUNT(*) FROM ({sql}) capped)")  # noqa: S608 - compiled ORM SQL; values are params
        params.extend(sub_params)
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(parts), params)
        return [int(n) for n in cursor.fetchone()]


# --- approve with edits: checked as the reviewer types ----------------------------------------


@dataclass(frozen=True)
class ParamsCheck:
    """What approving with these parameters would say about them, before anything is decided."""

    ok: bool
    changed: bool
    errors: dict[str, list[str]] = field(default_factory=dict)


MAX_PARAMS_TEXT = 256 * 1024


def check_edited_params(action: ActionRequest, raw: str) -> ParamsCheck:
    """The checks ``approve_action`` runs on edited parameters (schema, credential, the type's own checks,
    the agent's capability), without approving. Empty text means "no edits"."""
    text = (raw or "").strip()
    if not text:
        return ParamsCheck(ok=True, changed=False)
    if len(text) > MAX_PARAMS_TEXT:
        return ParamsCheck(ok=False, changed=True, errors={"params": ["The parameters are larger than 256 KiB."]})
    try:
        params = json.loads(text)
    except ValueError as exc:
        return ParamsCheck(ok=False, changed=True, errors={"params": [f"Not valid JSON: {exc}"]})
    if not isinstance(params, dict):
        return ParamsCheck(ok=False, changed=True, errors={"params": ["The parameters must be a JSON object."]})
    if params == action.effective_params:
        return ParamsCheck(ok=True, changed=False)
    action_type = registry.get(action.action_type)
    if action_type is None:
        return ParamsCheck(ok=False, changed=True, errors={"params": ["This action type is no longer installed."]})
    try:
        validate_params(action_type, params)
    except InvalidInput as exc:
        return ParamsCheck(ok=False, changed=True, errors=exc.errors or {"params": [exc.detail]})
    capability = Capability.objects.filter(agent_id=action.agent_id, action_type=action.action_type).first()
    violation = capability and constraint_violation(action.agent.name, capability, params)
    if violation:
        return ParamsCheck(ok=False, changed=True, errors={"params": [f"Outside the agent's capability: {violation}"]})
    if any(r.verdict == Review.Verdict.APPROVE for r in action.reviews.all()):
        return ParamsCheck(
            ok=False,
            changed=True,
            errors={"params": ["Others already approved these parameters; approve them as they are, or reject."]},
        )
    return ParamsCheck(ok=True, changed=True)


# --- deciding and following through ---------------------------------------------------------------

CONFIRM_RISKS = frozenset({Risk.HIGH, Risk.CRITICAL})


def needs_confirmation(action: ActionRequest) -> bool:
    """High and critical actions are approved only after a second, explicit "yes" in the web UI."""
    return action.risk in CONFIRM_RISKS


@dataclass(frozen=True)
class Step:
    label: str
    state: str  # done, current, todo, failed, stopped


def progress_steps(action: ActionRequest) -> list[Step]:
    """Where the action is on its way: proposed, decided, queued, executing, and how it ended."""
    status = action.status
    proposed = Step("Proposed", "done")
    if status in (ActionStatus.REJECTED, ActionStatus.EXPIRED, ActionStatus.CANCELLED):
        return [proposed, Step(status.capitalize(), "stopped")]
    if status == ActionStatus.PENDING:
        return [proposed, Step("Awaiting approval", "current"), Step("Queued", "todo"), Step("Executing", "todo")]
    if status == ActionStatus.APPROVED and action.finished_at is not None:
        return [proposed, Step("Approved", "done"), Step("Handed back to the agent", "done")]
    started = action.execution_started_at is not None
    steps = [proposed, Step("Approved", "done")]
    if status == ActionStatus.APPROVED:
        return [*steps, Step("Queued", "current"), Step("Executing", "todo")]
    steps.append(Step("Queued", "done"))
    if status == ActionStatus.EXECUTING:
        return [*steps, Step("Executing", "current")]
    steps.append(Step("Executed", "done" if started else "todo"))
    if status == ActionStatus.SUCCEEDED:
        return [*steps, Step("Succeeded", "done")]
    return [*steps, Step("Failed", "failed")]


def page_links(page: QueuePage) -> dict[str, str]:
    """The queue's links: each sort (keeping the filters), the neighbouring pages, the first page."""
    filters = page.filters

    def link(f: QueueFilters, **extra: str) -> str:
        query = f.querystring(**extra)
        return f"?{query}" if query else "?"

    return {
        "sort_risk": link(replace(filters, sort="risk")),
        "sort_age": link(replace(filters, sort="oldest" if filters.sort == "newest" else "newest")),
        "sort_expiry": link(replace(filters, sort="expiry")),
        "prev": link(filters, before=page.prev_cursor) if page.prev_cursor else "",
        "next": link(filters, after=page.next_cursor) if page.next_cursor else "",
        "first": link(filters),
    }
