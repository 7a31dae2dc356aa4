"""The gateway's MCP tools as an agent sees them: ``<server>.<tool>`` with the upstream's input schema, only those
its capabilities grant (``mcp.<server>.<tool>`` patterns, agents.capabilities), from enabled upstreams' last
listing. Reads only.

A tool is listed when a capability names it, whatever that capability's argument constraints: a call outside
them is refused (and audited) when proposed; the listing shows the constraints so a model can keep within them.
Annotations are passed on as the upstream claims them (hints for the host), with ``trusted`` saying whether staff
take them at their word for this upstream (approvals/action_types/mcp_tool_call.py).
"""

from __future__ import annotations

from typing import Any

from agents.capabilities import mcp_capabilities, mcp_grants
from agents.models import Agent
from approvals.models import McpUpstream


def tools_for(agent: Agent) -> list[dict[str, Any]]:
    grants = mcp_grants(agent)
    if not grants:
        return []
    listed: list[dict[str, Any]] = []
    for upstream in McpUpstream.objects.filter(enabled=True).order_by("name"):
        for tool in upstream.tools or []:
            capabilities = mcp_capabilities(agent, upstream.name, tool["name"], among=grants)
            if not capabilities:
                continue
            listed.append(
                {
                    "name": f"{upstream.name}.{tool['name']}",
                    "server": upstream.name,
                    "tool": tool["name"],
                    "title": tool.get("title") or "",
                    "description": tool.get("description") or "",
                    "input_schema": tool["input_schema"],
                    "annotations": tool.get("annotations") or {},
                    "annotations_trusted": upstream.trust_annotations,
                    # Each granting capability's constraints on the arguments; any one of them admits a call.
                    "constraints": [c.constraints or {} for c in capabilities],
                }
            )
    return listed
