"""What an agent may propose: the action types it was granted, within their constraints.

A capability's ``constraints`` map a parameter name to the patterns its value
must match, for example::

    {"credential": ["ticket-api"], "method": ["GET", "POST"], "path": ["/tickets/*"]}
    {"channel": ["#infra-help", "#deploys"]}
    {"group": ["engineering-*"]}

Patterns are shell-style (``fnmatch``, case-sensitive; ``*`` also crosses
``/``). A constrained parameter must be present, and every value of it (each
item, when it is a list) must match one pattern. Nothing else is implied: a
capability without constraints allows any parameters the action type's schema
accepts.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from agents.models import Agent, Capability
from config.prepared import PreparedQuery, concrete_columns


def _values(value: Any) -> list[str] | None:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, (str, int, float, bool)) for item in items):
        return None  # objects are never matched by a pattern
    return [str(item) for item in items]


def constraint_violation(agent_name: str, capability: Capability, params: dict[str, Any]) -> str | None:
    for name, patterns in (capability.constraints or {}).items():
        allowed = ", ".join(patterns)
        if name not in params:
            return (
                f"agent {agent_name} may use {capability.action_type} only with {name} in [{allowed}], "
                f"and the proposal sets no {name}"
            )
        values = _values(params[name])
        bad = (
            [repr(params[name])]
            if values is None
            else [repr(v) for v in values if not any(fnmatchcase(v, p) for p in patterns)]
        )
        if bad or not values:
            got = ", ".join(bad) or "nothing"
            return f"agent {agent_name} may use {capability.action_type} only with {name} in [{allowed}], not {got}"
    return None


# Read on every proposal, fresh (a capability revoked a moment ago is gone), by a statement compiled once.
_CAPABILITY = PreparedQuery(
    lambda agent_id, action_type: Capability.objects.filter(agent_id=agent_id, action_type=action_type).values_list(
        *concrete_columns(Capability)
    )[:1],
    agent_id=Agent._meta.pk,
    action_type=Capability._meta.get_field("action_type"),
)


def capability_refusal(agent: Agent, action_type: str, params: dict[str, Any]) -> str | None:
    """Why ``agent`` may not propose this, or None when it may."""
    row = _CAPABILITY.first(agent_id=agent.pk, action_type=action_type)
    capability = Capability.from_db("default", None, row) if row is not None else None
    if capability is None:
        return f"agent {agent.name} is not granted the capability {action_type}"
    return constraint_violation(agent.name, capability, params)


def granted_types(agent: Agent) -> set[str]:
    return set(Capability.objects.filter(agent=agent).values_list("action_type", flat=True))
