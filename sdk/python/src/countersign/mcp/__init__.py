"""``countersign-mcp``: Countersign as an MCP server (needs the ``mcp`` extra: ``pip install countersign[mcp]``).

- ``countersign-mcp``: stdio; ``COUNTERSIGN_URL`` and ``COUNTERSIGN_API_KEY`` (an agent key) from the environment.
- ``countersign-mcp --transport http --port 8765``: streamable HTTP on ``http://127.0.0.1:8765/mcp``; each
  client sends ``Authorization: Bearer <its agent key>``, which is passed through to Countersign.

Both also list the MCP tools Countersign is the gateway to (``<server>.<tool>``, docs/gateway.md); a call of one
is held up to ``--tool-wait`` seconds (``COUNTERSIGN_MCP_TOOL_WAIT``, default 25) for a decision.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["build_server", "http_app", "main"]


def build_server(base_url: str, api_key: str | None = None, **kw: Any):
    from countersign.mcp.server import build_server as build

    return build(base_url, api_key, **kw)


def require_bearer(app: Any) -> Any:
    """ASGI wrapper: HTTP requests without ``Authorization: Bearer <key>`` get 401 before reaching MCP."""

    async def guarded(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            scheme, _, key = header.partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                body = json.dumps({"error": "Send your Countersign agent key as Authorization: Bearer <key>."})
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b'Bearer realm="countersign"'),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await app(scope, receive, send)

    return guarded


def http_app(base_url: str, *, host: str = "127.0.0.1", path: str = "/mcp", **kw: Any) -> Any:
    """The streamable-HTTP ASGI app: no key of its own, each request's bearer key is used."""
    server = build_server(base_url, **kw)
    return require_bearer(server.streamable_http_app(streamable_http_path=path, host=host))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="countersign-mcp", description="Countersign as an MCP server.")
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--url", default=os.environ.get("COUNTERSIGN_URL"), help="Countersign (env COUNTERSIGN_URL)")
    parser.add_argument("--host", default="127.0.0.1", help="http: address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="http: port to listen on")
    parser.add_argument("--path", default="/mcp", help="http: the MCP endpoint's path")
    parser.add_argument(
        "--tool-wait",
        type=float,
        default=float(os.environ.get("COUNTERSIGN_MCP_TOOL_WAIT", "25")),
        help="seconds a gateway tool call waits for a decision before answering 'pending review' "
        "(env COUNTERSIGN_MCP_TOOL_WAIT; default 25)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.tool_wait <= 600:
        parser.error("--tool-wait is between 0 and 600 seconds")
    if not args.url:
        parser.error("Countersign's URL is required: --url or COUNTERSIGN_URL")

    if args.transport == "stdio":
        key = os.environ.get("COUNTERSIGN_API_KEY")
        if not key:
            parser.error("COUNTERSIGN_API_KEY (an agent key) is required for stdio")
        import anyio
        from mcp.server.stdio import stdio_server

        server = build_server(args.url, key, tool_wait=args.tool_wait)

        async def serve() -> None:
            async with stdio_server() as (read_stream, write_stream):
                await server.run(read_stream, write_stream, server.create_initialization_options())

        anyio.run(serve)
        return

    import uvicorn

    print(f"countersign-mcp: http://{args.host}:{args.port}{args.path} -> {args.url}", file=sys.stderr)
    app = http_app(args.url, host=args.host, path=args.path, tool_wait=args.tool_wait)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
