"""The one MCP client: talking to an upstream MCP server of the gateway (approvals.models.mcp): connect (stdio or
streamable HTTP), list its tools, call one; with deadlines. What ``transport`` is to the types that speak HTTP,
this is to ``mcp.tool_call``; the gateway's front door and the services use it too, from above.

Built on the ``mcp`` package's own client (``mcp.Client``), so an upstream is spoken to exactly as any MCP host
would. Each listing or call is one short session: connect, initialise, one request, close. That costs a process
start for a stdio upstream, and keeps nothing running between calls that an earlier call could have left in an
odd state; an upstream that must be fast is better run over HTTP.

The worker is synchronous (Celery): ``list_tools`` and ``call_tool`` run the async client on an event loop of
their own (``anyio.run``), in the calling thread.

What the upstream process gets: the command and arguments staff registered, and an environment of only the
variables the ``mcp`` package passes on (``HOME``, ``PATH``, ``SHELL``, ``TERM``, ``USER``, ``LOGNAME``) plus the
upstream's own stored ones: never Countersign's environment (its database URL, its keys). Over HTTP, the stored
headers go on every request of the session; they never reach the agent, and results are scrubbed of every form
of them (``redactor``) before they are stored.

Reads only: imports models and credentials.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from approvals.credentials.crypto import decrypt_secret, encrypt_secret
from approvals.credentials.redaction import Redactor
from approvals.models.mcp import TOOL_NAME_RE, McpUpstream

# How much of a tool's result is kept: a result is stored on the action and shown to reviewers.
MAX_RESULT_BYTES = 256 * 1024
MAX_TOOLS = 500
MAX_DESCRIPTION = 4000


class UpstreamError(Exception):
    """The upstream could not be reached or answered wrongly. ``sent`` says whether a tool call may have reached it
    (then nobody knows whether it took effect)."""

    def __init__(self, message: str, *, sent: bool = False):
        super().__init__(message)
        self.message = message
        self.sent = sent


@dataclass(frozen=True)
class UpstreamSecrets:
    env: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never the values
        return f"<UpstreamSecrets env={sorted(self.env)} headers={sorted(self.headers)}>"


def seal_secrets(secrets: UpstreamSecrets) -> bytes:
    """The Fernet token stored in ``McpUpstream.secrets_encrypted``."""
    return encrypt_secret(json.dumps({"env": secrets.env, "headers": secrets.headers}, sort_keys=True))


def open_secrets(upstream: McpUpstream) -> UpstreamSecrets:
    """The stored environment and headers. Raises CredentialDecryptError if no configured key opens them."""
    if not upstream.secrets_encrypted:
        return UpstreamSecrets()
    data = json.loads(decrypt_secret(upstream.secrets_encrypted))
    return UpstreamSecrets(env=dict(data.get("env") or {}), headers=dict(data.get("headers") or {}))


class UpstreamConnection:
    """Where and how to reach one upstream, with its secrets: built in the worker, never handed to an agent.

    ``redactor`` scrubs every form of every secret value from what the upstream answers (the execution service
    picks it up, approvals.credentials.redaction.redactor_for)."""

    __slots__ = ("_secrets", "args", "command", "name", "redactor", "timeout", "transport", "url")

    def __init__(self, upstream: McpUpstream, secrets: UpstreamSecrets):
        self.name = upstream.name
        self.transport = upstream.transport
        self.command = upstream.command
        self.args = list(upstream.args or [])
        self.url = upstream.url
        self.timeout = float(upstream.timeout_seconds or 30)
        self._secrets = secrets
        self.redactor = Redactor([*secrets.env.values(), *secrets.headers.values()])

    def __repr__(self) -> str:
        return f"<UpstreamConnection {self.name} {self.transport}>"

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Client]:
        if self.transport == McpUpstream.Transport.STDIO:
            params = StdioServerParameters(command=self.command, args=self.args, env=dict(self._secrets.env))
            async with Client(params, read_timeout_seconds=self.timeout, cache=None) as client:
                yield client
            return
        # Redirects are not followed off the endpoint's origin (the mcp package's rule), so the headers go nowhere
        # else.
        http = create_mcp_http_client(
            headers=dict(self._secrets.headers), timeout=httpx2.Timeout(self.timeout, read=self.timeout)
        )
        async with http:
            transport = streamable_http_client(self.url, http_client=http)
            async with Client(transport, read_timeout_seconds=self.timeout, cache=None) as client:
                yield client

    async def alist_tools(self) -> list[dict[str, Any]]:
        try:
            with anyio.fail_after(self.timeout):
                async with self._session() as client:
                    tools, cursor = [], None
                    while True:
                        page = await client.list_tools(cursor=cursor)
                        tools.extend(page.tools)
                        cursor = page.next_cursor
                        if not cursor or len(tools) >= MAX_TOOLS:
                            break
        except TimeoutError:
            raise UpstreamError(f"MCP upstream {self.name} did not list its tools within {self.timeout:g} s") from None
        except Exception as exc:
            raise UpstreamError(f"MCP upstream {self.name} could not be reached ({_error_words(exc)})") from None
        return [entry for entry in (tool_entry(t.model_dump(mode="json", by_alias=True)) for t in tools) if entry]

    async def acall_tool(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        sent = False
        try:
            with anyio.fail_after(self.timeout):
                async with self._session() as client:
                    sent = True  # from here on the call may have reached the upstream
                    result = await client.call_tool(tool, arguments)
        except TimeoutError:
            raise UpstreamError(
                f"MCP upstream {self.name} did not answer within {self.timeout:g} s", sent=sent
            ) from None
        except Exception as exc:
            # A JSON-RPC error is an answer: the upstream refused the call (unknown tool, invalid arguments).
            answered = isinstance(_leaf(exc), MCPError)
            words = "refused the call" if answered else "failed"
            raise UpstreamError(
                f"MCP upstream {self.name} {words} ({_error_words(exc)})", sent=sent and not answered
            ) from None
        return tool_result(result.model_dump(mode="json", by_alias=True, exclude_none=True))

    def list_tools(self) -> list[dict[str, Any]]:
        return anyio.run(self.alist_tools)

    def call_tool(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return anyio.run(self.acall_tool, tool, arguments)


def connect(upstream: McpUpstream) -> UpstreamConnection:
    return UpstreamConnection(upstream, open_secrets(upstream))


def _leaf(exc: BaseException) -> BaseException:
    # An exception group (the client's task group) says little; its first leaf says what happened.
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _error_words(exc: BaseException) -> str:
    # Only the type and message: the redactor scrubs what is stored, but a trace of the client's internals helps
    # nobody.
    exc = _leaf(exc)
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def tool_entry(raw: dict[str, Any]) -> dict[str, Any] | None:
    """A listed tool as Countersign keeps it, or None when it cannot be offered (a name outside the MCP
    specification's characters, an input schema that is not a JSON Schema object)."""
    name = raw.get("name")
    schema = raw.get("inputSchema")
    if not isinstance(name, str) or not TOOL_NAME_RE.fullmatch(name) or not isinstance(schema, dict):
        return None
    if schema.get("type") != "object":
        return None
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError:
        return None
    annotations = raw.get("annotations") if isinstance(raw.get("annotations"), dict) else {}
    return {
        "name": name,
        "title": str(raw.get("title") or (annotations or {}).get("title") or "")[:200],
        "description": str(raw.get("description") or "")[:MAX_DESCRIPTION],
        "input_schema": schema,
        # As the upstream claims them: hints, trusted only where staff said so (McpUpstream.trust_annotations).
        "annotations": {
            k: v
            for k, v in (annotations or {}).items()
            if k in ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint") and isinstance(v, bool)
        },
    }


def tool_result(raw: dict[str, Any]) -> dict[str, Any]:
    """The tool's answer as the action's result: its content, structured content and whether it is an error."""
    result = {
        "content": raw.get("content") or [],
        "is_error": bool(raw.get("isError")),
    }
    if raw.get("structuredContent") is not None:
        result["structured_content"] = raw["structuredContent"]
    size = len(json.dumps(result, ensure_ascii=False).encode())
    if size > MAX_RESULT_BYTES:
        texts = [c.get("text", "") for c in result["content"] if isinstance(c, dict) and c.get("type") == "text"]
        text = "\n".join(texts)[: MAX_RESULT_BYTES // 2]
        result = {
            "content": [{"type": "text", "text": text}],
            "is_error": result["is_error"],
            "truncated": f"the tool's answer was {size} bytes; the first text of it is kept",
        }
    return result
