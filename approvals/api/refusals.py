"""Access refused at the door, into the audit log (audit.chain.record_refusal, counted per minute).

An agent key on a reviewer endpoint (the API's ``IsReviewer``, HumanLayer's approver side) or on a reviewer
page (``AgentKeyOnPagesMiddleware``: pages never read the header, so the key authenticates nothing there),
and a reviewer who is not staff on a staff endpoint.
"""

from __future__ import annotations

from agents.authentication import authenticate_agent_key
from agents.models import Agent
from audit.chain import Actor, record_refusal

AGENT_ON_REVIEWER_ENDPOINT = "an agent key on a reviewer endpoint"
NOT_STAFF = "not staff"


def record_agent_on_reviewer_endpoint(request, agent: Agent | None = None) -> None:
    if agent is None:
        user = getattr(request, "user", None)
        agent = user if isinstance(user, Agent) else getattr(getattr(request, "auth", None), "agent", None)
    if agent is None:
        return
    record_refusal(
        actor=Actor.agent(agent),
        verb="access.refused",
        kind=AGENT_ON_REVIEWER_ENDPOINT,
        reason=AGENT_ON_REVIEWER_ENDPOINT,
        object_type="endpoint",
        object_id=request.path[:64],
        agent_name=agent.name,
        data={"method": request.method, "path": request.path[:200]},
    )


def record_not_staff(request, user, via: str = "api") -> None:
    record_refusal(
        actor=Actor.user(user, via),
        verb="access.refused",
        kind=NOT_STAFF,
        reason="only staff may use this endpoint",
        object_type="endpoint",
        object_id=request.path[:64],
        data={"method": request.method, "path": request.path[:200]},
    )


AGENT_PREFIXES = ("/api/", "/humanlayer/")


class AgentKeyOnPagesMiddleware:
    """Records an agent key presented to a reviewer page; the page itself answers as to anyone signed out."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if header[:10].lower() == "bearer cs_" and not request.path.startswith(AGENT_PREFIXES):
            key = authenticate_agent_key(header[7:].strip())
            if key is not None:
                record_agent_on_reviewer_endpoint(request, key.agent)
        return self.get_response(request)
