"""``Authorization: Token <token>`` for reviewers' personal tokens, and the API's door for views outside DRF."""

from __future__ import annotations

import hmac
from datetime import timedelta
from typing import Any

from django.db.models import OuterRef
from django.http import HttpRequest
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request
from rest_framework.settings import api_settings

from approvals.models import ReviewerToken
from approvals.policies.separation_of_duties import group_ids_of, remember_group_ids
from config.prepared import PreparedInstances

LAST_USED_RESOLUTION = timedelta(seconds=30)


# Every reviewer-token request reads its token, its user and the user's groups, fresh (a revoked token or a deactivated
# user is refused, a user taken out of a group decides nothing more for it, on the next request), by a statement
# compiled once (config/prepared.py).
_ACTIVE_TOKEN = PreparedInstances(
    ReviewerToken,
    lambda prefix: ReviewerToken.objects.filter(prefix=prefix, revoked_at__isnull=True)[:1],
    related=("user",),
    extra=(group_ids_of(OuterRef("user_id")),),
    prefix=ReviewerToken._meta.get_field("prefix"),
)


def authenticate_reviewer_token(raw: str):
    """The active user owning ``raw``, or None."""
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != "csr":
        return None
    found = _ACTIVE_TOKEN.first_and_extra(prefix=parts[1])
    if found is None:
        return None
    token, (group_ids,) = found
    if not hmac.compare_digest(token.token_hash, ReviewerToken.hash(raw)) or not token.user.is_active:
        return None
    remember_group_ids(token.user, group_ids)
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ReviewerToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user, token


class ReviewerTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "token":
            return None
        found = authenticate_reviewer_token(raw.strip())
        if found is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked reviewer token.")
        return found


def authenticate_api_request(request: HttpRequest, view: Any = None) -> tuple[Any | None, float | None]:
    """(who is asking, or None; seconds to wait when over their rate, or None), for an API view DRF does not run
    (the async ``wait``): by the very classes every API view runs, REST_FRAMEWORK's authentication classes (an
    agent key, a reviewer token, a session) and throttles (the agent key's ``requests`` budget, plus any scope
    ``view.agent_rate_scopes`` names). A refused key is audited by them as anywhere else. Synchronous (it reads
    the database and the rate-limit cache): call it through ``sync_to_async``."""
    drf_request = Request(request, authenticators=[cls() for cls in api_settings.DEFAULT_AUTHENTICATION_CLASSES])
    try:
        principal = drf_request.user
    except exceptions.APIException:  # AuthenticationFailed: a key or token that is not (or no longer) good
        return None, None
    if not getattr(principal, "is_authenticated", False):
        return None, None
    for throttle in (cls() for cls in api_settings.DEFAULT_THROTTLE_CLASSES):
        if not throttle.allow_request(drf_request, view):
            return principal, throttle.wait() or 1.0
    return principal, None


class ReviewerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "approvals.api.authentication.ReviewerTokenAuthentication"
    name = "reviewerToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization", "description": "`Token <reviewer token>`"}


class AgentKeyScheme(OpenApiAuthenticationExtension):
    target_class = "agents.authentication.AgentKeyAuthentication"
    name = "agentKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An agent key, `cs_<public id>_<secret>`."}
