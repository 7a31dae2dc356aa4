"""Keyset pages, once: the cursor, its check, and the "beyond this row" filter.

Every paged list (the desk's queue, the history page, the audit log, the API's action list) pages by
keyset: the rows are sorted by an ordering whose last key is the primary key, so every sort is total, and
a page starts strictly beyond the edge row of the page before. Page 20 then costs what page 1 costs, and
rows inserted meanwhile never shift a page.

A cursor is opaque to its reader: ``[tag, *values]`` as compact JSON in unpadded URL-safe base64, where
``tag`` says which list (and sort, or direction) made it. ``decode_cursor`` checks all of it before
anything reaches the database, so a cursor that is not ours is ``BadCursor`` (each caller answers that
with its own 4xx or redirect), never a database error. Reads only.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import F, Q, QuerySet
from django.db.models.expressions import OrderBy

from approvals.validation import load_json

# Longer than any cursor made here (four keys), short enough that nobody's essay is decoded.
MAX_CURSOR_CHARS = 200


class BadCursor(ValueError):
    """A page link that is not ours, or was made for another list or sort."""


@dataclass(frozen=True)
class Key:
    """One sort key: the field, its direction, and the type its cursor value must have (datetime: aware)."""

    field: str
    descending: bool = False
    kind: type = int


Ordering = tuple[Key, ...]


# --- the cursor ----------------------------------------------------------------------------------


def encode_cursor(tag: str, keys: Ordering, row: Any) -> str:
    """The cursor of ``row`` (a model instance, or a dict from ``values()``) under ``keys``."""
    get = row.get if isinstance(row, dict) else lambda name: getattr(row, name)
    values = [_encode_value(get(key.field)) for key in keys]
    raw = json.dumps([tag, *values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_cursor(token: str, keys: Ordering) -> tuple[str, list[Any]]:
    """(tag, the edge row's key values) from ``token``; BadCursor unless it is one ``encode_cursor`` made for
    an ordering like ``keys``."""
    try:
        if not isinstance(token, str) or not token or len(token) > MAX_CURSOR_CHARS:
            raise ValueError("length")
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = load_json(raw)  # strict: a cursor nested 2,000 deep is a bad cursor, not a RecursionError
        if not isinstance(data, list) or len(data) != len(keys) + 1 or not isinstance(data[0], str):
            raise ValueError("shape")
        return data[0], [_decode_value(key, value) for key, value in zip(keys, data[1:], strict=True)]
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadCursor("That page link is not valid for this view.") from exc


def decode_cursor(tag: str, keys: Ordering, token: str) -> list[Any]:
    """The key values in ``token``, which ``tag`` must have made; BadCursor otherwise."""
    found, values = read_cursor(token, keys)
    if found != tag:
        raise BadCursor("That page link is not valid for this view.")
    return values


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _decode_value(key: Key, raw: Any) -> Any:
    if key.kind is datetime:
        value = datetime.fromisoformat(str(raw)) if isinstance(raw, str) else None
        if value is None or value.tzinfo is None:
            raise ValueError("an aware time")
        return value
    if key.kind is uuid.UUID:
        if not isinstance(raw, str):
            raise ValueError("a uuid")
        return uuid.UUID(raw)
    if key.kind is int:
        if not isinstance(raw, int) or isinstance(raw, bool) or abs(raw) >= 2**63:
            raise ValueError("an integer")
        return raw
    if not isinstance(raw, key.kind):
        raise ValueError(key.kind.__name__)
    return raw


# --- the query -------------------------------------------------------------------------------------


def beyond(keys: Ordering, values: Sequence[Any], *, forward: bool = True) -> Q:
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


def ordering(keys: Ordering, *, forward: bool = True) -> list[OrderBy]:
    """``order_by`` arguments for ``keys``, or for reading them backwards."""
    order = []
    for key in keys:
        descending = key.descending if forward else not key.descending
        order.append(F(key.field).desc() if descending else F(key.field).asc())
    return order


def values_of(keys: Ordering, row: Any) -> list[Any]:
    return [getattr(row, key.field) for key in keys]


def exists_beyond(qs: QuerySet, keys: Ordering, row: Any, *, forward: bool, ordered: bool = False) -> bool:
    """Is there a row of ``qs`` beyond ``row`` (a page further on, or back)?

    ``ordered``: asked as "the first such row in the ordering" rather than ``exists()``, so the planner walks
    the ordering's index from the cursor (the audit log's, where the filters are ranges on it)."""
    found = qs.filter(beyond(keys, values_of(keys, row), forward=forward))
    if not ordered:
        return found.exists()
    return found.order_by(*ordering(keys, forward=forward)).values_list("pk", flat=True).first() is not None


class Page:
    """The rows of one page in the ordering's order, and whether rows follow and precede them.

    Known from the read itself in the direction read; the other direction is asked of the database only
    when a caller wants it (the history page, which links older pages only, never does)."""

    def __init__(
        self, qs: QuerySet, keys: Ordering, rows: list[Any], *, more: bool, backward: bool, paged: bool, ordered: bool
    ):
        self.rows = rows
        self._qs, self._keys, self._ordered = qs, keys, ordered
        self._more, self._backward, self._paged = more, backward, paged

    def _exists(self, row: Any, *, forward: bool) -> bool:
        return exists_beyond(self._qs, self._keys, row, forward=forward, ordered=self._ordered)

    @functools.cached_property
    def has_next(self) -> bool:
        if not self._backward:
            return self._more
        return bool(self.rows) and self._exists(self.rows[-1], forward=True)

    @functools.cached_property
    def has_prev(self) -> bool:
        if self._backward:
            return self._more
        return self._paged and bool(self.rows) and self._exists(self.rows[0], forward=False)


def _read_now(fetch: Callable[[], list[Any]]) -> list[Any]:
    return fetch()


def page(
    qs: QuerySet,
    keys: Ordering,
    *,
    size: int,
    after: Sequence[Any] | None = None,
    backward: bool = False,
    read: Callable[[Callable[[], list[Any]]], list[Any]] = _read_now,
    ordered_exists: bool = False,
) -> Page:
    """One page of ``qs`` under ``keys``: the first ``size`` rows beyond ``after`` (None: from the start), or
    with ``backward`` the ``size`` rows just before it, still in the ordering's order.

    ``read`` runs the page's query (the desk's runs it under a time limit, and raises past it);
    ``ordered_exists``: see ``exists_beyond``."""
    forward = not backward
    page_qs = qs.filter(beyond(keys, after, forward=forward)) if after is not None else qs
    ordered = page_qs.order_by(*ordering(keys, forward=forward))[: size + 1]
    rows = read(lambda: list(ordered))
    more = len(rows) > size
    rows = rows[:size]
    if backward:
        rows.reverse()
    return Page(
        qs, keys, rows, more=more and bool(rows), backward=backward, paged=after is not None, ordered=ordered_exists
    )
