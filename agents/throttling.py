"""DRF's view of agents/ratelimit.py: 429 with Retry-After for a key over its budget."""

from __future__ import annotations

from rest_framework.throttling import BaseThrottle

from agents.models import AgentKey
from agents.ratelimit import hit


class AgentKeyThrottle(BaseThrottle):
    """Every agent request counts against ``requests``; a view may add a scope for a method (``agent_rate_scopes``)."""

    def allow_request(self, request, view) -> bool:
        self._retry_after = retry_after(request.auth, type(view), request.method)
        return self._retry_after is None

    def wait(self) -> float | None:
        return self._retry_after


def retry_after(auth, view_class: type, method: str) -> float | None:
    """Seconds until a request with ``method`` to ``view_class``, made with ``auth``, is within its budgets, or None
    (now; and always for anything but an agent key). AgentKeyThrottle's, and approvals.api.plain_writes'."""
    if not isinstance(auth, AgentKey):
        return None
    extra = getattr(view_class, "agent_rate_scopes", {}).get(method)
    return hit(auth.public_id, "requests", extra) if extra else hit(auth.public_id, "requests")
