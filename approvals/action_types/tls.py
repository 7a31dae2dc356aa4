"""One TLS context per process for Countersign's outgoing HTTPS (executors, previews, webhooks)."""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def client_tls() -> ssl.SSLContext:
    """What httpx builds for each new client (verify against the certifi bundle, ignore the environment),
    built once: loading the CA bundle took about 50 ms, longer than the requests it verifies
    (docs/BENCHMARKS.md, "Approve -> execute"). An SSLContext is safe to share between threads."""
    return httpx.create_ssl_context(trust_env=False)
