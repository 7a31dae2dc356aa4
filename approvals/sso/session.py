"""What a reviewer's session remembers of how they signed in.

``LOGGED_IN_AT``: when this session signed in (any way), for COUNTERSIGN_SESSION_MAX_AGE_SECONDS. ``AUTH_TIME``:
when the person last authenticated, as the provider's ID token says (``auth_time``) or the password log-in
itself, for step-up (approvals.services.reviews: ``authenticated_at``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

LOGGED_IN_AT = "countersign_logged_in_at"
AUTH_TIME = "countersign_auth_time"


def authenticated_at(request) -> datetime | None:
    """When the person behind ``request`` last authenticated, or None when the session does not say."""
    value = getattr(request, "session", {}).get(AUTH_TIME)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return datetime.fromtimestamp(value, tz=UTC)


def mark_signed_in(request, *, auth_time: float | None = None) -> None:
    request.session[LOGGED_IN_AT] = time.time()
    request.session[AUTH_TIME] = time.time() if auth_time is None else auth_time


@receiver(user_logged_in, dispatch_uid="countersign-sso-session-start")
def _started(sender, request, user, **kwargs) -> None:
    # Every log-in, a password's included; the provider's callback then sets its token's auth_time.
    if request is not None and hasattr(request, "session"):
        mark_signed_in(request)
