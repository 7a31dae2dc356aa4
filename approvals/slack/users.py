"""Who a Slack user is in Countersign.

1. An explicit ``SlackIdentity`` (kept by staff in the admin; every change audited) wins.
2. Otherwise, when ``COUNTERSIGN_SLACK_LINK_BY_EMAIL`` is on, Slack's ``users.info``
   gives the account's email, and the one Countersign user with that email
   (case-insensitive) is the reviewer; with single sign-on, the one whose provider identity has that email
   verified (approvals.sso), so Slack decisions follow the directory's groups too. Slack bots, deleted
   accounts, accounts without an email and emails shared by several Countersign users link to
   nobody. The answer is cached (an hour when found, five minutes when not).

What the reviewer may then do is decided by the same rules as the web
(approvals.policies.separation_of_duties.review_refusal, applied by the service layer).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db import transaction

from approvals.models import OidcIdentity, SlackIdentity
from approvals.slack.client import SlackRefused, call, web_client
from audit.chain import Actor, record_event

FOUND_TTL = 3600
NOT_FOUND_TTL = 300


def _cache_key(slack_user_id: str) -> str:
    return f"slack-user:{slack_user_id}"


def reviewer_for(slack_user_id: str) -> AbstractBaseUser | None:
    """The Countersign user behind ``slack_user_id``, or None. May call Slack (users.info)."""
    identity = SlackIdentity.objects.select_related("user").filter(slack_user_id=slack_user_id).first()
    if identity is not None:
        return identity.user
    if not settings.COUNTERSIGN_SLACK_LINK_BY_EMAIL:
        return None
    User = get_user_model()
    cached = cache.get(_cache_key(slack_user_id))
    if cached is not None:
        return User.objects.filter(pk=cached).first() if cached else None
    user = _by_email(slack_user_id)
    cache.set(_cache_key(slack_user_id), user.pk if user else 0, FOUND_TTL if user else NOT_FOUND_TTL)
    return user


def _by_email(slack_user_id: str) -> AbstractBaseUser | None:
    try:
        data = call(web_client(), "users_info", user=slack_user_id)
    except SlackRefused:
        return None  # user_not_found and the like: nobody we know
    profile = data.get("user") or {}
    if profile.get("deleted") or profile.get("is_bot") or profile.get("is_app_user"):
        return None
    email = str((profile.get("profile") or {}).get("email") or "").strip()
    if not email:
        return None
    return by_verified_email(email)


def by_verified_email(email: str) -> AbstractBaseUser | None:
    """The one active reviewer behind ``email``: with single sign-on, the one whose provider identity has it verified.

    With SSO configured only the provider's word counts (OidcIdentity.email_verified): an email typed into an
    account, or one the provider gave unverified, links nobody. Without SSO, the one account with that email.
    """
    if settings.OIDC_OP_ISSUER:
        users = (
            OidcIdentity.objects.filter(
                issuer=settings.OIDC_OP_ISSUER, email__iexact=email, email_verified=True, user__is_active=True
            )
            .values_list("user", flat=True)
            .distinct()[:2]
        )
        found = list(users)
        return get_user_model().objects.filter(pk=found[0]).first() if len(found) == 1 else None
    matches = list(get_user_model().objects.filter(email__iexact=email)[:2])
    return matches[0] if len(matches) == 1 else None


def link(*, slack_user_id: str, user: AbstractBaseUser, actor: Actor, note: str = "") -> SlackIdentity:
    """Link ``slack_user_id`` to ``user`` (replacing any earlier link of that Slack user); audited."""
    with transaction.atomic():
        identity = SlackIdentity.objects.select_for_update().filter(slack_user_id=slack_user_id).first()
        before = identity.user.get_username() if identity else None
        if identity is None:
            identity = SlackIdentity(slack_user_id=slack_user_id)
        identity.user, identity.note = user, note
        identity.full_clean()
        identity.save()
        record_event(
            actor=actor,
            verb="slack.identity_linked",
            object_type="slack_identity",
            object_id=slack_user_id,
            data={"slack_user_id": slack_user_id, "user": user.get_username(), "before": before},
        )
    cache.delete(_cache_key(slack_user_id))
    return identity


def unlink(*, identity: SlackIdentity, actor: Actor) -> None:
    with transaction.atomic():
        username = identity.user.get_username()
        identity.delete()
        record_event(
            actor=actor,
            verb="slack.identity_unlinked",
            object_type="slack_identity",
            object_id=identity.slack_user_id,
            data={"slack_user_id": identity.slack_user_id, "user": username},
        )
    cache.delete(_cache_key(identity.slack_user_id))
