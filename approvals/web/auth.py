"""Reviewer log-in, slowed down for whoever guesses, never locked by someone else's guesses.

Failed log-ins are counted per (username, address). After the n-th failure in a row, that pair's next
attempt is not even checked for ``min(COUNTERSIGN_LOGIN_DELAY_MAX_SECONDS, BASE * 2 ** (n - 1))`` seconds
(1, 2, 4 … 60 s by default): the form answers "try again in N s" (429 with Retry-After); nothing sleeps in
the request. A successful log-in clears its pair; a pair is forgotten ``COUNTERSIGN_LOGIN_WINDOW_SECONDS``
after its last failure. So guesses at rita's password from 10.0.0.9 slow 10.0.0.9 down, and rita logs in
from her own address as usual.

Against one address spraying many usernames: past ``COUNTERSIGN_LOGIN_MAX_FAILURES_PER_IP`` failures in a
window, that address is slowed the same way for every username, and only that address.

The attempts are audited: each failure (``user.login_failed``, approvals.web.auth_audit) and each attempt
refused for its delay (``user.login_throttled``), counted per username, address and minute
(audit.chain.record_refusal) so a flood cannot fill the log. The peer address is REMOTE_ADDR: a
proxy's X-Forwarded-For is not trusted (deploy behind a proxy that sets the peer address).

The counters live in Django's cache (Redis in production). With the cache down the throttle fails open
(logged), as the agents' rate limit does: log-ins keep working.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import ValidationError

from approvals.web.auth_audit import _origin, _via
from audit.chain import Actor, record_refusal

log = logging.getLogger(__name__)

THROTTLED = "throttled"


def client_address(request) -> str:
    return str(request.META.get("REMOTE_ADDR") or "unknown") if request is not None else "unknown"


def _pair_key(username: str, address: str) -> str:
    # Hashed: the username is whatever was typed, and cache keys should not carry arbitrary text.
    name = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return f"login-throttle:pair:{name}:{address}"


def _address_key(address: str) -> str:
    window = int(time.time() // settings.COUNTERSIGN_LOGIN_WINDOW_SECONDS)
    return f"login-throttle:addr:{address}:{window}"


def delay_after(failures: int) -> float:
    """Seconds to wait after ``failures`` failures in a row: exponential from the base, capped."""
    if failures <= 0:
        return 0.0
    base = settings.COUNTERSIGN_LOGIN_DELAY_BASE_SECONDS
    return float(min(settings.COUNTERSIGN_LOGIN_DELAY_MAX_SECONDS, base * 2 ** min(failures - 1, 30)))


def seconds_to_wait(username: str, address: str, *, now: float | None = None) -> int:
    """How long this (username, address) must wait before its next attempt is checked; 0 when it need not."""
    now = time.time() if now is None else now
    try:
        found = cache.get_many([_pair_key(username, address) + ":until", _address_key(address) + ":until"])
    except Exception:
        log.warning("log-in throttle: cache unavailable; not throttling", exc_info=True)
        return 0
    until = max(found.values(), default=0)
    return max(0, math.ceil(until - now))


def _bump(key: str, timeout: int) -> int:
    cache.add(key, 0, timeout=timeout)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=timeout)
        return 1


def record_failure(username: str, address: str, *, now: float | None = None) -> int:
    """Count a failed log-in; returns the seconds the pair (or address) must now wait."""
    now = time.time() if now is None else now
    window = settings.COUNTERSIGN_LOGIN_WINDOW_SECONDS
    try:
        pair = _pair_key(username, address)
        wait = delay_after(_bump(pair, window))
        cache.set(pair + ":until", now + wait, timeout=window)
        address_key = _address_key(address)
        excess = _bump(address_key, window * 2) - settings.COUNTERSIGN_LOGIN_MAX_FAILURES_PER_IP
        if excess > 0:
            address_wait = delay_after(excess)
            cache.set(address_key + ":until", now + address_wait, timeout=window * 2)
            wait = max(wait, address_wait)
    except Exception:
        log.warning("log-in throttle: cache unavailable; failure not counted", exc_info=True)
        return 0
    return math.ceil(wait)


def reset(username: str, address: str) -> None:
    """Forget the failures of this (username, address): after a success, or for a test."""
    pair = _pair_key(username, address)
    try:
        cache.delete_many([pair, pair + ":until"])
    except Exception:
        log.warning("log-in throttle: cache unavailable; could not clear", exc_info=True)


def _record_throttled(request, username: str, address: str, wait: int) -> None:
    username = username[:150]
    record_refusal(
        actor=Actor("anonymous", "anonymous", _via(request)),
        verb="user.login_throttled",
        kind=f"{username}@{address}",
        reason="too many failed log-ins from this address; not checked",
        object_type="user",
        object_id=username[:64],
        data={"username": username, "retry_after": wait, **_origin(request)},
    )


class ThrottledFormMixin:
    """For an AuthenticationForm: refuse an attempt inside its delay; count failures; clear on success."""

    def clean(self):
        username = str(self.cleaned_data.get("username") or "")
        address = client_address(self.request)
        wait = seconds_to_wait(username, address)
        if wait:
            self.retry_after = wait
            _record_throttled(self.request, username, address, wait)
            raise ValidationError(
                "Too many failed log-ins for this username from your address. Try again in %(wait)s s.",
                code=THROTTLED,
                params={"wait": wait},
            )
        try:
            cleaned = super().clean()
        except ValidationError:
            if username:
                record_failure(username, address)
            raise
        reset(username, address)
        return cleaned


class ThrottledAuthenticationForm(ThrottledFormMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(ThrottledFormMixin, AdminAuthenticationForm):
    pass


class ThrottledLoginView(LoginView):
    authentication_form = ThrottledAuthenticationForm
    redirect_authenticated_user = True

    def form_invalid(self, form):
        response = super().form_invalid(form)
        wait = getattr(form, "retry_after", None)
        if wait:
            response.status_code = 429
            response["Retry-After"] = str(wait)
        return response
