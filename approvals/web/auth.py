"""Reviewer log-in with throttling: a guessed password costs the guesser, not the reviewer."""

from __future__ import annotations

import time

from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import ValidationError


def _client_ip(request) -> str:
    return (request.META.get("REMOTE_ADDR") or "unknown") if request else "unknown"


def _keys(username: str, ip: str) -> dict[str, str]:
    window = int(time.time() // settings.COUNTERSIGN_LOGIN_WINDOW_SECONDS)
    return {
        "user": f"login-fail:user:{username.strip().lower()}:{window}",
        "ip": f"login-fail:ip:{ip}:{window}",
    }


class ThrottledAuthenticationForm(AuthenticationForm):
    """Refuses further attempts for a username (or from an address) after too many failures in a window."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "throttled": "Too many failed log-ins. Wait a few minutes and try again.",
    }

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        keys = _keys(username, _client_ip(self.request))
        counts = cache.get_many(keys.values())
        if (
            counts.get(keys["user"], 0) >= settings.COUNTERSIGN_LOGIN_MAX_FAILURES_PER_USER
            or counts.get(keys["ip"], 0) >= settings.COUNTERSIGN_LOGIN_MAX_FAILURES_PER_IP
        ):
            raise ValidationError(self.error_messages["throttled"], code="throttled")
        try:
            return super().clean()
        except ValidationError:
            for key in keys.values():
                cache.add(key, 0, timeout=settings.COUNTERSIGN_LOGIN_WINDOW_SECONDS * 2)
                try:
                    cache.incr(key)
                except ValueError:
                    cache.add(key, 1, timeout=settings.COUNTERSIGN_LOGIN_WINDOW_SECONDS * 2)
            raise


class ThrottledLoginView(LoginView):
    authentication_form = ThrottledAuthenticationForm
    redirect_authenticated_user = True
