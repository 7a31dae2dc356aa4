"""The JSON APIs' own Django handler: the same URLconf and views, a shorter middleware chain.

Django builds one middleware chain for every request. The reviewer pages need all of settings.MIDDLEWARE (static
files, CSRF, messages, frame and CSP headers, the agent-key-on-pages audit); the agent API needs few of them, and
each costs every request, hottest of all the agent's reads and ``wait`` polls. ``route_api`` sends the API's paths
to a handler built from settings.API_MIDDLEWARE instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse, HttpRequest, HttpResponseBase
from django.urls import set_script_prefix

T = TypeVar("T")


class APIHandler(ASGIHandler):
    """Django's ASGI handler, with settings.API_MIDDLEWARE as its chain, threads kept for the next request, and one
    crossing to the thread per request.

    Django runs each request's synchronous part (middleware, DRF views, the ORM) on a thread of the request's own,
    made for it and ended with it; making a thread cost an agent's read more than its SQL did. Here each request
    still has a thread to itself, but one that an earlier request finished with.

    Django also crosses to that thread three times per request: for ``request_started``'s receivers, for the
    middleware chain and the view, and for the response's ``close`` (``request_finished``'s receivers, which hand
    the database connection back). A crossing cost 0.26 ms of CPU on the benchmark machine (docs/BENCHMARKS.md,
    section 9); here the three are one, in the same order: the signal, the view, and (for a response that is not
    streamed) its ``close``, before its bytes go out. A streamed response is closed after it is sent, as Django
    closes it.

    And at most ``threads`` requests run their synchronous part at once (0: no limit); the others wait their turn on
    the event loop. Python runs one thread at a time: sixteen requests on sixteen threads did not finish sooner, they
    handed the GIL to each other at every statement, and the hand-offs cost a write a third more CPU than the write
    itself at 32 clients (docs/BENCHMARKS.md, section 9). A request holds its turn at most ``HOLD_SECONDS``; one that
    runs longer (a preview reading a slow target, a slow database) goes on without it, so it delays the next by that
    much, never blocks it. Requests whose path ``long_polls`` matches (the ``wait``, which holds its thread while it
    waits on the event loop) take no turn.
    """

    HOLD_SECONDS = 0.05

    def __init__(self, *, threads: int = 0, long_polls: re.Pattern[str] | None = None) -> None:
        super().__init__()
        self._idle: list[ThreadPoolExecutor] = []
        self._crossings: dict[Callable, Callable] = {}
        self.threads = threads
        self.long_polls = long_polls
        self._turns: asyncio.Semaphore | None = None
        self._turns_loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        async with self.kept_thread():
            await self.handle(scope, receive, send)

    def kept_thread(self) -> KeptThread:
        """Within it, the request's synchronous part runs on a thread an earlier request finished with."""
        return KeptThread(self._idle)

    async def handle(self, scope, receive, send):
        # Django 5.2's ASGIHandler.handle, but for the crossings (see the class); keep it in step when Django changes.
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            await signals.request_started.asend(sender=self.__class__, scope=scope)
            body_file.close()
            await self.send_response(error_response, send)
            await sync_to_async(error_response.close)()
            return

        async def process_request(request, send):
            response = await self._respond(request, scope)
            with contextlib.suppress(asyncio.CancelledError):  # the client left while the response was being sent
                await self.send_response(response, send)
            return response

        # The client may leave while the view runs: its task is cancelled (the thread finishes regardless).
        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            await signals.request_finished.asend(sender=self.__class__)
        else:
            if response.streaming:
                await sync_to_async(response.close)()
        body_file.close()

    async def _respond(self, request: HttpRequest, scope: dict) -> HttpResponseBase:
        return await self.in_turn(scope, self._respond_on_thread, request, scope)

    async def in_turn(self, scope: dict, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` on the request's thread (``kept_thread``), in a turn unless the path is a long poll."""
        run = self._crossings.get(work)
        if run is None:  # made once per function: making a crossing cost a tenth of one
            run = self._crossings[work] = sync_to_async(work, thread_sensitive=True)
        if not self.threads or (self.long_polls is not None and self.long_polls.fullmatch(scope["path"])):
            return await run(*args)
        turns = self._turns_of_this_loop()
        await turns.acquire()
        held = True

        def give_back() -> None:
            nonlocal held
            if held:
                held = False
                turns.release()

        timer = asyncio.get_running_loop().call_later(self.HOLD_SECONDS, give_back)
        try:
            return await run(*args)
        finally:
            timer.cancel()
            give_back()

    def _turns_of_this_loop(self) -> asyncio.Semaphore:
        # A server has one event loop for its life; tests and profiles run a new one each time (asyncio.run).
        loop = asyncio.get_running_loop()
        if self._turns_loop is not loop:
            self._turns, self._turns_loop = asyncio.Semaphore(self.threads), loop
        return self._turns

    def _respond_on_thread(self, request: HttpRequest, scope: dict) -> HttpResponseBase:
        signals.request_started.send(sender=self.__class__, scope=scope)
        response = self.get_response(request)  # Django's synchronous path: urlconf, the chain, request.close, the log
        response._handler_class = self.__class__
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size
        if not response.streaming:
            response.close()  # request_finished: the database connection goes back before the bytes go out
        return response

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


class KeptThread:
    """An async context: a request's synchronous part within it runs on a thread from ``idle`` (one made if none is
    idle), which goes back to ``idle`` at the end."""

    __slots__ = ("context", "executor", "idle")

    def __init__(self, idle: list[ThreadPoolExecutor]) -> None:
        self.idle = idle

    async def __aenter__(self) -> None:
        self.executor = self.idle.pop() if self.idle else ThreadPoolExecutor(max_workers=1, thread_name_prefix="api")
        self.context = ThreadSensitiveContext(executor=self.executor)
        try:
            await self.context.__aenter__()
        except BaseException:
            self.idle.append(self.executor)
            raise

    async def __aexit__(self, *exc_info) -> None:
        try:
            await self.context.__aexit__(*exc_info)
        finally:
            self.idle.append(self.executor)


def route_api(api_app: Any, site_app: Any, *, prefixes: tuple[str, ...]) -> Any:
    """An ASGI app sending HTTP requests whose path starts with one of ``prefixes`` to ``api_app``."""

    async def app(scope, receive, send):
        target = api_app if scope["path"].startswith(prefixes) else site_app
        await target(scope, receive, send)

    return app
