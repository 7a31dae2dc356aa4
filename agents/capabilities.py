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

import re
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

from django.db.models import QuerySet

from agents.models import Agent, Capability
from config.prepared import PreparedQuery, from_row


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


# Read on every proposal, fresh (a capability revoked a moment ago is gone), by a statement compiled once. Only what
# was not asked: the agent and the action type are the question's own.
GRANT_COLUMNS = ("id", "constraints")
_GRANT = PreparedQuery(
    lambda agent_id, action_type: grants(agent_id, action_type).values_list(*GRANT_COLUMNS)[:1],
    agent_id=Agent._meta.pk,
    action_type=Capability._meta.get_field("action_type"),
)


def grants(agent_id: Any, action_type: Any) -> QuerySet:
    """The agent's grant of ``action_type``: one row at most (unique per agent and type); ``agent_id`` may be an
    ``OuterRef`` (a proposal reads it inside a statement of its own: approvals.services.proposals)."""
    return Capability.objects.filter(agent_id=agent_id, action_type=action_type)


def granted(agent: Agent, action_type: str, row: Sequence[Any] | None) -> Capability | None:
    """The capability of a row read as ``GRANT_COLUMNS`` (None, or a row of None: not granted)."""
    if row is None or row[0] is None:
        return None
    return from_row(
        Capability, ("id", "agent_id", "action_type", "constraints"), (row[0], agent.pk, action_type, row[1])
    )


def capability_refusal(agent: Agent, action_type: str, params: dict[str, Any]) -> str | None:
    """Why ``agent`` may not propose this, or None when it may."""
    if action_type == MCP_TOOL_CALL:
        return mcp_refusal(agent, params)
    row = _GRANT.first(agent_id=agent.pk, action_type=action_type)
    return granted_refusal(agent, action_type, granted(agent, action_type, row), params)


def granted_refusal(
    agent: Agent, action_type: str, capability: Capability | None, params: dict[str, Any]
) -> str | None:
    """``capability_refusal`` on ``capability``, the agent's grant of ``action_type`` (None: none), read fresh by the
    caller with other things (a proposal reads it with the policy head: approvals.services.proposals). Not for
    ``mcp.tool_call``, which is granted by the tools' own capabilities."""
    if action_type == MCP_TOOL_CALL:
        raise ValueError("an MCP tool call is granted by the tools' capabilities: capability_refusal")
    if capability is None:
        return f"agent {agent.name} is not granted the capability {action_type}"
    return constraint_violation(agent.name, capability, params)


def granted_types(agent: Agent) -> set[str]:
    names = set(Capability.objects.filter(agent=agent).values_list("action_type", flat=True))
    return names | {MCP_TOOL_CALL} if any(n.startswith("mcp.") for n in names) else names


# --- the gateway's MCP tools -------------------------------------------------------------------
# An ``mcp.tool_call`` is granted by capabilities named ``mcp.<server>.<tool>``, shell-style patterns allowed
# (``mcp.git.*``), whose constraints apply to the tool's arguments: {"repo_path": ["/srv/repos/*"]}. The names are
# compared exactly as they are written (the server's name is lower-case ASCII, agents.models.MCP_CAPABILITY_RE);
# params other than server, tool and arguments (an "annotations" the agent made up) are refused here, audited.
MCP_TOOL_CALL = "mcp.tool_call"
MCP_PARAMS = ("server", "tool", "arguments")
_MCP_SERVER = re.compile(r"[a-z0-9][a-z0-9_-]{0,49}")
_MCP_TOOL = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def mcp_capabilities(agent: Agent, server: str, tool: str, among: list[Capability] | None = None) -> list[Capability]:
    """The agent's capabilities that name ``<server>.<tool>`` (checked for the exact spelling of both); ``among``:
    the agent's MCP capabilities already loaded (``mcp_grants``), to list many tools with one query."""
    if not _MCP_SERVER.fullmatch(server) or not _MCP_TOOL.fullmatch(tool):
        return []
    name = f"mcp.{server}.{tool}"
    return [c for c in (mcp_grants(agent) if among is None else among) if fnmatchcase(name, c.action_type)]


def mcp_grants(agent: Agent) -> list[Capability]:
    found = Capability.objects.filter(agent=agent, action_type__startswith="mcp.")
    return list(found.exclude(action_type=MCP_TOOL_CALL))


def mcp_refusal(agent: Agent, params: Any) -> str | None:
    extra = sorted(map(str, set(params) - set(MCP_PARAMS))) if isinstance(params, dict) else ["(not an object)"]
    if extra:
        return f"agent {agent.name} may call MCP tools only with server, tool and arguments, not {', '.join(extra)}"
    server, tool, arguments = params.get("server"), params.get("tool"), params.get("arguments", {})
    if not isinstance(server, str) or not isinstance(tool, str) or not isinstance(arguments, dict):
        return f"agent {agent.name} may call MCP tools only with a server name, a tool name and an arguments object"
    capabilities = mcp_capabilities(agent, server, tool)
    if not capabilities:
        # repr: a name spelt with a space or a look-alike letter shows as what it is.
        return f"agent {agent.name} is not granted the capability {f'mcp.{server}.{tool}'!r}"
    refusals = [constraint_violation(agent.name, capability, arguments) for capability in capabilities]
    return None if None in refusals else refusals[0]
