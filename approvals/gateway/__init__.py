"""The gateway: Countersign in the path of unmodified tools (docs/gateway.md).

A front door, like the API: it parses what a client sent, calls one service and presents the result.

- ``http.py``: ``/gateway/<credential>/<path>``, an ASGI app in front of Django (config/asgi.py). An agent points
  an existing HTTP client (slack_sdk, httpx, requests, an SDK generated from OpenAPI) at it with its Countersign
  key as the token; each call becomes an ``http.request`` action (approvals.services.gateway) and the target's
  answer comes back as the target sent it, scrubbed.
- ``mcp_*.py``: the MCP gateway (upstream MCP servers' tools offered to agents as ``<server>.<tool>``).

May import the services, selectors, presentation and below, never the other front doors.
"""
