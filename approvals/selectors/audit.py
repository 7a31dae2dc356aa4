"""Reading the audit log: filters and keyset pagination, shared by the staff page and ``export_audit``.

Every query is a range on ``seq`` plus equality filters that have a ``(field,
seq)`` index (actor, verb, agent; action_id has its own), so a page costs the
same on the millionth event as on the first: no OFFSET, no COUNT. A time range
is turned into a seq range through the ``at`` index first; ``record_event``
keeps ``at`` non-decreasing along the chain, so the two ranges agree.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from approvals.selectors import keyset
from audit.models import AuditEvent

PAGE_SIZE = 50
# The cursor is the edge event's seq itself (the primary key, and the chain's order): the page's links show it.
NEWEST_FIRST = (keyset.Key("seq", descending=True, kind=int),)


@dataclass(frozen=True)
class AuditFilter:
    actor: str = ""
    agent: str = ""
    verb: str = ""  # exact, or a prefix when it ends with "*" ("user.*")
    action_id: uuid.UUID | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    after_seq: int = 0  # only events after this one (export --since)


@dataclass(frozen=True)
class AuditPage:
    events: list[AuditEvent]
    older: int | None  # pass as ?before= for the next older page
    newer: int | None  # pass as ?after= for the next newer page


def filtered(f: AuditFilter) -> QuerySet[AuditEvent]:
    qs = AuditEvent.objects.all()
    if f.actor:
        qs = qs.filter(actor=f.actor)
    if f.agent:
        qs = qs.filter(agent_name=f.agent)
    if f.verb:
        qs = qs.filter(verb__startswith=f.verb[:-1]) if f.verb.endswith("*") else qs.filter(verb=f.verb)
    if f.action_id:
        qs = qs.filter(action_id=f.action_id)
    if f.after_seq:
        qs = qs.filter(seq__gt=f.after_seq)
    if f.since or f.until:
        bounds = _seq_bounds(f.since, f.until)
        if bounds is None:
            return qs.none()
        low, high = bounds
        if low is not None:
            qs = qs.filter(seq__gte=low, at__gte=f.since)
        if high is not None:
            qs = qs.filter(seq__lte=high, at__lt=f.until)
    return qs


def _seq_bounds(since: datetime | None, until: datetime | None) -> tuple[int | None, int | None] | None:
    """(first seq at or after ``since``, last seq before ``until``), or None when nothing is in range."""
    low = high = None
    if since is not None:
        low = AuditEvent.objects.filter(at__gte=since).order_by("at", "seq").values_list("seq", flat=True).first()
        if low is None:
            return None
    if until is not None:
        high = AuditEvent.objects.filter(at__lt=until).order_by("-at", "-seq").values_list("seq", flat=True).first()
        if high is None:
            return None
    if low is not None and high is not None and low > high:
        return None
    return low, high


def audit_page(
    f: AuditFilter, *, before: int | None = None, after: int | None = None, size: int = PAGE_SIZE
) -> AuditPage:
    """One page, newest first. ``before``/``after`` are seq cursors from a previous page's links: the page
    starts just beyond that event (approvals.selectors.keyset, on the one key ``seq``)."""
    qs = filtered(f)
    if after is not None:
        page = keyset.page(qs, NEWEST_FIRST, size=size, after=[after], backward=True, ordered_exists=True)
    else:
        cursor = [before] if before is not None else None
        page = keyset.page(qs, NEWEST_FIRST, size=size, after=cursor, ordered_exists=True)
    events = page.rows
    if not events:
        # Past either end: offer the way back.
        more_older = after is not None and _any(qs.filter(seq__lte=after).order_by("-seq"))
        return AuditPage(events=[], older=after + 1 if more_older else None, newer=None)
    return AuditPage(
        events=events,
        older=events[-1].seq if page.has_next else None,
        newer=events[0].seq if page.has_prev else None,
    )


def _any(qs: QuerySet[AuditEvent]) -> bool:
    """exists(), but ordered by seq: the planner walks an index from the cursor instead of scanning the table."""
    return qs.values_list("seq", flat=True).first() is not None


def iter_filtered(f: AuditFilter, batch: int = 5000) -> Iterator[AuditEvent]:
    """Every matching event in chain order, read in keyset batches."""
    qs, last = filtered(f), 0
    while True:
        rows = list(qs.filter(seq__gt=last).order_by("seq")[:batch])
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
