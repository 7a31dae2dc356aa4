"""A sign-in through the provider: whose it is, and what the directory now says they may do.

The reviewer is found by the provider's subject under its issuer (``OidcIdentity``), never by a name or an
email the provider does not verify. A first sign-in links to an existing account only through an email the
provider marks verified (``email_verified``), held by exactly one account that is not a superuser and has no
identity at this issuer yet; otherwise a new account is made, under a username nobody holds (in any case). An
account linked to a subject stays that subject's: the same email at another subject gets an account of its own.

Groups follow the provider at every sign-in (COUNTERSIGN_OIDC_GROUP_MAP): the reviewer groups the map names are
joined or left to match the provider's groups (groups the map does not name stay as staff set them), and staff
follows "staff" when the map uses it. The changes go through approvals.services.accounts (``user.updated`` with
joined / left / staff); the sign-in itself is ``user.sso_signed_in`` and a first link ``user.sso_linked``; a
refusal is ``user.sso_refused`` (audit.chain.record_refusal), all with ``via`` "sso".
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from approvals.models import OidcIdentity
from approvals.services.accounts import save_person
from approvals.sso import provider
from audit.chain import Actor, record_event, record_refusal

VIA = "sso"
DIRECTORY = Actor("system", "directory", VIA)
_USERNAME_UNSAFE = re.compile(r"[^\w.@+-]")


class SignInRefused(Exception):
    """The provider's answer does not let anyone in; ``reason`` says why (audited)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SignIn:
    """What the provider said about the person, checked (signature, issuer, audience, expiry, nonce)."""

    issuer: str
    subject: str
    email: str
    email_verified: bool
    groups: tuple[str, ...]
    auth_time: datetime
    preferred_username: str = ""

    @classmethod
    def from_claims(cls, issuer: str, claims: dict) -> SignIn:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > 255:
            raise SignInRefused("the provider's answer has no usable subject (sub)")
        auth_time = claims.get("auth_time", claims.get("iat"))
        if isinstance(auth_time, bool) or not isinstance(auth_time, (int, float)):
            raise SignInRefused("the ID token says neither when the person authenticated (auth_time) nor iat")
        email = claims.get("email")
        return cls(
            issuer=issuer,
            subject=subject,
            email=email.strip()[:254] if isinstance(email, str) else "",
            # Only a JSON true: "true" as a string, or a missing claim, is not the provider vouching for it.
            email_verified=claims.get("email_verified") is True,
            groups=provider.provider_groups(claims),
            auth_time=datetime.fromtimestamp(auth_time, tz=timezone.get_current_timezone()),
            preferred_username=str(claims.get("preferred_username") or ""),
        )


def sign_in(signed: SignIn, *, origin: dict[str, str]):
    """The reviewer ``signed`` is, their groups brought in line with the provider's; audited. Raises SignInRefused."""
    with transaction.atomic():
        identity = (
            OidcIdentity.objects.select_for_update()
            .select_related("user")
            .filter(issuer=signed.issuer, subject=signed.subject)
            .first()
        )
        if identity is None:
            identity = _link(signed)
        user = identity.user
        if not user.is_active:
            raise SignInRefused(f"{user.get_username()} is disabled in Countersign")
        groups, staff = provider.mapped(signed.groups)
        current = set(user.groups.values_list("name", flat=True))
        managed = provider.managed_groups()
        try:
            change = save_person(
                username=user.get_username(),
                actor=DIRECTORY,
                email=_email_to_keep(signed, user),
                groups=sorted(groups - current),
                remove_groups=sorted((managed - groups) & current),
                staff=staff if provider.manages_staff() else None,
            )
        except ValidationError as exc:
            raise SignInRefused(f"the provider's groups or email cannot be applied: {exc.messages[0]}") from None
        user = change.user
        identity.email, identity.email_verified = signed.email, signed.email_verified
        identity.groups = list(signed.groups)
        identity.last_login_at, identity.auth_time = timezone.now(), signed.auth_time
        identity.save()
        record_event(
            actor=Actor.user(user, VIA),
            verb="user.sso_signed_in",
            object_type="user",
            object_id=str(user.pk),
            data={
                "issuer": signed.issuer,
                "subject": signed.subject,
                "provider_groups": list(signed.groups),
                "joined": change.changes.get("joined", []),
                "left": change.changes.get("left", []),
                **({"staff": change.changes["staff"]} if "staff" in change.changes else {}),
                "auth_time": signed.auth_time.isoformat(),
                **origin,
            },
        )
    return user


def refuse(reason: str, *, origin: dict[str, str], subject: str = "") -> None:
    """Audit a refused sign-in (counted per reason, address and minute: a flood cannot fill the log)."""
    record_refusal(
        actor=Actor("anonymous", subject or "anonymous", VIA),
        verb="user.sso_refused",
        kind=f"{reason}@{origin.get('remote_addr', '')}"[:200],
        reason=reason[:500],
        object_type="user",
        object_id=subject[:64],
        data={"issuer": settings.OIDC_OP_ISSUER, **origin},
    )


def _email_to_keep(signed: SignIn, user) -> str | None:
    """The account's email follows the provider's when the provider verifies it and nobody else holds it."""
    if not signed.email_verified or not signed.email or signed.email.lower() == (user.email or "").lower():
        return None
    taken = get_user_model().objects.filter(email__iexact=signed.email).exclude(pk=user.pk).exists()
    return None if taken else signed.email


def _link(signed: SignIn) -> OidcIdentity:
    User = get_user_model()
    user = None
    if signed.email_verified and signed.email:
        matches = list(User.objects.filter(email__iexact=signed.email)[:2])
        if (
            len(matches) == 1
            and not matches[0].is_superuser
            and not OidcIdentity.objects.filter(user=matches[0], issuer=signed.issuer).exists()
        ):
            user = matches[0]
    created = user is None
    if user is None:
        email = signed.email if signed.email_verified else ""
        if email and User.objects.filter(email__iexact=email).exists():
            email = ""  # one address, one person (approvals.services.accounts): the other account keeps it
        user = User(username=_free_username(signed), email=email)
        user.set_unusable_password()  # signs in through the provider only
        try:
            user.full_clean(exclude=["password"])
        except ValidationError as exc:
            raise SignInRefused(f"no account can be made for this person: {exc.messages[0]}") from None
        user.save()
    identity = OidcIdentity.objects.create(
        user=user,
        issuer=signed.issuer,
        subject=signed.subject,
        email=signed.email,
        email_verified=signed.email_verified,
    )
    record_event(
        actor=DIRECTORY,
        verb="user.created" if created else "user.sso_linked",
        object_type="user",
        object_id=str(user.pk),
        data={
            "user": user.get_username(),
            "issuer": signed.issuer,
            "subject": signed.subject,
            "linked_by": "new account" if created else "verified email",
            **({"email": user.email} if user.email else {}),
        },
    )
    return identity


def _free_username(signed: SignIn) -> str:
    base = signed.preferred_username or signed.email.split("@")[0]
    base = _USERNAME_UNSAFE.sub("-", base).strip("-.")[:120]
    if not base:
        base = "sso-" + hashlib.sha256(f"{signed.issuer} {signed.subject}".encode()).hexdigest()[:12]
    User = get_user_model()
    candidate, n = base, 1
    # Compared in any case, as people are (approvals.policies.people): "Alice" must not become a second alice.
    while User.objects.filter(username__iexact=candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate
