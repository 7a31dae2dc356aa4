"""Signed checkpoints of the audit chain's head.

The hash chain shows that no row was changed, removed or inserted *relative to
its neighbours*; someone able to rewrite the table could still recompute every
hash after their change, or cut the tail off. A checkpoint pins the head:
``HMAC-SHA256(key, canonical JSON of {seq, hash, at})`` with a key that lives
outside the database (``COUNTERSIGN_AUDIT_CHECKPOINT_KEY``). Beat writes one to
the log every few minutes (``approvals.audit_checkpoint``), ``manage.py
audit_checkpoint`` prints one, and ``verify_audit --from-checkpoint FILE``
checks that the chain still reaches each checkpoint's head with the same hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings

from audit.canonical import canonical_json
from audit.chain import GENESIS_HASH
from audit.models import AuditEvent

TYPE = "countersign.audit_checkpoint"
VERSION = 1

log = logging.getLogger(__name__)


class CheckpointError(Exception):
    pass


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    at: str
    key_id: str
    signature: str
    type: str = TYPE
    version: int = VERSION

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))


def key_id(key: str) -> str:
    """A short public name for a key, so a checkpoint says which key signed it (rotation)."""
    return hashlib.sha256(b"countersign-audit-checkpoint-key:" + key.encode()).hexdigest()[:12]


def _keys() -> list[str]:
    keys = [k for k in settings.COUNTERSIGN_AUDIT_CHECKPOINT_KEYS if k]
    if not keys:
        raise CheckpointError("COUNTERSIGN_AUDIT_CHECKPOINT_KEY is not set: audit checkpoints cannot be signed")
    return keys


def _signature(key: str, *, seq: int, head_hash: str, at: str) -> str:
    message = canonical_json({"type": TYPE, "version": VERSION, "seq": seq, "hash": head_hash, "at": at})
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def make_checkpoint(now: datetime | None = None) -> Checkpoint:
    """Sign the chain's current head (the newest committed event; seq 0 and the genesis hash when empty)."""
    key = _keys()[0]
    head = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
    seq, head_hash = head if head else (0, GENESIS_HASH)
    at = (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
    return Checkpoint(
        seq=seq,
        hash=head_hash,
        at=at,
        key_id=key_id(key),
        signature=_signature(key, seq=seq, head_hash=head_hash, at=at),
    )


def emit_checkpoint() -> Checkpoint:
    """Make a checkpoint and write it where the database cannot reach: the log (and the optional file)."""
    checkpoint = make_checkpoint()
    log.info("audit checkpoint at event #%s", checkpoint.seq, extra={"checkpoint": checkpoint.as_dict()})
    if settings.COUNTERSIGN_AUDIT_CHECKPOINT_FILE:
        path = Path(settings.COUNTERSIGN_AUDIT_CHECKPOINT_FILE)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(checkpoint.to_json() + "\n")
    return checkpoint


def parse_checkpoints(text: str) -> list[dict[str, Any]]:
    """Every checkpoint in ``text``: one JSON object, JSON lines, or log lines (JSON) that carry one.

    Lines that are not JSON are skipped, so a whole worker log can be given.
    """
    docs: list[Any] = []
    try:
        docs.append(json.loads(text))
    except ValueError:
        for line in text.splitlines():
            try:
                docs.append(json.loads(line))
            except ValueError:
                continue
    found = []
    for doc in docs:
        if isinstance(doc, dict) and isinstance(doc.get("checkpoint"), dict):
            doc = doc["checkpoint"]
        if isinstance(doc, dict) and doc.get("type") == TYPE:
            found.append(doc)
    return found


def signature_problem(checkpoint: dict[str, Any]) -> str | None:
    """None when the checkpoint is well formed and signed by one of our keys; otherwise what is wrong."""
    try:
        seq, head_hash, at = int(checkpoint["seq"]), str(checkpoint["hash"]), str(checkpoint["at"])
        signature, signer = str(checkpoint["signature"]), str(checkpoint.get("key_id", ""))
    except (KeyError, TypeError, ValueError):
        return "malformed (needs seq, hash, at and signature)"
    if checkpoint.get("version") != VERSION:
        return f"unknown checkpoint version {checkpoint.get('version')!r}"
    keys = [k for k in _keys() if not signer or key_id(k) == signer]
    if not keys:
        return f"signed with key {signer!r}, which this installation does not have"
    if any(hmac.compare_digest(_signature(k, seq=seq, head_hash=head_hash, at=at), signature) for k in keys):
        return None
    return "signature does not match (forged or altered checkpoint)"
