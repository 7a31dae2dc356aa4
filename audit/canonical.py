"""Canonical JSON and digests: one encoding for everything that is hashed."""

from __future__ import annotations

import hashlib
import json
from typing import Any

# json.dumps with these options would build this same encoder on every call; everything hashed goes through
# here (every audit event, when written and again when verified), so it is built once.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(value: Any) -> str:
    return _ENCODER.encode(value)


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()
