"""Credential lifecycle; the secret is write-only and never audited."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from approvals.credentials.crypto import encrypt_secret, rotate_token
from approvals.models import Credential
from approvals.models.credential import default_result_visibility
from audit.chain import Actor, record_event

# What a credential says about its use besides its scope; changed only through update_settings (audited).
SETTINGS = ("access_control", "min_risk", "allow_preview_reads", "result_visibility")


def _settings(credential: Credential) -> dict[str, Any]:
    return {field: getattr(credential, field) for field in SETTINGS}


def _audit(actor: Actor, verb: str, credential: Credential, data: dict | None = None) -> None:
    record_event(
        actor=actor,
        verb=verb,
        object_type="credential",
        object_id=str(credential.pk),
        data={
            "name": credential.name,
            "kind": credential.kind,
            "scope": credential.scope,
            **_settings(credential),
            **(data or {}),
        },
    )


def create_credential(
    *,
    name: str,
    kind: str,
    secret: str,
    scope: dict,
    actor: Actor,
    access_control: bool = False,
    min_risk: str = "",
    allow_preview_reads: bool = False,
    result_visibility: list[str] | None = None,
) -> Credential:
    """Store a credential. Preview reads are off unless asked for; results show status and body by default."""
    with transaction.atomic():
        credential = Credential(
            name=name,
            kind=kind,
            secret_encrypted=encrypt_secret(secret),
            scope=scope,
            access_control=access_control,
            min_risk=min_risk or "",
            allow_preview_reads=allow_preview_reads,
            result_visibility=list(result_visibility) if result_visibility is not None else default_result_visibility(),
        )
        credential.full_clean(exclude=["secret_encrypted"])
        credential.save()
        _audit(actor, "credential.created", credential)
    return credential


def update_settings(*, credential: Credential, actor: Actor, **changes: Any) -> Credential:
    """Change any of ``SETTINGS`` (validated, audited with the values before); unknown names are refused."""
    unknown = sorted(set(changes) - set(SETTINGS))
    if unknown:
        raise ValueError(f"not a credential setting: {', '.join(unknown)}")
    with transaction.atomic():
        credential = Credential.objects.select_for_update().get(pk=credential.pk)
        before = _settings(credential)
        for field, value in changes.items():
            setattr(credential, field, value)
        if _settings(credential) != before:
            credential.full_clean(exclude=["secret_encrypted"])
            credential.updated_at = timezone.now()
            credential.save(update_fields=[*SETTINGS, "updated_at"])
            _audit(actor, "credential.settings_changed", credential, {"before": before})
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
