"""An MCP server that lets any MCP client (Claude Desktop, IDEs, agent frameworks) propose actions to
Countersign and wait for people to decide. It runs beside the agent and talks to Countersign over
HTTP through the SDK, with the agent's own key:

- stdio: the key comes from ``COUNTERSIGN_API_KEY`` (and the service from ``COUNTERSIGN_URL``);
- streamable HTTP: each request's ``Authorization: Bearer <agent key>`` is passed through to
  Countersign, so one server can serve many agents and never holds a key of its own.

Written for the ``mcp`` 2.x low-level server (``mcp.server.lowlevel.Server`` with ``on_*`` handlers).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp import types
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError

from countersign import errors
from countersign.client import VERSION, AsyncCountersign
from countersign.models import Action, ActionType

MAX_WAIT_SECONDS = 600
DEFAULT_WAIT_SECONDS = 30
# How long a call of a gateway tool (``<server>.<tool>``) is held for a decision and its execution before it
# answers "pending review" (countersign-mcp --tool-wait, or COUNTERSIGN_MCP_TOOL_WAIT).
DEFAULT_TOOL_WAIT_SECONDS = 25
QUESTION = "human.question"
MCP_TOOL_CALL = "mcp.tool_call"

INSTRUCTIONS = (
    "Countersign puts a person between you and consequential actions. Call list_action_types to see "
    "what you may propose; propose_action to ask for approval (it returns at once with the action's id); "
    "then wait_for_action until it is decided. Only act on an approval; a rejection's reason says what "
    "the reviewer wants instead. An execution that `failed` did not take effect; one whose outcome is "
    "`unknown` may have: check the target before retrying. "
    "For `decision.only` you do the work yourself after approval, with the "
    "approved parameters (a reviewer may have edited them). To ask a person a question, propose "
    '`human.question` with {"question": ...}; the reviewer\'s comment on the approval is the answer. '
    "Tools named <server>.<tool> are other MCP servers' tools that Countersign stands in front of: call them as "
    "usual; a call that needs a person answers that it is pending review, and wait_for_action with its "
    "action_id and until=completion then returns the tool's result."
)

_ACTION_ID = {"type": "string", "description": "The action's id, as propose_action returned it."}

LIST_ACTION_TYPES = types.Tool(
    name="list_action_types",
    title="List action types",
    description="The kinds of action you may propose, with their risk and the JSON Schema of their params.",
    input_schema={"type": "object", "properties": {}, "additionalProperties": False},
    annotations=types.ToolAnnotations(read_only_hint=True),
)
GET_ACTION = types.Tool(
    name="get_action",
    title="Get an action",
    description="An action you proposed, as it is now: status, decision (with a rejection's reason), result.",
    input_schema={
        "type": "object",
        "properties": {"action_id": _ACTION_ID},
        "required": ["action_id"],
        "additionalProperties": False,
    },
    annotations=types.ToolAnnotations(read_only_hint=True),
)
WAIT_FOR_ACTION = types.Tool(
    name="wait_for_action",
    title="Wait for a decision",
    description=(
        "Wait until people decide on an action you proposed (or until it is finished), at most "
        "timeout_seconds; returns its state then. If it is still pending, call again."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "action_id": _ACTION_ID,
            "timeout_seconds": {
                "type": "number",
                "minimum": 0,
                "maximum": MAX_WAIT_SECONDS,
                "default": DEFAULT_WAIT_SECONDS,
                "description": "How long to wait at most.",
            },
            "until": {
                "type": "string",
                "enum": ["decision", "completion"],
                "default": "decision",
                "description": "decision: return once approved or rejected; completion: also wait for "
                "Countersign to finish executing it.",
            },
        },
        "required": ["action_id"],
        "additionalProperties": False,
    },
    annotations=types.ToolAnnotations(read_only_hint=True),
)
CANCEL_ACTION = types.Tool(
    name="cancel_action",
    title="Withdraw a proposal",
    description="Withdraw an action you proposed that is still pending.",
    input_schema={
        "type": "object",
        "properties": {"action_id": _ACTION_ID},
        "required": ["action_id"],
        "additionalProperties": False,
    },
    annotations=types.ToolAnnotations(destructive_hint=False, idempotent_hint=True),
)


def _embeddable(schema: dict[str, Any]) -> bool:
    # A schema with references can't be nested under another root without rewriting them.
    return "$ref" not in json.dumps(schema)


def propose_schema(action_types: list[ActionType] | None) -> dict[str, Any]:
    """propose_action's input schema; with the agent's action types, ``params`` follows each type's schema.

    ``params`` lists every type's schema under ``anyOf`` (titled by type name) for
    clients and models that read it, and ``allOf`` pins each ``action_type`` to
    exactly its own params schema (``if``/``then``) for validators.
    """
    params: dict[str, Any] = {
        "type": "object",
        "description": "The action's parameters, matching the params_schema of action_type (see list_action_types).",
    }
    action_type: dict[str, Any] = {"type": "string", "description": "Which kind of action (see list_action_types)."}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "action_type": action_type,
            "params": params,
            "summary": {
                "type": "string",
                "maxLength": 280,
                "description": "One line reviewers read first: what you will do, to what, and why.",
            },
            "reasoning": {"type": "string", "description": "Why you propose it; shown to reviewers."},
            "context": {
                "type": "object",
                "description": 'More for reviewers, e.g. {"source": {"kind", "url", "text"}, '
                '"links": [...]}; at most 64 KiB.',
            },
            "on_behalf_of": {"type": "string", "description": "Who asked you to do this (an email), if anyone."},
            "idempotency_key": {
                "type": "string",
                "maxLength": 255,
                "description": "Proposing again with the same key returns the first proposal instead of a new one.",
            },
            "expires_in": {
                "type": "integer",
                "minimum": 60,
                "description": "Seconds reviewers have to decide (the policy's default otherwise).",
            },
        },
        "required": ["action_type", "params", "summary"],
        "additionalProperties": False,
    }
    if action_types:
        action_type["enum"] = [t.name for t in action_types]
        lines = [f"- {t.name} ({t.risk} risk): {t.title}. {t.description}".rstrip() for t in action_types]
        action_type["description"] = "Which kind of action:\n" + "\n".join(lines)
        params["anyOf"] = [
            {**t.params_schema, "title": t.name}
            if _embeddable(t.params_schema)
            else {"type": "object", "title": t.name}
            for t in action_types
        ]
        schema["allOf"] = [
            {
                "if": {"properties": {"action_type": {"const": t.name}}, "required": ["action_type"]},
                "then": {"properties": {"params": t.params_schema}},
            }
            for t in action_types
            if _embeddable(t.params_schema)
        ]
    return schema


def tools(action_types: list[ActionType] | None = None) -> list[types.Tool]:
    propose = types.Tool(
        name="propose_action",
        title="Propose an action",
        description=(
            "Ask people to approve an action before it happens. Returns at once with the action "
            "(usually pending); then call wait_for_action with its id. For access you need only for a while "
            '(e.g. scim.group_membership), put params.duration (seconds, or ISO 8601 such as "PT2H"): '
            "Countersign takes the access back by itself when it ends, and a policy may require one or cap it "
            "(a longer one is refused, whatever its spelling). Ask for the least time the task needs."
        ),
        input_schema=propose_schema(action_types),
        annotations=types.ToolAnnotations(destructive_hint=False, open_world_hint=True),
    )
    return [LIST_ACTION_TYPES, propose, GET_ACTION, WAIT_FOR_ACTION, CANCEL_ACTION]


def gateway_tool(entry: dict[str, Any]) -> types.Tool:
    """A tool of an MCP server Countersign is the gateway to, as GET /api/v1/mcp/tools lists it."""
    hints = {k: v for k, v in (entry.get("annotations") or {}).items() if isinstance(v, bool)}
    return types.Tool(
        name=entry["name"],
        title=entry.get("title") or None,
        description=(entry.get("description") or "")
        + f"\n\n(Through Countersign: a call may be held for a person to approve it; server {entry['server']}.)",
        input_schema=entry["input_schema"],
        annotations=types.ToolAnnotations.model_validate(hints) if hints else None,
    )


def _static_schema(name: str) -> dict[str, Any] | None:
    for tool in tools():
        if tool.name == name:
            return tool.input_schema
    return None


# --- what the model reads back ------------------------------------------------------


def describe(action: Action) -> str:
    """One paragraph an LLM can act on, followed by the action as JSON."""
    decision = action.decision
    if action.status == "pending":
        head = (
            f"Pending: {action.approvals} of {action.required_approvals} approvals so far. "
            f"Call wait_for_action with action_id={action.id!r} to wait for the decision."
        )
    elif action.status == "rejected" and action.action_type == QUESTION:
        head = f"The reviewer declined to answer. Reason: {decision.reason if decision else ''}".rstrip()
    elif action.status == "rejected":
        head = f"Rejected. Do not do it. Reason: {action.decision.reason if decision else ''}".rstrip()
    elif action.status == "expired":
        head = "Expired: nobody decided in time. Do not do it."
    elif action.status == "cancelled":
        head = "Withdrawn before a decision. Do not do it."
    elif action.status == "unknown":
        head = (
            "Approved, but Countersign's execution was interrupted after it may have reached the target: "
            "NOBODY KNOWS WHETHER IT TOOK EFFECT. Do not retry blindly: check the target before retrying "
            "(a reviewer may also record what happened, and this action then becomes succeeded or failed). "
            f"Error: {action.error or 'interrupted'}"
        )
    elif action.status == "failed" and action.resolution:
        head = (
            "Approved; the execution was interrupted and a reviewer checked the target: it did not happen "
            f"(note: {action.resolution.get('note', '')}). It is safe to propose it again if it is still needed."
        )
    elif action.status == "failed":
        head = f"Approved, but Countersign's execution failed (it did not take effect): {action.error}"
    elif action.status == "approved" and action.action_type == QUESTION:
        # A question has nothing to do afterwards: the approval's comment is the answer itself.
        answer = "\n\n".join(decision.comments) if decision else ""
        head = (
            f"The reviewer answered: {answer}"
            if answer
            else "The reviewer acknowledged the question but wrote no answer; ask again if you need one."
        )
    elif action.is_finished and action.status == "approved":
        answer = " / ".join(decision.comments) if decision else ""
        head = "Approved. You may now do it yourself, with exactly these parameters: " + json.dumps(
            action.effective_params, ensure_ascii=False
        )
        if decision and decision.edited_params is not None:
            head += " (a reviewer edited them)"
        if answer:
            head += f". Reviewer's comment: {answer}"
    elif action.status == "succeeded" and action.resolution:
        head = (
            "Approved; the execution was interrupted and a reviewer checked the target: it took effect "
            f"(note: {action.resolution.get('note', '')}). Do not do it again."
        )
    elif action.status == "succeeded":
        head = "Approved and done by Countersign. Result: " + json.dumps(action.result, ensure_ascii=False)
        if action.reverted_at is not None:
            head += f". It has since been taken back (at {action.reverted_at.isoformat()}): the access is gone."
        elif action.access_expires_at is not None:
            head += (
                f". The access is time-boxed: Countersign takes it back at {action.access_expires_at.isoformat()}. "
                "If you need it longer, ask for an extension (POST /api/v1/actions/{id}/extend); it needs the "
                "same approvals as the grant."
            )
    else:
        head = f"Approved; Countersign is {'executing' if action.status == 'executing' else 'about to execute'} it."
    return f"Action {action.id} is {action.status}. {head}\n\n{json.dumps(action.raw, indent=1, ensure_ascii=False)}"


def _result(text: str, structured: dict[str, Any], *, error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content=structured, is_error=error
    )


def _action_result(action: Action) -> types.CallToolResult:
    if action.action_type == MCP_TOOL_CALL and action.status == "succeeded" and isinstance(action.result, dict):
        return _tool_result(action)
    return _result(describe(action), {"action": action.raw})


def _tool_result(action: Action) -> types.CallToolResult:
    """A gateway tool call that ran: the upstream tool's own answer, as it gave it (scrubbed by Countersign)."""
    result = action.result
    answer = types.CallToolResult.model_validate(
        {"content": result.get("content") or [], "isError": bool(result.get("is_error"))}
    )
    if result.get("structured_content") is not None:
        answer.structured_content = result["structured_content"]
    if result.get("truncated"):
        answer.content.append(types.TextContent(type="text", text=f"(Countersign: {result['truncated']}.)"))
    return answer


async def _call_gateway_tool(
    client: AsyncCountersign, name: str, args: dict[str, Any], tool_wait: float
) -> types.CallToolResult:
    """``<server>.<tool>``: proposed as mcp.tool_call; Countersign checks the name, the capability and the policy.

    Held up to ``tool_wait`` seconds: the tool's result if it ran by then, a tool error if it was refused, rejected
    or failed, else "pending review" with the action's id for wait_for_action."""
    server, _, tool = name.partition(".")
    action = await client.propose(MCP_TOOL_CALL, {"server": server, "tool": tool, "arguments": args}, f"Call {name}")
    if not action.is_finished and tool_wait > 0:
        try:
            action = await client.wait(action.id, timeout=tool_wait, until="completion", check=False)
        except errors.WaitTimeout as exc:
            action = exc.action or action
    if action.status == "succeeded":
        return _tool_result(action)
    if action.status in ("pending", "approved", "executing"):
        state = "pending review" if action.status == "pending" else "approved, and Countersign is running it"
        text = (
            f"{name} has not run yet: {state}. It is Countersign action {action.id}. Call "
            f"`countersign.wait_for_action` (the wait_for_action tool) with action_id={action.id!r} and "
            "until=completion: it returns this tool's result once a person has approved it and it ran."
        )
        return _result(text, {"action": action.raw, "pending": True})
    return _result(describe(action), {"action": action.raw}, error=True)


def _error_result(exc: errors.CountersignError) -> types.CallToolResult:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, errors.RateLimited) and exc.retry_after:
        text += f" Try again in {exc.retry_after:g} s."
    return _result(text, {"error": {"kind": type(exc).__name__, "problem": exc.problem}}, error=True)


class BadArgument(Exception):
    """A tool argument that is missing or wrong: a tool error the model can read and correct (the MCP spec's
    "tool execution error"), not a JSON-RPC error, which clients hide from the model."""

    def __init__(self, argument: str, message: str):
        super().__init__(f"Invalid argument {argument!r}: {message}")
        self.argument = argument


def _bad_argument_result(exc: BadArgument, tool: str) -> types.CallToolResult:
    return _result(
        f"{exc} Call {tool} again with it corrected.",
        {"error": {"kind": "InvalidArgument", "argument": exc.argument, "problem": None}},
        error=True,
    )


def _check_known(name: str, args: dict[str, Any]) -> None:
    schema = _static_schema(name) or {}
    for key in args:
        if key not in schema.get("properties", {}):
            known = ", ".join(schema.get("properties", {})) or "none"
            raise BadArgument(key, f"{name} takes no such argument (it takes: {known}).")


def _text_arg(args: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = args.get(name)
    if value is None and not required:
        return None
    if value is None:
        raise BadArgument(name, "missing; it is required (a non-empty string).")
    if not isinstance(value, str) or not value:
        raise BadArgument(name, f"must be a non-empty string, not {json.dumps(value)[:80]}.")
    return value


# --- the server ---------------------------------------------------------------------


class MissingKey(Exception):
    pass


def _bearer(ctx: Any) -> str:
    request = getattr(ctx, "request", None)
    header = request.headers.get("authorization", "") if request is not None else ""
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise MissingKey("Send the agent key as Authorization: Bearer <agent key>.")
    return key.strip()


def build_server(
    base_url: str,
    api_key: str | None = None,
    *,
    timeout: float = 30.0,
    tool_wait: float = DEFAULT_TOOL_WAIT_SECONDS,
) -> Server:
    """The MCP server. With ``api_key`` every call uses it (stdio); without, each HTTP request's bearer key.

    Besides its own tools it lists the gateway's MCP tools the agent may call (``<server>.<tool>``); a call of one
    is proposed as ``mcp.tool_call`` and held up to ``tool_wait`` seconds for the decision and the execution."""

    @asynccontextmanager
    async def lifespan(_server: Server) -> AsyncIterator[dict[str, Any]]:
        shared = AsyncCountersign(base_url, api_key, timeout=timeout) if api_key else None
        try:
            yield {"client": shared}
        finally:
            if shared is not None:
                await shared.aclose()

    @asynccontextmanager
    async def client_for(ctx: Any) -> AsyncIterator[AsyncCountersign]:
        shared = (ctx.lifespan_context or {}).get("client") if isinstance(ctx.lifespan_context, dict) else None
        if shared is not None:
            yield shared
            return
        client = AsyncCountersign(base_url, _bearer(ctx), timeout=timeout)
        try:
            yield client
        finally:
            await client.aclose()

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        action_types, gateway = None, []
        try:
            async with client_for(ctx) as client:
                action_types = await client.action_types()
                if any(t.name == MCP_TOOL_CALL for t in action_types):
                    gateway = [gateway_tool(t) for t in await client.gateway_tools()]
        except (MissingKey, errors.CountersignError):
            pass  # without the agent's types, propose_action's params stay a plain object
        return types.ListToolsResult(tools=[*tools(action_types), *gateway])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        args = dict(params.arguments or {})
        try:
            async with client_for(ctx) as client:
                if _static_schema(params.name) is None and "." in params.name:
                    return await _call_gateway_tool(client, params.name, args, tool_wait)
                return await _call(client, params.name, args)
        except MissingKey as exc:
            return _result(str(exc), {"error": {"kind": "NotAuthenticated", "problem": None}}, error=True)
        except BadArgument as exc:
            return _bad_argument_result(exc, params.name)
        except errors.CountersignError as exc:
            return _error_result(exc)

    return Server(
        "countersign",
        version=VERSION,
        title="Countersign",
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        get_tool_input_schema=_static_schema,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def _call(client: AsyncCountersign, name: str, args: dict[str, Any]) -> types.CallToolResult:
    if _static_schema(name) is None:
        # Not an input error but a call to a tool that does not exist: a protocol error, per the MCP spec.
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {name}")
    _check_known(name, args)
    if name == "list_action_types":
        found = await client.action_types()
        listing = [
            {
                "name": t.name,
                "title": t.title,
                "description": t.description,
                "risk": t.risk,
                "modifies_access": t.modifies_access,
                "params_schema": t.params_schema,
            }
            for t in found
        ]
        text = "\n".join(f"- {t.name} ({t.risk} risk): {t.title}" for t in found) or "No action types granted."
        return _result(f"{text}\n\n{json.dumps(listing, indent=1)}", {"action_types": listing})
    if name == "propose_action":
        action_type = _text_arg(args, "action_type")
        summary = _text_arg(args, "summary")
        action_params = args.get("params")
        if action_params is None:
            raise BadArgument("params", "missing; it is required (an object matching the action type's params).")
        if not isinstance(action_params, dict):
            raise BadArgument("params", f"must be an object, not {json.dumps(action_params)[:80]}.")
        options = {
            k: args[k] for k in ("context", "reasoning", "on_behalf_of", "idempotency_key", "expires_in") if k in args
        }
        action = await client.propose(action_type, action_params, summary, **options)  # type: ignore[arg-type]
        return _action_result(action)
    if name == "get_action":
        return _action_result(await client.get(_text_arg(args, "action_id")))  # type: ignore[arg-type]
    if name == "wait_for_action":
        action_id = _text_arg(args, "action_id")
        seconds = args.get("timeout_seconds", DEFAULT_WAIT_SECONDS)
        until = args.get("until", "decision")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= MAX_WAIT_SECONDS:
            raise BadArgument("timeout_seconds", f"must be a number from 0 to {MAX_WAIT_SECONDS}.")
        if until not in ("decision", "completion"):
            raise BadArgument("until", '"decision" or "completion".')
        try:
            action = await client.wait(action_id, timeout=seconds, until=until, check=False)  # type: ignore[arg-type]
        except errors.WaitTimeout as exc:
            action = exc.action or await client.get(action_id)  # type: ignore[arg-type]
        return _action_result(action)
    if name == "cancel_action":
        return _action_result(await client.cancel(_text_arg(args, "action_id")))  # type: ignore[arg-type]
    raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {name}")
