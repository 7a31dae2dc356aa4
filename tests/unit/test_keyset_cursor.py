"""The keyset pager's cursor on its own (approvals/selectors/keyset.py): it round-trips, and anything else is
refused (the lists that page with it: tests/web/test_keyset.py)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest

from approvals.selectors import keyset

KEYS = (keyset.Key("created_at", descending=True, kind=datetime), keyset.Key("id", descending=True, kind=uuid.UUID))


def test_a_cursor_round_trips_and_anything_else_is_refused():
    row = {"created_at": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "id": uuid.uuid4()}
    token = keyset.encode_cursor("history", KEYS, row)
    assert re.fullmatch(r"[\w-]+", token)
    assert keyset.decode_cursor("history", KEYS, token) == [row["created_at"], row["id"]]
    assert keyset.read_cursor(token, KEYS) == ("history", [row["created_at"], row["id"]])
    refused = [
        keyset.encode_cursor("queue", KEYS, row),  # another list's
        keyset.encode_cursor("history", KEYS, {**row, "created_at": datetime(2026, 1, 2)}),  # naive time
        keyset.encode_cursor("history", KEYS, {**row, "id": "not-a-uuid"}),
        keyset.encode_cursor("history", KEYS[:1], row),  # too few values
        keyset.encode_cursor("history", (keyset.Key("n"), keyset.Key("id", kind=uuid.UUID)), {**row, "n": True}),
        "",
        "x" * (keyset.MAX_CURSOR_CHARS + 1),
        "%%%not-base64",
        "W" * 40,
        "2026-01-01T00:00:00+00:00|" + str(uuid.uuid4()),  # the history page's old format
    ]
    for bad in refused:
        with pytest.raises(keyset.BadCursor):
            keyset.decode_cursor("history", KEYS, bad)
