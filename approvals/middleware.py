from __future__ import annotations

from django.conf import settings

from approvals.api.parsers import MAX_BODY_BYTES
from approvals.api.problems import problem_response


class ApiBodyLimitMiddleware:
    """Refuse oversized API bodies by their declared length, before reading them."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/api/") or request.path.startswith("/humanlayer/"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return problem_response(400, "Invalid input", "Content-Length is not a number.", slug="invalid-input")
            if length > MAX_BODY_BYTES:
                return problem_response(
                    413, "Request body too large", "The request body is larger than 256 KiB.", slug="body-too-large"
                )
        return self.get_response(request)


class ContentSecurityPolicyMiddleware:
    """Send COUNTERSIGN_CSP on every HTML page: scripts only from our own static files."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "text/html" in response.get("Content-Type", "") and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = settings.COUNTERSIGN_CSP
        return response
