"""``mcp.tool_call``: one call of one tool of an MCP server registered as a gateway upstream (approvals.models.mcp).

Params: ``{"server": "git", "tool": "git_commit", "arguments": {...}}``. The server must be an enabled upstream,
the tool one it listed (the exact name: no other case, no look-alike letter), and the arguments must satisfy the
input schema the upstream gave for it (JSON Schema, checked here at proposal and on every reviewer edit).
Which agent may call which tool, with which arguments, is its capabilities' business (``mcp.<server>.<tool>``,
agents.capabilities); which calls need a person is the policy's, by ``params.server``, ``params.tool`` and
``params.arguments.*``.

Risk: medium, whatever the upstream says of its tools. Only for an upstream staff marked ``trust_annotations``
does a tool annotated ``readOnlyHint`` count as low risk and one annotated ``destructiveHint`` as high risk
(``risk_for``, read by approvals.policies.evaluation): annotations are the upstream's claims, not facts.

Reviewers see the tool, its description and the arguments (``describe``, ``preview``); Countersign cannot know
what an arbitrary tool will change, so there is no diff, and the preview never calls the upstream. The worker
executes the call (approvals.action_types.mcp_client) and the tool's answer becomes the result, scrubbed of every
form of the upstream's secrets. A call that may have reached the upstream and got no answer ends ``unknown``.
"""

from __future__ import annotations

import json
from typing import Any

from approvals.action_types.mcp_client import UpstreamConnection, UpstreamError, connect
from approvals.models.mcp import TOOL_NAME_RE, UPSTREAM_NAME_RE, McpUpstream
from approvals.validation import schema_errors
from catalog.base import ActionType, ExecutionError, ParamsRejected, Preview, shorten
from catalog.risk import Risk


def upstream_named(name: Any) -> McpUpstream | None:
    if not isinstance(name, str) or not UPSTREAM_NAME_RE.fullmatch(name):
        return None
    return McpUpstream.objects.filter(name=name, enabled=True).first()


class McpToolClient:
    """What the executor is handed: the connection to one upstream and the one tool the approval names."""

    __slots__ = ("connection", "redactor", "tool")

    def __init__(self, connection: UpstreamConnection, tool: str):
        self.connection = connection
        self.tool = tool
        self.redactor = connection.redactor  # approvals.credentials.redaction.redactor_for picks it up

    def call(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return self.connection.call_tool(self.tool, arguments)


class McpToolCall(ActionType):
    name = "mcp.tool_call"
    title = "Call an MCP tool"
    description = (
        "Call one tool of an MCP server Countersign is the gateway to: server, tool and its arguments. "
        "The tools you may call, with their input schemas, are listed at GET /api/v1/mcp/tools."
    )
    risk = Risk.MEDIUM
    preview_reads = False  # the preview shows the call; it never calls the upstream
    params_schema = {
        "type": "object",
        "properties": {
            "server": {"type": "string", "pattern": f"^{UPSTREAM_NAME_RE.pattern}$"},
            "tool": {"type": "string", "pattern": f"^{TOOL_NAME_RE.pattern}$"},
            "arguments": {"type": "object"},
        },
        "required": ["server", "tool"],
        "additionalProperties": False,
    }

    def check_params(self, params: dict[str, Any], credential) -> None:
        upstream = upstream_named(params["server"])
        if upstream is None:
            raise ParamsRejected({"server": [f"No enabled MCP upstream named {params['server']!r}."]})
        tool = upstream.tool(params["tool"])
        if tool is None:
            listed = f"The MCP upstream {upstream.name} lists no tool named {params['tool']!r} (names are exact)."
            raise ParamsRejected({"tool": [listed]})
        errors = schema_errors(tool["input_schema"], params.get("arguments", {}), "arguments")
        if errors:
            raise ParamsRejected(errors)

    def risk_for(self, params: dict[str, Any]) -> str:
        """The risk of these params: medium, unless staff trust the upstream's annotations of this tool."""
        upstream = upstream_named(params.get("server")) if isinstance(params, dict) else None
        tool = upstream.tool(params.get("tool")) if upstream is not None and upstream.trust_annotations else None
        annotations = (tool or {}).get("annotations") or {}
        if annotations.get("destructiveHint") is True:
            return Risk.HIGH
        if annotations.get("readOnlyHint") is True:
            return Risk.LOW
        return self.risk

    def make_client(self, credential, params: dict[str, Any], *, idempotency_key: str) -> McpToolClient:
        upstream = upstream_named(params["server"])
        if upstream is None:
            raise ExecutionError(f"the MCP upstream {params['server']} is gone or disabled")
        if upstream.tool(params["tool"]) is None:
            raise ExecutionError(f"the MCP upstream {upstream.name} no longer lists the tool {params['tool']}")
        return McpToolClient(connect(upstream), params["tool"])

    def execute(self, params: dict[str, Any], client: McpToolClient) -> dict[str, Any]:
        try:
            answer = client.call(params.get("arguments", {}))
        except UpstreamError as exc:
            # Sent and unanswered: the tool may have run. Never sent: it did not.
            raise ExecutionError(exc.message, permanent=not exc.sent, outcome_unknown=exc.sent) from None
        return {"server": params["server"], "tool": params["tool"], **answer}

    def describe(self, params: dict[str, Any]) -> str:
        server, tool, arguments = params.get("server"), params.get("tool"), params.get("arguments")
        if not isinstance(server, str) or not isinstance(tool, str):
            return self.title  # half-filled params (an edit in progress)
        pairs = arguments.items() if isinstance(arguments, dict) else []
        shown = ", ".join(f"{k}={shorten(json.dumps(v, ensure_ascii=False), 40)}" for k, v in pairs)
        return shorten(f"Call {server}.{tool}" + (f" with {shown}" if shown else ""), 160)

    def preview(self, params: dict[str, Any], client) -> Preview:
        upstream = upstream_named(params.get("server"))
        tool = upstream.tool(params.get("tool")) if upstream is not None else None
        if upstream is None or tool is None:
            return Preview(kind="unavailable", error="This MCP tool is no longer offered by its upstream.")
        notes = [f"Tool: {upstream.name}.{tool['name']}" + (f" ({tool['title']})" if tool.get("title") else "")]
        notes.append(f"What the server says it does: {tool.get('description') or '(no description)'}")
        claims = ", ".join(k for k, v in (tool.get("annotations") or {}).items() if v)
        if claims:
            trusted = "trusted by staff" if upstream.trust_annotations else "not trusted: the server's own claim"
            notes.append(f"Annotations: {claims} ({trusted})")
        notes.append("Countersign cannot compute what this tool will change: read the arguments.")
        return Preview(
            kind="json",
            title=f"{upstream.name}.{tool['name']} will be called with these arguments",
            before=None,
            after=params.get("arguments", {}),
            notes=notes,
        )
