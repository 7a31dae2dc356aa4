"""Reviewer log-ins, failed log-ins and log-outs, in the audit log.

Django's auth signals feed ``record_event`` in a transaction of their own.
Fail closed: if the event cannot be written the exception propagates, the
log-in answers 500 and its session is never saved (SessionMiddleware does not
save on a 5xx), so nobody is signed in without a record of it.

A failed log-in records the username that was tried and where from, never
the password: only the username field is read from the credentials. Failures
are counted per username, address and minute (``record_refusal``): the first
is an event, the rest one ``refusals.counted`` event.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.dispatch import receiver

from audit.chain import Actor, record_event, record_refusal

MAX_USER_AGENT = 200


def _via(request) -> str:
    path = getattr(request, "path", "") or ""
    return "admin" if path.startswith("/admin/") else "web"


def _origin(request) -> dict[str, str]:
    """Where the attempt came from: the peer address (proxies' X-Forwarded-For is not trusted) and client."""
    meta = getattr(request, "META", None) or {}
    origin = {"remote_addr": str(meta.get("REMOTE_ADDR") or "")}
    if meta.get("HTTP_USER_AGENT"):
        origin["user_agent"] = str(meta["HTTP_USER_AGENT"])[:MAX_USER_AGENT]
    return origin


@receiver(user_logged_in, dispatch_uid="countersign-audit-logged-in")
def audit_logged_in(sender, request, user, **kwargs) -> None:
    with transaction.atomic():
        record_event(
            actor=Actor.user(user, _via(request)),
            verb="user.logged_in",
            object_type="user",
            object_id=str(user.pk),
            data=_origin(request),
        )


@receiver(user_logged_out, dispatch_uid="countersign-audit-logged-out")
def audit_logged_out(sender, request, user, **kwargs) -> None:
    if user is None:  # "log out" without a session: nothing happened
        return
    with transaction.atomic():
        record_event(
            actor=Actor.user(user, _via(request)),
            verb="user.logged_out",
            object_type="user",
            object_id=str(user.pk),
            data=_origin(request),
        )


@receiver(user_login_failed, dispatch_uid="countersign-audit-login-failed")
def audit_login_failed(sender, credentials, request=None, **kwargs) -> None:
    username_field = get_user_model().USERNAME_FIELD
    attempted = str(credentials.get(username_field) or credentials.get("username") or "")[:150]
    origin = _origin(request)
    # Counted per username, address and minute: someone guessing cannot fill the log (record_refusal).
    record_refusal(
        # Nobody is authenticated: the actor is unknown; the account tried is the object.
        actor=Actor("anonymous", "anonymous", _via(request)),
        verb="user.login_failed",
        kind=f"{attempted}@{origin['remote_addr']}",
        reason="wrong username or password",
        object_type="user",
        object_id=attempted[:64],
        data={"username": attempted, **origin},
    )
