"""RFC 9457 problem details for every API error."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from approvals.errors import ServiceError

PROBLEM_TYPE_BASE = "https://countersign.dev/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"


def problem(
    status_code: int, title: str, detail: str = "", *, slug: str = "", errors: dict | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + (slug or title.lower().replace(" ", "-")),
        "title": title,
        "status": status_code,
        "detail": detail or title,
    }
    if errors:
        body["errors"] = errors
    return body


def problem_response(status_code: int, title: str, detail: str = "", **kw) -> JsonResponse:
    """For plain Django views (middleware, async views, 404/500 handlers)."""
    return JsonResponse(
        problem(status_code, title, detail, **kw), status=status_code, content_type=PROBLEM_CONTENT_TYPE
    )


def flatten_errors(data: Any, prefix: str = "") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            name = "body" if key == "non_field_errors" and not prefix else key
            out.update(flatten_errors(value, f"{prefix}.{name}" if prefix else str(name)))
    elif isinstance(data, list) and data and all(not isinstance(v, (dict, list)) for v in data):
        out[prefix or "body"] = [str(v) for v in data]
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out.update(flatten_errors(value, f"{prefix}.{i}" if prefix else str(i)))
    else:
        out[prefix or "body"] = [str(data)]
    return out


_TITLES = {
    400: ("Invalid input", "invalid-input"),
    401: ("Not authenticated", "not-authenticated"),
    403: ("Not allowed", "not-allowed"),
    404: ("Not found", "not-found"),
    405: ("Method not allowed", "method-not-allowed"),
    406: ("Not acceptable", "not-acceptable"),
    409: ("Conflict", "conflict"),
    413: ("Request body too large", "body-too-large"),
    415: ("Unsupported media type", "unsupported-media-type"),
    429: ("Too many requests", "rate-limited"),
}


def problem_exception_handler(exc, context):
    if isinstance(exc, ServiceError):
        body = {**exc.extra, **problem(exc.status, exc.title, exc.detail, slug=exc.slug, errors=exc.errors)}
        return Response(body, status=exc.status, content_type=PROBLEM_CONTENT_TYPE)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None  # unexpected: Django's 500 handler answers (also as a problem)
    code = response.status_code
    title, slug = _TITLES.get(code, ("Error", "error"))
    errors = None
    if isinstance(exc, exceptions.ValidationError):
        errors = flatten_errors(exc.detail)
        detail = "The request has invalid fields; see errors."
    else:
        detail = str(getattr(exc, "detail", "")) or title
    body = problem(code, title, detail, slug=slug, errors=errors)
    headers = {k: v for k, v in response.items() if k in ("WWW-Authenticate", "Retry-After", "Allow")}
    return Response(body, status=code, headers=headers, content_type=PROBLEM_CONTENT_TYPE)
