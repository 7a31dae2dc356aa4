"""Operational endpoints and error pages (problem JSON under /api/)."""

from __future__ import annotations

from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.csrf import csrf_failure as django_csrf_failure

from approvals.http_errors import dialect, error_response


def healthz(request):
    return JsonResponse({"status": "ok"})


def readyz(request):
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    from django.conf import settings

    # REDIS_URL, or the embedded redis-server's socket (config/settings/base.py).
    try:
        import redis

        redis.Redis.from_url(settings.COUNTERSIGN_CHANNEL_REDIS_URL, socket_timeout=2).ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    try:
        from config.celery_app import app

        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    ready = all(not v.startswith("error") for v in checks.values())
    return JsonResponse({"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503)


def not_found(request, exception=None):
    if dialect(request.path) == "page":
        return render(request, "404.html", status=404)
    return error_response(request.path, 404, "Not found", "No such resource.", slug="not-found")


def server_error(request):
    return error_response(
        request.path, 500, "Internal error", "Something went wrong on our side; it was logged.", slug="internal-error"
    )


def bad_request(request, exception=None):
    """Django's SuspiciousOperation answers (a Host not allowed, too many form fields, ...), in the path's dialect."""
    return error_response(request.path, 400, "Invalid input", "The request could not be read.", slug="invalid-input")


def forbidden(request, exception=None):
    return error_response(request.path, 403, "Not allowed", "You may not do this.", slug="not-allowed")


def csrf_failure(request, reason=""):
    """A POST without a valid CSRF token. Pages keep Django's explanation; API clients get their dialect
    (only a browser session is subject to CSRF; agent keys and tokens are not)."""
    if dialect(request.path) == "page":
        return django_csrf_failure(request, reason=reason)
    return error_response(
        request.path, 403, "Not allowed", "A session-authenticated request needs a CSRF token.", slug="not-allowed"
    )


def metrics(request):
    """Prometheus text format, behind a bearer token (COUNTERSIGN_METRICS_TOKEN).

    Without a token it is open only where COUNTERSIGN_METRICS_PUBLIC says so: by default in development and the
    embedded demo, never by default in production, which answers 404 (there is nothing a client could send).
    """
    import hmac

    from django.conf import settings
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.process_collector import ProcessCollector

    from approvals.metrics import CountersignCollector

    token = settings.COUNTERSIGN_METRICS_TOKEN
    if token:
        if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()):
            return HttpResponse("metrics token required\n", status=401, content_type="text/plain")
    elif not settings.COUNTERSIGN_METRICS_PUBLIC:
        return not_found(request)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CountersignCollector())
    ProcessCollector(registry=registry)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
