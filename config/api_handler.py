"""The JSON APIs' own Django handler: the same URLconf and views, a shorter middleware chain.

Django builds one middleware chain for every request. The reviewer pages need all of settings.MIDDLEWARE (static
files, CSRF, messages, frame and CSP headers, the agent-key-on-pages audit); the agent API needs few of them, and
each costs every request, hottest of all the agent's reads and ``wait`` polls. ``route_api`` sends the API's paths
to a handler built from settings.API_MIDDLEWARE instead.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler


class APIHandler(ASGIHandler):
    """Django's ASGI handler, with settings.API_MIDDLEWARE as its chain, and threads kept for the next request.

    Django runs each request's synchronous part (middleware, DRF views, the ORM) on a thread of the request's own,
    made for it and ended with it; making a thread cost an agent's read more than its SQL did. Here each request
    still has a thread to itself, but one that an earlier request finished with.
    """

    def __init__(self) -> None:
        super().__init__()
        self._idle: list[ThreadPoolExecutor] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self._idle.pop() if self._idle else ThreadPoolExecutor(max_workers=1, thread_name_prefix="api")
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            self._idle.append(executor)

    def load_middleware(self, is_async: bool = False) -> None:
        # BaseHandler reads settings.MIDDLEWARE itself; it is swapped only while this one handler loads, at start.
        everything = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.API_MIDDLEWARE
        try:
            # The chain is built as WSGI builds it, synchronous to the view, and entered once on the request's thread.
            # Built for ASGI, Django's synchronous middleware would hand the request back to the event loop for the
            # view (async_to_sync), which hands it to the thread again (sync_to_async): two crossings more per request.
            # An async view (the wait) is run by Django on the event loop while the thread waits, as it was before.
            super().load_middleware(is_async=False)
        finally:
            settings.MIDDLEWARE = everything
        if is_async:
            self._middleware_chain = sync_to_async(self._middleware_chain, thread_sensitive=True)


def route_api(api_app: Any, site_app: Any, *, prefixes: tuple[str, ...]) -> Any:
    """An ASGI app sending HTTP requests whose path starts with one of ``prefixes`` to ``api_app``."""

    async def app(scope, receive, send):
        target = api_app if scope["path"].startswith(prefixes) else site_app
        await target(scope, receive, send)

    return app
