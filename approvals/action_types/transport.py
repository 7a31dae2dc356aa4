"""The one HTTP client executors, previews and webhooks send with, and how its failures are told.

Every request goes out on a fresh connection with the same hardened options (no redirects, no proxy or CA
settings from the environment, Countersign's TLS context, ``COUNTERSIGN_HTTP_TIMEOUT_SECONDS``). A failure is
sorted by what it says about the target: one that happened before the request could leave (connection refused,
DNS, TLS handshake, connect timeout) is a plain ``ExecutionError`` (the action did not happen); one after the
connection was made (no answer in time, the connection dropped, a garbled answer) may have reached a target that
acted on it, so a request that can change something raises it with ``outcome_unknown`` and the action ends
``unknown`` (approvals.services.execution). A GET changes nothing, so its failure is always a plain one.
"""

from __future__ import annotations

import httpx
from django.conf import settings

from approvals.action_types.tls import client_tls
from catalog.base import ExecutionError

# Raised before any byte of the request reached the target: nothing can have happened there.
NOT_SENT = (
    httpx.ConnectError,  # refused, unreachable, DNS, TLS handshake
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,  # the request was refused by our own HTTP stack before it was written
)
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def may_have_reached_target(exc: httpx.HTTPError) -> bool:
    """Whether the request may have been received by the target when ``exc`` was raised."""
    return not isinstance(exc, NOT_SENT)


def hardened_client() -> httpx.Client:
    """A client with Countersign's outgoing options (use it as a context manager: one connection per use)."""
    return httpx.Client(
        timeout=settings.COUNTERSIGN_HTTP_TIMEOUT_SECONDS,
        follow_redirects=False,
        trust_env=False,
        verify=client_tls(),
    )


def send(method: str, url: httpx.URL | str, *, what: str, **request) -> httpx.Response:
    """One request; ``what`` names the target in the error (e.g. "the SCIM server at https://idp/scim/v2").

    Raises ExecutionError (``permanent=False``): ``outcome_unknown`` when the request may have reached the
    target and could change something there.
    """
    try:
        with hardened_client() as client:
            return client.request(method, url, **request)
    except httpx.HTTPError as exc:
        raise transport_error(exc, method=method, what=what) from None


def transport_error(exc: httpx.HTTPError, *, method: str, what: str) -> ExecutionError:
    name = type(exc).__name__
    if may_have_reached_target(exc) and method.upper() not in READ_ONLY_METHODS:
        return ExecutionError(
            f"{method.upper()} to {what} was sent but no answer came back ({name}): it may have taken effect",
            permanent=False,
            outcome_unknown=True,
            details={"transport_error": name},
        )
    if may_have_reached_target(exc):
        return ExecutionError(f"{method.upper()} to {what} got no answer ({name})", permanent=False)
    return ExecutionError(f"could not reach {what} ({name})", permanent=False)
