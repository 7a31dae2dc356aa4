"""How an error is told, by where it was asked: each part of the site answers in its own dialect.

- ``/api/``: RFC 9457 problem JSON (``application/problem+json``), as the API's own views answer.
- ``/humanlayer/``: the same body as plain ``application/json``: the ``humanlayer`` SDK parses every body as
  JSON before it looks at the status, and its async client (aiohttp) refuses any other content type.
- everything else (reviewer pages, Slack, health): a short readable HTML page.

Used where no view of ours answers: the ASGI request guard (oversized or unreadable requests), Django's 404, 500
and CSRF-failure handlers, and the empty 405s of Django's method decorators. Pure: no database, no settings
beyond the page's CSP.
"""

from __future__ import annotations

import json
from html import escape

from django.http import HttpResponse

from approvals.api.problems import PROBLEM_CONTENT_TYPE, problem

API_PREFIX = "/api/"
HUMANLAYER_PREFIX = "/humanlayer/"
HTML_CONTENT_TYPE = "text/html; charset=utf-8"
# For pages answered outside Django's middleware (the ASGI guard): nothing to load, nothing to run.
BARE_PAGE_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def dialect(path: str) -> str:
    if path.startswith(API_PREFIX) or path == API_PREFIX.rstrip("/"):
        return "api"
    if path.startswith(HUMANLAYER_PREFIX) or path == HUMANLAYER_PREFIX.rstrip("/"):
        return "humanlayer"
    return "page"


def error_body(path: str, status: int, title: str, detail: str, *, slug: str = "") -> tuple[bytes, str]:
    """(body, content type) of an error answered at ``path``."""
    kind = dialect(path)
    if kind in ("api", "humanlayer"):
        body = json.dumps(problem(status, title, detail, slug=slug), separators=(",", ":")).encode()
        return body, (PROBLEM_CONTENT_TYPE if kind == "api" else "application/json")
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)} · Countersign</title></head>"
        f"<body><h1>{escape(title)}</h1><p>{escape(detail)}</p>"
        '<p><a href="/">Back to the queue</a></p></body></html>'
    )
    return page.encode(), HTML_CONTENT_TYPE


def error_response(path: str, status: int, title: str, detail: str, *, slug: str = "", **headers: str) -> HttpResponse:
    body, content_type = error_body(path, status, title, detail, slug=slug)
    response = HttpResponse(body, status=status, content_type=content_type)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response
