"""What an agent may propose: the action types it was granted."""

from __future__ import annotations

from typing import Any

from agents.models import Agent, Capability


def capability_refusal(agent: Agent, action_type: str, params: dict[str, Any]) -> str | None:
    """Why ``agent`` may not propose this, or None when it may."""
    capability = Capability.objects.filter(agent=agent, action_type=action_type).first()
    if capability is None:
        return f"agent {agent.name} is not granted the capability {action_type}"
    return None


def granted_types(agent: Agent) -> set[str]:
    return set(Capability.objects.filter(agent=agent).values_list("action_type", flat=True))
