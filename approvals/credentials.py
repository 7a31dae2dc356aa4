"""Credential lifecycle; the secret is write-only and never audited."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from approvals.audit import Actor, record_event
from approvals.crypto import encrypt_secret, rotate_token
from approvals.models import Credential


def _audit(actor: Actor, verb: str, credential: Credential, data: dict | None = None) -> None:
    record_event(
        actor=actor,
        verb=verb,
        object_type="credential",
        object_id=str(credential.pk),
        data={"name": credential.name, "kind": credential.kind, "scope": credential.scope, **(data or {})},
    )


def create_credential(*, name: str, kind: str, secret: str, scope: dict, actor: Actor) -> Credential:
    with transaction.atomic():
        credential = Credential(name=name, kind=kind, secret_encrypted=encrypt_secret(secret), scope=scope)
        credential.full_clean(exclude=["secret_encrypted"])
        credential.save()
        _audit(actor, "credential.created", credential)
    return credential


def set_secret(*, credential: Credential, secret: str, actor: Actor) -> Credential:
    with transaction.atomic():
        credential.secret_encrypted = encrypt_secret(secret)
        credential.updated_at = timezone.now()
        credential.save(update_fields=["secret_encrypted", "updated_at"])
        _audit(actor, "credential.secret_changed", credential)
    return credential


def update_scope(*, credential: Credential, scope: dict, actor: Actor) -> Credential:
    with transaction.atomic():
        credential = Credential.objects.select_for_update().get(pk=credential.pk)
        before = credential.scope
        if before != scope:
            credential.scope = scope
            credential.full_clean(exclude=["secret_encrypted"])
            credential.updated_at = timezone.now()
            credential.save(update_fields=["scope", "updated_at"])
            _audit(actor, "credential.scope_changed", credential, {"before": before})
    return credential


def rotate_all_keys(*, actor: Actor) -> int:
    """Re-encrypt every credential with the newest key."""
    count = 0
    with transaction.atomic():
        for credential in Credential.objects.select_for_update().order_by("pk"):
            credential.secret_encrypted = rotate_token(credential.secret_encrypted)
            credential.save(update_fields=["secret_encrypted"])
            count += 1
        record_event(
            actor=actor, verb="credential.keys_rotated", object_type="credential", object_id="*", data={"count": count}
        )
    return count
