"""What an action would change, computed by Countersign from the live target with its own read access.

Never the agent's claim: the action type reads the current state through the
same narrowed client it would execute with, and returns a ``Preview``
(before/after). A preview that fails is shown as unavailable, never blocks a
rejection, and never leaks the credential's secret.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from agents.capabilities import capability_refusal
from approvals.action_types.params import resolve_credential
from approvals.credentials.crypto import CredentialDecryptError, decrypt_secret
from approvals.credentials.redaction import Redactor, redactor_for
from approvals.credentials.scoped import credential_view
from audit.canonical import digest
from audit.chain import Actor, record_event
from catalog import registry
from catalog.base import ActionType, ParamsRejected, Preview

if TYPE_CHECKING:
    from approvals.models import ActionRequest

log = logging.getLogger(__name__)

# A reviewer refreshing the page must not flood the log: one preview.read event per action per window.
PREVIEW_READ_AUDIT_SECONDS = 60


def compute_preview(
    action_type: ActionType | str,
    params: dict[str, Any],
    *,
    key: str = "preview",
    action: ActionRequest | None = None,
    viewer=None,
    via: str = "preview",
) -> Preview:
    """The preview of ``params`` for ``action_type``; ``key`` is passed as the client's idempotency key.

    Reading the live target is itself an act with the credential: it happens only when the credential
    allows preview reads (else ``preview_without_reads``, no request made). Given the ``action``, the read
    must also stay inside what the execution could do (the agent's capability and the type's checks against
    the credential's scope, as they are now), and it is recorded in the action's timeline (``preview.read``)
    as done for ``viewer`` (the reviewer looking; None: Countersign itself) through ``via``.
    """

    if isinstance(action_type, str):
        found = registry.get(action_type)
        if found is None:
            return Preview(kind="unavailable", error=f"action type {action_type} is not installed")
        action_type = found
    secret = credential = client = None
    try:
        credential = resolve_credential(action_type, params)
        if action_type.preview_reads and credential is not None:
            if not credential.allow_preview_reads:
                return action_type.preview_without_reads(params, credential.name)
            refusal = _read_refusal(action_type, params, credential, action)
            if refusal:
                return Preview(kind="unavailable", error=f"No diff could be computed: {refusal}")
        secret = decrypt_secret(credential.secret_encrypted) if credential else None
        client = action_type.make_client(credential_view(credential, secret), params, idempotency_key=key)
        preview = action_type.preview(params, client)
    except CredentialDecryptError as exc:
        return Preview(kind="unavailable", error=str(exc))
    except Exception as exc:  # a preview must never break the page that shows it
        log.warning("preview of %s failed: %s", action_type.name, type(exc).__name__)
        detail = getattr(exc, "message", "") or getattr(exc, "detail", "") or type(exc).__name__
        preview = Preview(kind="unavailable", error=str(detail))
    redactor = redactor_for(credential.kind if credential else None, secret, client)
    preview = redact_preview(preview, redactor)
    # A client that does not say what it read (a project's own type) is taken to have read.
    reads = list(getattr(client, "reads", None) or []) if hasattr(client, "reads") else [f"read {action_type.name}"]
    if client is None:
        reads = []
    if action is not None and credential is not None and action_type.preview_reads and reads:
        actor = Actor.user(viewer, via) if viewer is not None else Actor.system(via)
        _record_read(action, credential.name, reads, preview, actor)
    return preview


def _read_refusal(action_type: ActionType, params: dict[str, Any], credential, action) -> str | None:
    """Why a preview read of ``params`` would go beyond what executing the action could do, or None."""

    try:
        action_type.check_params(params, credential)
    except ParamsRejected as exc:
        return f"the read would be outside the credential's scope ({exc})"
    if action is not None:
        refusal = capability_refusal(action.agent, action_type.name, params)
        if refusal:
            return f"the read would be outside the agent's capability ({refusal})"
    return None


def _record_read(action: ActionRequest, credential: str, reads: list[str], preview: Preview, actor: Actor) -> None:
    """A ``preview.read`` event in the action's timeline, at most one per action per window."""
    try:
        first = cache.add(f"preview-read:{action.id}", 1, timeout=PREVIEW_READ_AUDIT_SECONDS)
    except Exception:  # the cache is down: record every read rather than none
        first = True
    if not first:
        return
    method, _, path = reads[0].partition(" ")
    data = {
        "credential": credential,
        "method": method,
        "path": path,
        "reads": reads[:20],
        "outcome": "unavailable" if preview.kind == "unavailable" else "read",
    }
    try:
        with transaction.atomic():
            record_event(
                actor=actor,
                verb="preview.read",
                object_type="action",
                object_id=str(action.id),
                action_id=action.id,
                agent_name=action.agent.name,
                data=data,
            )
    except Exception:
        log.exception("could not record the preview read of action %s", action.id)


def redact_preview(preview: Preview, redactor: Redactor) -> Preview:
    """The preview with every form of every secret the client sent scrubbed (approvals.credentials.redaction)."""
    if not redactor:
        return preview
    preview.before = redactor.json(preview.before)
    preview.after = redactor.json(preview.after)
    preview.title = redactor.text(preview.title)
    preview.error = redactor.text(preview.error)
    preview.failure = redactor.text(preview.failure)
    # The semantic view carries what the target answered (group and member names): scrubbed like the rest.
    if preview.semantic is not None:
        preview.semantic = redactor.json(preview.semantic)
    preview.notes = [redactor.text(n) for n in preview.notes]
    return preview


def fingerprint(preview: Preview) -> str:
    """What a reviewer saw of the target's current state; compared again at approval time.

    A preview that now knows execution will fail differs from one that did not (the reviewer was not warned);
    ``will_fail`` is left out when False so fingerprints of every other preview stay what they were."""
    seen: dict[str, Any] = {"kind": preview.kind, "before": preview.before, "error": bool(preview.error)}
    if preview.will_fail:
        seen["will_fail"] = True
    return digest(seen)


def preview_as_dict(preview: Preview) -> dict[str, Any]:
    return {
        "kind": preview.kind,
        "title": preview.title,
        "before": preview.before,
        "after": preview.after,
        "notes": preview.notes,
        "error": preview.error,
        "reads_off": preview.reads_off,
        "will_fail": preview.will_fail,
        "failure": preview.failure,
        "semantic": preview.semantic,
        "fingerprint": fingerprint(preview),
    }


def preview_from_dict(data: dict[str, Any]) -> Preview:
    """A stored preview (``preview_as_dict``, e.g. a review's evidence) back as a Preview, to draw it again."""
    return Preview(
        kind=str(data.get("kind") or "none"),
        title=str(data.get("title") or ""),
        before=data.get("before"),
        after=data.get("after"),
        notes=[str(n) for n in data.get("notes") or []],
        error=str(data.get("error") or ""),
        reads_off=bool(data.get("reads_off")),
        will_fail=bool(data.get("will_fail")),
        failure=str(data.get("failure") or ""),
        semantic=data.get("semantic") if isinstance(data.get("semantic"), dict) else None,
    )


def describe_params(action_type: ActionType | str, params: dict[str, Any]) -> str:
    """What ``params`` will do, in the type's plain words; the type's name when it is not installed."""
    found = registry.get(action_type) if isinstance(action_type, str) else action_type
    if found is None:
        return f"{action_type} (this action type is not installed)"
    try:
        return found.describe(params)
    except Exception:  # a project's own type must not break the page that shows it
        log.warning("describe of %s failed", found.name)
        return found.title


def decision_evidence(
    *,
    shown: Preview,
    describe: str,
    params: dict[str, Any],
    edits: dict[str, Any] | None = None,
    approved: Preview | None = None,
    fingerprint_checked: bool = False,
) -> dict[str, Any]:
    """What a reviewer decided on, frozen with the decision (Review.evidence; its digest goes into the audit event).

    ``shown`` is the preview of the proposal, computed at decision time: the one the page showed when the
    reviewer's fingerprint matches (``fingerprint_checked``); ``approved`` the preview of the edited params that
    run, when they differ; ``edits`` the edit as before/after params; ``params`` what the decision lets run.
    """
    evidence: dict[str, Any] = {
        "describe": describe,
        "params": params,
        "preview": preview_as_dict(shown),
        "fingerprint": fingerprint(shown),
        "fingerprint_checked": fingerprint_checked,
        "computed_at": timezone.now().isoformat(),
    }
    if edits is not None:
        evidence["edits"] = edits
    if approved is not None:
        evidence["approved_preview"] = preview_as_dict(approved)
    return evidence
