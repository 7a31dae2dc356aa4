"""Sessions end COUNTERSIGN_SESSION_MAX_AGE_SECONDS after their sign-in, whatever the activity.

Groups come from the provider at sign-in (approvals.sso.identities): ending the session is what makes a change
in the directory reach someone who never signs out. The end is audited (``user.session_expired``); the request
goes on signed out (pages send to the sign-in page, the API answers 401/403). 0 turns it off.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.contrib.auth import logout
from django.db import transaction

from approvals.sso import session
from approvals.web.auth_audit import _origin
from audit.chain import Actor, record_event


class SessionMaxAgeMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        max_age = settings.COUNTERSIGN_SESSION_MAX_AGE_SECONDS
        if max_age > 0 and request.session.session_key and request.user.is_authenticated:
            started = request.session.get(session.LOGGED_IN_AT)
            if not isinstance(started, (int, float)):
                request.session[session.LOGGED_IN_AT] = time.time()  # a session older than this check: starts now
            elif time.time() - started > max_age:
                user = request.user
                with transaction.atomic():
                    record_event(
                        actor=Actor.user(user, "web"),
                        verb="user.session_expired",
                        object_type="user",
                        object_id=str(user.pk),
                        data={
                            "max_age_seconds": max_age,
                            "age_seconds": int(time.time() - started),
                            **_origin(request),
                        },
                    )
                logout(request)
        return self.get_response(request)
