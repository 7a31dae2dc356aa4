"""The health probes are answered before the rest of the middleware.

A platform probes an instance by its address (``Host: 10.0.3.7:8000``), over plain HTTP, often every few
seconds. Through the whole chain that would get 400 (``ALLOWED_HOSTS``: CommonMiddleware validates the host of
every request), a redirect to HTTPS in production, and a session and user looked at on the way. This middleware
sits right after the request id one (config/settings/base.py) and hands the probe paths straight to their views
(config/urls.py, approvals/web/ops.py): no host check, no redirect, no session, no auth, no template.
"""

from __future__ import annotations

from collections.abc import Callable

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction
from django.urls import resolve

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/healthz/dependencies"})


class ProbeMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self._acall(request)
        if request.path_info in PROBE_PATHS:
            return async_to_sync(resolve(request.path_info).func)(request)  # the probe views are async
        return self.get_response(request)

    async def _acall(self, request):
        if request.path_info in PROBE_PATHS:
            return await resolve(request.path_info).func(request)
        return await self.get_response(request)
