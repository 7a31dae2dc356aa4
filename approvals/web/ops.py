"""Operational endpoints and error pages (problem JSON under /api/)."""

from __future__ import annotations

from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.csrf import csrf_failure as django_csrf_failure

from approvals.ops import health
from approvals.web.http_errors import dialect, error_response


async def healthz(request):
    """The process is alive and serving requests; no dependency is touched."""
    return JsonResponse({"status": "ok"})


async def readyz(request):
    """This process can serve: its database answers. Redis and the broker are reported but do not decide it.

    Without Redis, proposals, decisions, reads and waits still succeed (they only need PostgreSQL) and every side
    effect waits in the outbox until Redis is back (docs/RELIABILITY.md); taking every web process out of the load
    balancer then would turn a Redis outage into a full one (docs/deploy.md, "Probes").
    """
    checks = await health.acheck((health.DATABASE, health.REDIS, health.BROKER))
    ready = bool(checks[health.DATABASE].up)
    body = {"status": "ready" if ready else "not ready", "checks": {name: c.detail for name, c in checks.items()}}
    return JsonResponse(body, status=200 if ready else 503)


async def dependencies(request):
    """For monitoring, not for load balancers: every dependency, 503 when any of them is down.

    Beat's heartbeat counts only where this process can see it (beat's COUNTERSIGN_VAR_DIR); elsewhere it is
    reported as unknown and does not fail the check.
    """
    checks = await health.acheck(health.ALL)
    failing = [name for name, c in checks.items() if c.up is False]
    beat = checks[health.BEAT]
    body = {
        "status": "failing" if failing else "ok",
        "checks": {name: c.detail for name, c in checks.items()},
        "failing": failing,
        "beat_heartbeat_age_seconds": None if beat.age_seconds is None else round(beat.age_seconds, 1),
    }
    return JsonResponse(body, status=503 if failing else 200)


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

    from approvals.ops.metrics import CountersignCollector
    from config.request_metrics import register_request_metrics

    token = settings.COUNTERSIGN_METRICS_TOKEN
    if token:
        if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()):
            return HttpResponse("metrics token required\n", status=401, content_type="text/plain")
    elif not settings.COUNTERSIGN_METRICS_PUBLIC:
        return not_found(request)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CountersignCollector())
    # Request rate, latency and errors: every web process's counts, whichever process answers this scrape.
    register_request_metrics(registry)
    # process_*: the web process that answered only.
    ProcessCollector(registry=registry)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
