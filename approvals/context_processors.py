"""Template context every reviewer page gets."""

from __future__ import annotations

from django.utils.functional import SimpleLazyObject


def containment(request) -> dict:
    """The kill switches in force (paused executions, frozen agents), for the banner in base.html.

    Lazy and cached (approvals.services.containment.banner): one cache read per page, only for signed-in users.
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    from approvals.services.containment import banner

    return {"containment": SimpleLazyObject(banner)}
