"""DRF's view of agents/ratelimit.py: 429 with Retry-After for a key over its budget."""

from __future__ import annotations

from rest_framework.throttling import BaseThrottle

from agents.models import AgentKey
from agents.ratelimit import hit


class AgentKeyThrottle(BaseThrottle):
    """Every agent request counts against ``requests``; a view may add a scope (``agent_rate_scope``)."""

    def allow_request(self, request, view) -> bool:
        self._retry_after = None
        if not isinstance(request.auth, AgentKey):
            return True
        self._retry_after = hit(request.auth.public_id, *self.scopes(type(view), request.method))
        return self._retry_after is None

    @staticmethod
    def scopes(view_class: type, method: str) -> list[str]:
        """What a request with ``method`` to ``view_class`` counts against (also approvals.api.agent_proposals)."""
        extra = getattr(view_class, "agent_rate_scopes", {}).get(method)
        return ["requests", extra] if extra else ["requests"]

    def wait(self) -> float | None:
        return self._retry_after
