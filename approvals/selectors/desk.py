"""The reviewer's desk: the queue's filters, search, sorting, keyset pages and counts.

Everything here reads through ``selectors.actions_for``, so a reviewer only
ever counts, searches and pages through what they may see.

Pages are keyset pages (approvals.selectors.keyset: a cursor holds the sort key of the edge
row shown, primary key last, tagged with the sort), so page 20 costs what page 1 costs and rows inserted
meanwhile never shift a page. Counts are capped (``COUNT_CAP``): each is a
``COUNT`` over a ``LIMIT``-ed subquery. A page load is at most: the total, the
rows (sorted from the matches alone when they are few), one GROUP BY over
those few for the facets not in use, and one statement of capped counts for
the others. Counting and reading are time-limited on PostgreSQL, so no filter
combination can hold a connection for long. bench/queue_bench.py measures it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import OperationalError, connection, transaction
from django.db.models import Count, Q, QuerySet, Value

from agents.models import Agent
from approvals.models import ActionRequest, ActionStatus, Review
from approvals.models.action import RISK_RANK
from approvals.policies.separation_of_duties import counted_approvals
from approvals.presentation.progress import status_label
from approvals.selectors import actions as selectors
from approvals.selectors import keyset
from approvals.validation import unstorable_text
from catalog import registry
from catalog.risk import RISK_ORDER, Risk

PAGE_SIZE = 50
COUNT_CAP = 999
MAX_QUERY = 200
# Few matches (at most COUNT_CAP) are sorted from a list of them; the list is longer than that, so a burst
# of new rows between counting and reading cannot cut it short.
FILTER_FIRST_LIMIT = 5 * (COUNT_CAP + 1)
COUNT_TIMEOUT_MS = int(getattr(settings, "COUNTERSIGN_DESK_COUNT_TIMEOUT_MS", 500))
QUERY_TIMEOUT_MS = int(getattr(settings, "COUNTERSIGN_DESK_QUERY_TIMEOUT_MS", 5000))

log = logging.getLogger(__name__)

STATUS_CHOICES = [s.value for s in ActionStatus]
ALL = "all"
_CREATED, _EXPIRES, _ID = (
    keyset.Key("created_at", kind=datetime),
    keyset.Key("expires_at", kind=datetime),
    keyset.Key("id", kind=uuid.UUID),
)
# name -> (label, keys). The last key is the primary key, so every sort is total.
SORTS: dict[str, tuple[str, keyset.Ordering]] = {
    "newest": ("Newest first", (replace(_CREATED, descending=True), replace(_ID, descending=True))),
    "oldest": ("Oldest first", (_CREATED, _ID)),
    "risk": ("Highest risk first", (keyset.Key("risk_rank", descending=True, kind=int), _CREATED, _ID)),
    "expiry": ("Expiring soonest", (_EXPIRES, _ID)),
}
# What is about to expire first: a proposal nobody decides in time is refused by default (issue 20).
DEFAULT_SORT = "expiry"
BadCursor = keyset.BadCursor  # a page link that is not ours, or was made for another sort


class TooSlow(Exception):
    """The page's rows could not be read within QUERY_TIMEOUT_MS."""


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
    mine: bool = False  # "assigned to me": the actions this reviewer claimed (approvals.services.claims)

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
            agent=_text(query, "agent").strip()[:64],
            action_type=_text(query, "action_type").strip()[:100],
            on_behalf_of=_text(query, "on_behalf_of").strip()[:254],
            q=" ".join(_text(query, "q").split())[:MAX_QUERY],
            sort=sort if sort in SORTS else DEFAULT_SORT,
            mine=str(query.get("mine") or "") == "1",
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
        if self.mine:
            items.append(("mine", "1"))
        return items

    def querystring(self, **extra: str) -> str:
        return urlencode(self.query_items() + [(k, v) for k, v in extra.items() if v])

    @property
    def is_default(self) -> bool:
        return not self.query_items()

    @property
    def pending_only(self) -> bool:
        return self.status == ActionStatus.PENDING

    def risk_condition(self, risks) -> Q:
        """Within one status, by rank (the index on status and rank: action_desk_risk); across statuses,
        by name (the index on risk and reviewer group: action_risk_group)."""
        if self.status == ALL:
            return Q(risk__in=list(risks))
        return Q(risk_rank__in=sorted(RISK_ORDER[Risk(r)] for r in risks))

    def apply(
        self, qs: QuerySet, *, agent_id: uuid.UUID | None, without: str = "", claimer_id: int | None = None
    ) -> QuerySet:
        """``qs`` narrowed by every filter but ``without`` (a facet counts with its own filter left out).

        ``claimer_id``: whose claims "assigned to me" means (the reviewer reading the page)."""
        if self.mine:
            qs = qs.filter(claimed_by_id=claimer_id) if claimer_id else qs.none()
        if without != "status" and self.status != ALL:
            qs = qs.filter(status=self.status)
        if without != "risk" and self.risks:
            qs = qs.filter(self.risk_condition(self.risks))
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


def _text(query: Mapping[str, Any], name: str) -> str:
    """A free-text filter; one the database cannot hold (a NUL, a lone surrogate) is dropped like an unknown value."""
    value = str(query.get(name) or "")
    return "" if unstorable_text(value) else value


def _agent_id(name: str) -> uuid.UUID | None:
    if not name:
        return None
    return Agent.objects.filter(name=name).values_list("id", flat=True).first()


# --- cursors (approvals.selectors.keyset: a cursor is tagged with its sort) -----------------------------------


def encode_cursor(sort: str, row: ActionRequest) -> str:
    return keyset.encode_cursor(sort, SORTS[sort][1], row)


def decode_cursor(sort: str, token: str) -> list[Any]:
    return keyset.decode_cursor(sort, SORTS[sort][1], token)


# --- the queue ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FacetOption:
    value: str
    label: str
    count: int | None  # None: not counted in time
    selected: bool

    @property
    def count_label(self) -> str:
        """ "3", "999+", or "" when it was not counted in time."""
        return "" if self.count is None else _count_label(self.count)


def _count_label(n: int | None) -> str:
    if n is None:
        return "many"
    return f"{COUNT_CAP}+" if n > COUNT_CAP else str(n)


@dataclass(frozen=True)
class QueuePage:
    filters: QueueFilters
    rows: list[ActionRequest]
    total: int | None  # capped at COUNT_CAP + 1; None: not counted in time
    next_cursor: str | None = None
    prev_cursor: str | None = None
    facets: dict[str, list[FacetOption]] = field(default_factory=dict)

    @property
    def total_label(self) -> str:
        return _count_label(self.total)


# What a queue row shows (templates/approvals/_queue_rows.html) and what its sort keys need: nothing else is
# read, so a page decodes none of the JSON columns (parameters, context, result) it does not show.
ROW_FIELDS = (
    "id",
    "agent__name",
    "action_type",
    "summary",
    "on_behalf_of",
    "on_behalf_of_user",  # the id only: the row says resolved or not
    "status",
    "risk",
    "required_approvals",
    "reviewer_group",
    "created_at",
    "expires_at",
    "claimed_by",  # the soft lock (approvals.services.claims); the name is read with the row (select_related below)
    "claimed_by__username",
)


def row_actions(principal) -> QuerySet:
    """The actions ``principal`` may see, read as the queue's rows (their agent's name, no reviews)."""
    return (
        selectors.actions_for(principal)
        .select_related(None)
        .prefetch_related(None)
        .select_related("agent", "claimed_by")
        .only(*ROW_FIELDS)
    )


def approval_counts(action_ids) -> dict[uuid.UUID, int]:
    """How many approvals each of these actions has (absent: none), in one statement."""
    if not action_ids:
        return {}
    counted = (
        Review.objects.filter(action_id__in=list(action_ids))
        .filter(counted_approvals())
        .order_by()
        .values_list("action_id")
        .annotate(n=Count("id"))
    )
    return dict(counted)


def _base(principal) -> QuerySet:
    return row_actions(principal).annotate(risk_rank=RISK_RANK)


def _for_counting(principal) -> QuerySet:
    return selectors.actions_for(principal).select_related(None).prefetch_related(None).alias(risk_rank=RISK_RANK)


def queue_page(
    principal,
    filters: QueueFilters,
    *,
    after: str = "",
    before: str = "",
    page_size: int | None = None,
    with_facets: bool = True,
) -> QueuePage:
    """One page of the queue for ``principal``. Raises BadCursor for a page link that is not valid.

    The (capped) total is counted first. When few rows match (at most COUNT_CAP), the page is
    sorted from those rows alone: a rare search word or an unusual mix of filters then costs a
    bitmap of matches, not a walk down the sort index hoping to meet 50 of them. When many match,
    the walk down the sort index meets them soon.
    """
    page_size = page_size or PAGE_SIZE
    agent_id = _agent_id(filters.agent)
    qs = filters.apply(_base(principal), agent_id=agent_id, claimer_id=getattr(principal, "pk", None))
    keys = SORTS[filters.sort][1]
    forward = not before
    cursor = decode_cursor(filters.sort, before or after) if (before or after) else None

    counted = _count_all([qs])
    total = counted[0] if counted else None
    candidates = None
    if total is not None and total <= COUNT_CAP:
        candidates = qs.order_by().values("pk")[:FILTER_FIRST_LIMIT]
        qs = qs.filter(pk__in=candidates)

    found = keyset.page(qs, keys, size=page_size, after=cursor, backward=not forward, read=_read_rows(total))
    rows = found.rows
    next_cursor = encode_cursor(filters.sort, rows[-1]) if found.has_next else None
    prev_cursor = encode_cursor(filters.sort, rows[0]) if found.has_prev else None

    facets = _facet_counts(principal, filters, agent_id, total, candidates) if with_facets else {}
    return QueuePage(
        filters=filters, rows=rows, total=total, next_cursor=next_cursor, prev_cursor=prev_cursor, facets=facets
    )


def _read_rows(total: int | None) -> Callable[[Callable[[], list[Any]]], list[Any]]:
    """How the page's rows are read: not at all when nothing matched, else within QUERY_TIMEOUT_MS."""

    def read(fetch: Callable[[], list[Any]]) -> list[Any]:
        if total == 0:
            return []
        rows = _within(QUERY_TIMEOUT_MS, fetch)
        if rows is None:
            raise TooSlow("This view took too long to read; narrow it with a filter (a status, an agent, a type).")
        return rows

    return read


# --- counts, and time limits ------------------------------------------------------------------


def _capped(qs: QuerySet) -> QuerySet:
    """The rows to count, at most COUNT_CAP + 1 of them; nothing but a constant is read."""
    return qs.order_by().annotate(one=Value(1)).values("one")[: COUNT_CAP + 1]


def _within(ms: int, read):
    """``read()``, or None if the database needed more than ``ms`` for it (PostgreSQL; elsewhere no limit).

    The limit is ``SET LOCAL statement_timeout`` inside a transaction (or savepoint) of its own, so a slow
    facet or search can never hold a connection for long. A transaction of its own ends the setting when it
    commits or rolls back; inside an outer transaction (a savepoint), where it would outlive the savepoint,
    it is put back as it was afterwards.
    """
    if connection.vendor != "postgresql" or ms <= 0:
        return read()
    nested = connection.in_atomic_block or not connection.get_autocommit()
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                if nested:
                    cursor.execute("SHOW statement_timeout")
                    before = cursor.fetchone()[0]
                cursor.execute(f"SET LOCAL statement_timeout = {int(ms)}")
            result = read()
            if nested:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT set_config('statement_timeout', %s, true)", [before])
            return result
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) == "57014":  # query_canceled
            log.info("desk read cancelled after %s ms", ms)
            return None
        raise


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


def _facet_options(
    filters: QueueFilters, agents: list[tuple[uuid.UUID, str]]
) -> dict[str, list[tuple[FacetOption, Q]]]:
    """Each facet's options (not counted yet), with the condition each one adds."""
    return {
        "status": [(FacetOption(ALL, "any status", None, filters.status == ALL), Q())]
        + [(FacetOption(s, status_label(s), None, filters.status == s), Q(status=s)) for s in STATUS_CHOICES],
        "risk": [
            (FacetOption(r.value, r.value, None, r.value in filters.risks), filters.risk_condition([r.value]))
            for r in Risk
        ],
        "action_type": [
            (FacetOption(t, t, None, filters.action_type == t), Q(action_type=t)) for t in _type_names(filters)
        ],
        "agent": [(FacetOption(name, name, None, filters.agent == name), Q(agent_id=aid)) for aid, name in agents],
    }


def uncounted_page(filters: QueueFilters) -> QueuePage:
    """The queue's frame with no rows and no numbers (when reading it took too long)."""
    options = _facet_options(filters, _agents(filters))
    return QueuePage(
        filters=filters, rows=[], total=None, facets={f: [o for o, _ in items] for f, items in options.items()}
    )


def _facet_counts(
    principal, filters: QueueFilters, agent_id, total: int | None, candidates: QuerySet | None
) -> dict[str, list[FacetOption]]:
    """Each facet's options with how many rows each would show (the facet's own filter left out).

    A facet whose filter is not in use counts within the rows shown; when those are few (the
    usual pending queue), one GROUP BY over them answers every such facet exactly. Otherwise each
    option is a capped count (``COUNT_CAP``), all in one statement, except during a text search
    (each would search the whole history again). Counting is time-limited (``COUNT_TIMEOUT_MS``):
    past it the options are shown without numbers rather than late.
    """
    base = _for_counting(principal)
    agents = _agents(filters)
    agent_keys = {name: str(aid) for aid, name in agents}  # grouped rows carry the agent's id
    active = {
        "status": filters.status != ALL,
        "risk": bool(filters.risks),
        "action_type": bool(filters.action_type),
        "agent": bool(filters.agent),
    }
    options = _facet_options(filters, agents)
    grouped = None
    if candidates is not None and not all(active.values()):
        shown = base.filter(pk__in=candidates).order_by()
        grouped = _within(
            COUNT_TIMEOUT_MS,
            lambda: list(shown.values("status", "risk", "action_type", "agent_id").annotate(n=Count("pk"))),
        )
    queries, slots = [], []
    counts: dict[str, list[int | None]] = {}
    for facet, items in options.items():
        if grouped is not None and not active[facet]:
            column = "agent_id" if facet == "agent" else facet
            by_value: dict[str, int] = {}
            for row in grouped:
                by_value[str(row[column])] = by_value.get(str(row[column]), 0) + row["n"]
            keys = agent_keys if facet == "agent" else {}
            counts[facet] = [
                total if option.value == ALL else by_value.get(keys.get(option.value, option.value), 0)
                for option, _ in items
            ]
            continue
        counts[facet] = [None] * len(items)
        if filters.q:
            # Each option would repeat the text search over the whole history: while searching, a facet
            # in use shows its options without numbers (the rows shown are counted above).
            continue
        others = filters.apply(base, agent_id=agent_id, without=facet, claimer_id=getattr(principal, "pk", None))
        for i, (_, condition) in enumerate(items):
            queries.append(others.filter(condition))
            slots.append((facet, i))
    if queries:
        found = _count_all(queries)
        for (facet, i), n in zip(slots, found or [None] * len(slots), strict=True):
            counts[facet][i] = n
    return {
        facet: [replace(option, count=n) for (option, _), n in zip(items, counts[facet], strict=True)]
        for facet, items in options.items()
    }


def _count_all(querysets: list[QuerySet]) -> list[int] | None:
    """Capped counts of many querysets in one statement: SELECT (SELECT COUNT(*) FROM (... LIMIT n)), ...

    None when counting took longer than COUNT_TIMEOUT_MS."""
    parts, params = [], []
    for qs in querysets:
        try:
            sql, sub_params = _capped(qs).query.sql_with_params()
        except EmptyResultSet:
            sql, sub_params = "SELECT 1 WHERE 1 = 0", ()
        parts.append(f"(SELECT COUNT(*) FROM ({sql}) capped)")  # noqa: S608 - compiled ORM SQL; values are params
        params.extend(sub_params)

    def read() -> list[int]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT " + ", ".join(parts), params)
            return [int(n) for n in cursor.fetchone()]

    return _within(COUNT_TIMEOUT_MS, read)


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
