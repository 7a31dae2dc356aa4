"""Template context every reviewer page gets."""

from __future__ import annotations

from django.utils.functional import SimpleLazyObject

from approvals.live.events import newest_push_seq
from approvals.services.containment import banner


def containment(request) -> dict:
    """The kill switches in force (paused executions, frozen agents), for the banner in base.html.

    Lazy and cached (approvals.services.containment.banner): one cache read per page, only for signed-in users.
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}

    return {"containment": SimpleLazyObject(banner)}


def live(request) -> dict:
    """Where a signed-in page's socket catches up from (``live_seq``: approvals.live.events.newest_push_seq).

    Lazy: read once, when base.html draws it, and only for signed-in users, whose pages open a socket.
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"live_seq": SimpleLazyObject(newest_push_seq)}
