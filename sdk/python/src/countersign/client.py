"""``Countersign`` (blocking) and ``AsyncCountersign``: the agent side of the Countersign API.

Both take the service's base URL and an agent key (``cs_<id>_<secret>``), or
read ``COUNTERSIGN_URL`` and ``COUNTERSIGN_API_KEY``. Reads, proposals (which
always carry an idempotency key, so a retry never proposes twice) and the
long-poll retry network errors and 5xx answers with capped, jittered backoff.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from countersign import errors
from countersign.models import PENDING, Action, ActionType

__all__ = ["AsyncCountersign", "Countersign"]

VERSION = "0.1.0"
DEFAULT_TIMEOUT = 30.0  # seconds for one ordinary request
MAX_SERVER_WAIT = 60.0  # the server's longest long-poll
DEFAULT_WAIT = 600.0  # wait()'s overall timeout unless told otherwise
RETRIES = 3  # attempts after the first for a single request (get, propose, action_types)
UNTIL = ("decision", "completion")
# What a request can raise besides an answer: the retryable network errors (httpx.TransportError) and the rest,
# which are wrapped without a retry (a closed client, a bad URL, too many redirects, an undecodable body).
_HTTP_FAILURES = (httpx.HTTPError, httpx.InvalidURL, RuntimeError)


class _Retryable(Exception):
    """A 5xx answer on a request that is safe to repeat."""

    def __init__(self, response: httpx.Response):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def backoff(attempt: int, base: float = 0.5, cap: float = 10.0) -> float:
    """Seconds before retry number ``attempt`` (0-based): exponential, capped, with jitter."""
    return min(cap, base * 2**attempt) * (0.5 + random.random() / 2)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the matching ``APIError`` for an error answer (its body is an RFC 9457 problem)."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"title": response.reason_phrase, "status": response.status_code, "detail": response.text[:500]}
    raise errors.error_for(response.status_code, body, _retry_after(response))


def _pause(seconds: float, deadline: float | None) -> float:
    """``seconds``, but never past the overall deadline."""
    return seconds if deadline is None else max(0.0, min(seconds, deadline - time.monotonic()))


def _failed(exc: Exception) -> errors.Unavailable:
    """A request that never got an answer, as this package's error (never a bare httpx or RuntimeError)."""
    if isinstance(exc, httpx.TransportError):
        return _unavailable(exc)
    return errors.Unavailable(f"The request to Countersign failed: {type(exc).__name__}: {exc}")


def _json(response: httpx.Response) -> Any:
    """The answer's JSON; a success that is not JSON (a proxy's page, a wrong URL) is an ``APIError``."""
    try:
        return response.json()
    except ValueError as exc:
        raise errors.APIError(
            f"Countersign's answer ({response.status_code}, {response.headers.get('Content-Type', 'no type')}) "
            f"is not JSON: is {response.request.url} a Countersign server?",
            status=response.status_code,
        ) from exc


def _unavailable(exc: Exception) -> errors.Unavailable:
    if isinstance(exc, _Retryable):
        response = exc.response
        try:
            problem = response.json()
        except ValueError:
            problem = None
        return errors.Unavailable(
            f"Countersign answered {response.status_code} {response.reason_phrase}",
            problem=problem if isinstance(problem, dict) else None,
            status=response.status_code,
        )
    return errors.Unavailable(f"Countersign is unreachable: {type(exc).__name__}: {exc}")


def _done(action: Action, until: str) -> bool:
    return action.status != PENDING if until == "decision" else action.is_finished


def _settle(action: Action, check: bool) -> Action:
    if check:
        failure = errors.outcome_error(action)
        if failure is not None:
            raise failure
    return action


def proposal_body(
    action_type: str,
    params: dict[str, Any],
    summary: str,
    *,
    context: dict[str, Any] | None = None,
    reasoning: str | None = None,
    on_behalf_of: str | None = None,
    idempotency_key: str | None = None,
    callback_url: str | None = None,
    expires_in: int | None = None,
    trace_url: str | None = None,
    run_id: str | None = None,
    confidence: float | None = None,
    duration: int | str | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /api/v1/actions``; an idempotency key is always set (a fresh UUID if not given).

    ``trace_url`` (http/https), ``run_id`` and ``confidence`` (0 to 1) are shown at the top of the reviewer's page.
    ``duration`` (seconds, or ISO 8601 such as ``"PT2H"``) asks for time-boxed access from a type that supports
    it (``scim.group_membership``): it goes into ``params.duration``, and Countersign takes the change back when
    it ends.
    """
    if duration is not None:
        params = {**params, "duration": duration}
    body: dict[str, Any] = {"action_type": action_type, "params": params, "summary": summary}
    context = dict(context or {})
    if reasoning:
        context["reasoning"] = reasoning
    if context:
        body["context"] = context
    if on_behalf_of:
        body["on_behalf_of"] = on_behalf_of
    if callback_url:
        body["callback_url"] = callback_url
    if expires_in is not None:
        body["expires_in"] = expires_in
    if trace_url:
        body["trace_url"] = trace_url
    if run_id:
        body["run_id"] = run_id
    if confidence is not None:
        body["confidence"] = confidence
    body["idempotency_key"] = idempotency_key or str(uuid.uuid4())
    return body


def _answer(action: Action) -> str:
    comments = action.decision.comments if action.decision else []
    return "\n\n".join(comments)


class _Base:
    def __init__(self, base_url: str | None, api_key: str | None, timeout: float) -> None:
        base_url = base_url or os.environ.get("COUNTERSIGN_URL")
        api_key = api_key or os.environ.get("COUNTERSIGN_API_KEY")
        if not base_url:
            raise ValueError("Countersign's base URL is required (argument, or COUNTERSIGN_URL).")
        if not api_key:
            raise ValueError("An agent key is required (argument, or COUNTERSIGN_API_KEY).")
        base_url = base_url.rstrip("/")
        base_url = base_url.removesuffix("/api/v1")
        self.base_url = base_url
        self.timeout = timeout
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": f"countersign-python/{VERSION}",
        }

    @staticmethod
    def _path(action_id: str, suffix: str = "") -> str:
        return f"/api/v1/actions/{action_id}{suffix}"

    @staticmethod
    def _wait_args(until: str, timeout: float | None, poll: float) -> None:
        if until not in UNTIL:
            raise ValueError(f"until must be one of {UNTIL}")
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be >= 0 (or None to wait for ever)")
        if not 0 < poll <= MAX_SERVER_WAIT:
            raise ValueError(f"poll must be in (0, {MAX_SERVER_WAIT:g}]")


class Countersign(_Base):
    """Blocking client.

    >>> cs = Countersign("https://countersign.internal", "cs_...")
    >>> action = cs.propose("decision.only", {"command": "restart"}, "Restart billing")
    >>> cs.wait(action.id, until="decision")  # raises Rejected with the reviewer's reason
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout)
        self._http = http_client or httpx.Client(timeout=timeout)
        self._owns_http = http_client is None

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Countersign:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport ---------------------------------------------------------------

    def _send(self, method: str, path: str, *, timeout: float | None = None, **kw: Any) -> httpx.Response:
        return self._http.request(
            method, self.base_url + path, headers=self._headers, timeout=timeout or self.timeout, **kw
        )

    def _request(self, method: str, path: str, *, retry: bool, **kw: Any) -> Any:
        attempt = 0
        while True:
            try:
                response = self._send(method, path, **kw)
                if retry and response.status_code >= 500:
                    raise _Retryable(response)
            except (httpx.TransportError, _Retryable) as exc:
                if not retry or attempt >= RETRIES:
                    raise _unavailable(exc) from exc
                time.sleep(backoff(attempt))
                attempt += 1
                continue
            except _HTTP_FAILURES as exc:
                raise _failed(exc) from exc
            raise_for_problem(response)
            return _json(response)

    # --- the API -----------------------------------------------------------------

    def action_types(self) -> list[ActionType]:
        """The action types this agent may propose, with their parameters' JSON Schema."""
        return [ActionType.from_json(t) for t in self._request("GET", "/api/v1/action-types", retry=True)]

    def gateway_tools(self) -> list[dict[str, Any]]:
        """The MCP tools Countersign is the gateway to that this agent may call (GET /api/v1/mcp/tools): each with
        ``name`` (``<server>.<tool>``), ``server``, ``tool``, ``description``, ``input_schema``, ``annotations``."""
        return self._request("GET", "/api/v1/mcp/tools", retry=True)["tools"]

    def propose(self, action_type: str, params: dict[str, Any], summary: str, **options: Any) -> Action:
        """Propose an action; returns it (pending, or already decided by a policy).

        Options: ``context``, ``reasoning`` (goes into ``context.reasoning``),
        ``on_behalf_of``, ``idempotency_key``, ``callback_url``, ``expires_in``, ``trace_url``, ``run_id``,
        ``confidence``, ``duration`` (time-boxed access: seconds or ISO 8601, e.g. ``"PT2H"``).
        """
        body = proposal_body(action_type, params, summary, **options)
        return Action.from_json(self._request("POST", "/api/v1/actions", retry=True, json=body))

    def extend(self, action_id: str, duration: int | str, summary: str | None = None) -> Action:
        """Ask for more time on time-boxed access this agent was granted (still active): returns the extension,
        a new action that needs the same approvals as the grant; ``wait`` on it like any action."""
        body: dict[str, Any] = {"duration": duration}
        if summary:
            body["summary"] = summary
        return Action.from_json(self._request("POST", self._path(action_id, "/extend"), retry=False, json=body))

    def get(self, action_id: str) -> Action:
        return Action.from_json(self._request("GET", self._path(action_id), retry=True))

    def cancel(self, action_id: str) -> Action:
        """Withdraw a pending action (``Conflict`` if it is no longer pending)."""
        return Action.from_json(self._request("POST", self._path(action_id, "/cancel"), retry=False))

    def actions(self, status: str | None = None) -> Iterator[Action]:
        """This agent's actions, newest first, following the cursor across pages."""
        url: str | None = "/api/v1/actions" + (f"?status={status}" if status else "")
        while url:
            page = self._request("GET", url, retry=True)
            yield from (Action.from_json(a) for a in page["results"])
            url = page.get("next") and httpx.URL(page["next"]).raw_path.decode()

    def wait(
        self,
        action_id: str,
        *,
        timeout: float | None = DEFAULT_WAIT,
        until: str = "completion",
        check: bool = True,
        poll: float = 30.0,
    ) -> Action:
        """Block until the action is decided (``until="decision"``) or finished (``"completion"``).

        Long-polls ``/wait`` in rounds of at most ``poll`` seconds, retrying
        network errors and 5xx with backoff, until ``timeout`` seconds in all
        (None: no limit); then ``WaitTimeout`` (its ``action`` is the last state
        seen) or ``Unavailable`` if Countersign could not be reached. With
        ``check`` (the default) an outcome without approval raises ``Rejected``,
        ``Expired``, ``Cancelled``, ``ExecutionFailed`` (known not to have taken effect) or
        ``OutcomeUnknown`` (interrupted, may have taken effect: check the target before retrying).
        """
        self._wait_args(until, timeout, poll)
        deadline = None if timeout is None else time.monotonic() + timeout
        attempt, last = 0, None
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            server_wait = poll if remaining is None else min(poll, remaining)
            try:
                response = self._send(
                    "GET",
                    self._path(action_id, "/wait"),
                    params={"timeout": f"{server_wait:.3f}", "until": until},
                    timeout=server_wait + self.timeout,
                )
                if response.status_code >= 500:
                    raise _Retryable(response)
            except (httpx.TransportError, _Retryable) as exc:
                if remaining == 0:
                    raise _unavailable(exc) from exc
                time.sleep(_pause(backoff(attempt), deadline))
                attempt += 1
                continue
            except _HTTP_FAILURES as exc:
                raise _failed(exc) from exc
            if response.status_code == 429 and remaining != 0:
                time.sleep(_pause(_retry_after(response) or backoff(attempt), deadline))
                attempt += 1
                continue
            raise_for_problem(response)
            attempt, last = 0, Action.from_json(_json(response))
            if _done(last, until):
                return _settle(last, check)
            if deadline is not None and time.monotonic() >= deadline:
                raise errors.WaitTimeout(f"Still {last.status} after {timeout:g} s.", action=last)

    def ask(
        self, question: str, *, subject: str | None = None, timeout: float | None = DEFAULT_WAIT, **options: Any
    ) -> str:
        """Ask a person (a ``human.question``); returns the reviewer's answer as text.

        A declined question raises ``Rejected`` with the reviewer's reason.
        """
        params: dict[str, Any] = {"question": question}
        if subject:
            params["subject"] = subject
        action = self.propose("human.question", params, (subject or question)[:280], **options)
        return _answer(self.wait(action.id, timeout=timeout, until="decision"))


class AsyncCountersign(_Base):
    """The same client for asyncio: every method is a coroutine (``actions`` an async iterator).

    One instance serves any number of event loops (a module-level client used by several ``asyncio.run`` calls,
    or by threads that each run a loop): its HTTP connections are made lazily, one pool per running loop, because
    an ``httpx.AsyncClient``'s connections belong to the loop that opened them and die with it. ``aclose()`` (or
    leaving ``async with``) closes the current loop's pool; the instance stays usable and opens a new one on the
    next call. A given ``http_client`` is used as is, on the caller's loop, and never closed by this client.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout)
        self._given_http = http_client
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._pools_lock = threading.Lock()  # threads running their own loops share one instance

    def _http(self) -> httpx.AsyncClient:
        """The HTTP client for the running loop, made on first use in that loop."""
        if self._given_http is not None:
            return self._given_http
        loop = asyncio.get_running_loop()
        with self._pools_lock:
            # A closed loop's pool cannot be closed any more (its sockets went with the loop): forget it.
            for old in [other for other in self._pools if other.is_closed()]:
                del self._pools[old]
            client = self._pools.get(loop)
            if client is None or client.is_closed:
                client = self._pools[loop] = httpx.AsyncClient(timeout=self.timeout)
            return client

    async def aclose(self) -> None:
        """Close this loop's connections (a given ``http_client`` is the caller's to close)."""
        if self._given_http is not None:
            return
        with self._pools_lock:
            client = self._pools.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> AsyncCountersign:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, method: str, path: str, *, timeout: float | None = None, **kw: Any) -> httpx.Response:
        return await self._http().request(
            method, self.base_url + path, headers=self._headers, timeout=timeout or self.timeout, **kw
        )

    async def _request(self, method: str, path: str, *, retry: bool, **kw: Any) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._send(method, path, **kw)
                if retry and response.status_code >= 500:
                    raise _Retryable(response)
            except (httpx.TransportError, _Retryable) as exc:
                if not retry or attempt >= RETRIES:
                    raise _unavailable(exc) from exc
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            except _HTTP_FAILURES as exc:
                raise _failed(exc) from exc
            raise_for_problem(response)
            return _json(response)

    async def action_types(self) -> list[ActionType]:
        return [ActionType.from_json(t) for t in await self._request("GET", "/api/v1/action-types", retry=True)]

    async def gateway_tools(self) -> list[dict[str, Any]]:
        """See ``Countersign.gateway_tools``."""
        return (await self._request("GET", "/api/v1/mcp/tools", retry=True))["tools"]

    async def propose(self, action_type: str, params: dict[str, Any], summary: str, **options: Any) -> Action:
        body = proposal_body(action_type, params, summary, **options)
        return Action.from_json(await self._request("POST", "/api/v1/actions", retry=True, json=body))

    async def extend(self, action_id: str, duration: int | str, summary: str | None = None) -> Action:
        """See ``Countersign.extend``."""
        body: dict[str, Any] = {"duration": duration}
        if summary:
            body["summary"] = summary
        path = self._path(action_id, "/extend")
        return Action.from_json(await self._request("POST", path, retry=False, json=body))

    async def get(self, action_id: str) -> Action:
        return Action.from_json(await self._request("GET", self._path(action_id), retry=True))

    async def cancel(self, action_id: str) -> Action:
        return Action.from_json(await self._request("POST", self._path(action_id, "/cancel"), retry=False))

    async def actions(self, status: str | None = None) -> AsyncIterator[Action]:
        url: str | None = "/api/v1/actions" + (f"?status={status}" if status else "")
        while url:
            page = await self._request("GET", url, retry=True)
            for item in page["results"]:
                yield Action.from_json(item)
            url = page.get("next") and httpx.URL(page["next"]).raw_path.decode()

    async def wait(
        self,
        action_id: str,
        *,
        timeout: float | None = DEFAULT_WAIT,
        until: str = "completion",
        check: bool = True,
        poll: float = 30.0,
    ) -> Action:
        """See ``Countersign.wait``."""
        self._wait_args(until, timeout, poll)
        deadline = None if timeout is None else time.monotonic() + timeout
        attempt, last = 0, None
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            server_wait = poll if remaining is None else min(poll, remaining)
            try:
                response = await self._send(
                    "GET",
                    self._path(action_id, "/wait"),
                    params={"timeout": f"{server_wait:.3f}", "until": until},
                    timeout=server_wait + self.timeout,
                )
                if response.status_code >= 500:
                    raise _Retryable(response)
            except (httpx.TransportError, _Retryable) as exc:
                if remaining == 0:
                    raise _unavailable(exc) from exc
                await asyncio.sleep(_pause(backoff(attempt), deadline))
                attempt += 1
                continue
            except _HTTP_FAILURES as exc:
                raise _failed(exc) from exc
            if response.status_code == 429 and remaining != 0:
                await asyncio.sleep(_pause(_retry_after(response) or backoff(attempt), deadline))
                attempt += 1
                continue
            raise_for_problem(response)
            attempt, last = 0, Action.from_json(_json(response))
            if _done(last, until):
                return _settle(last, check)
            if deadline is not None and time.monotonic() >= deadline:
                raise errors.WaitTimeout(f"Still {last.status} after {timeout:g} s.", action=last)

    async def ask(
        self, question: str, *, subject: str | None = None, timeout: float | None = DEFAULT_WAIT, **options: Any
    ) -> str:
        params: dict[str, Any] = {"question": question}
        if subject:
            params["subject"] = subject
        action = await self.propose("human.question", params, (subject or question)[:280], **options)
        return _answer(await self.wait(action.id, timeout=timeout, until="decision"))
