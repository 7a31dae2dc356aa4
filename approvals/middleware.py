from __future__ import annotations

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
