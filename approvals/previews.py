"""What an action would change, computed by Countersign from the live target with its own read access.

Never the agent's claim: the action type reads the current state through the
same narrowed client it would execute with, and returns a ``Preview``
(before/after). A preview that fails is shown as unavailable, never blocks a
rejection, and never leaks the credential's secret.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from approvals.action_types import registry
from approvals.action_types.base import ActionType, Preview
from approvals.canonical import canonical_json, digest
from approvals.crypto import CredentialDecryptError, decrypt_secret

log = logging.getLogger(__name__)


def compute_preview(action_type: ActionType | str, params: dict[str, Any], *, key: str = "preview") -> Preview:
    """The preview of ``params`` for ``action_type``; ``key`` is passed as the client's idempotency key."""
    from approvals.services.execution import credential_view
    from approvals.services.proposals import resolve_credential

    if isinstance(action_type, str):
        found = registry.get(action_type)
        if found is None:
            return Preview(kind="unavailable", error=f"action type {action_type} is not installed")
        action_type = found
    secret = None
    try:
        credential = resolve_credential(action_type, params)
        secret = decrypt_secret(credential.secret_encrypted) if credential else None
        client = action_type.make_client(credential_view(credential, secret), params, idempotency_key=key)
        preview = action_type.preview(params, client)
    except CredentialDecryptError as exc:
        return Preview(kind="unavailable", error=str(exc))
    except Exception as exc:  # a preview must never break the page that shows it
        log.warning("preview of %s failed: %s", action_type.name, type(exc).__name__)
        detail = getattr(exc, "message", "") or getattr(exc, "detail", "") or type(exc).__name__
        return Preview(kind="unavailable", error=_redact(str(detail), secret))
    return _redact_preview(preview, secret)


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "[redacted]") if secret else text


def _redact_preview(preview: Preview, secret: str | None) -> Preview:
    if not secret:
        return preview
    encoded = json.dumps(secret)[1:-1]
    for field in ("before", "after"):
        value = getattr(preview, field)
        if value is not None and encoded in canonical_json(value):
            setattr(preview, field, json.loads(canonical_json(value).replace(encoded, "[redacted]")))
    preview.title = _redact(preview.title, secret)
    preview.error = _redact(preview.error, secret)
    preview.notes = [_redact(n, secret) for n in preview.notes]
    return preview


def fingerprint(preview: Preview) -> str:
    """What a reviewer saw of the target's current state; compared again at approval time."""
    return digest({"kind": preview.kind, "before": preview.before, "error": bool(preview.error)})


def preview_as_dict(preview: Preview) -> dict[str, Any]:
    return {
        "kind": preview.kind,
        "title": preview.title,
        "before": preview.before,
        "after": preview.after,
        "notes": preview.notes,
        "error": preview.error,
        "fingerprint": fingerprint(preview),
    }
