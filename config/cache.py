"""One Redis connection pool per process for Django's cache.

Under ASGI, Django keeps a cache object per request context (asgiref's ``Local``), and Django's Redis cache
keeps its connection pool on that object: every request that touched the cache (each agent request counts
its rate limits there) opened a new connection to Redis: more than half of the rate limiter's time
(docs/BENCHMARKS.md, section 1). ``CACHES[...]["OPTIONS"]["pool_class"]`` names this class, whose
``from_url`` hands every cache object of the process the same pool for the same server and options.
redis-py's pool notices a fork and starts afresh in the child (Celery's prefork workers).
"""

from __future__ import annotations

import threading
from typing import Any

import redis


class ProcessConnectionPool(redis.ConnectionPool):
    _pools: dict[tuple[str, str], redis.ConnectionPool] = {}
    _lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> redis.ConnectionPool:
        key = (url, repr(sorted(kwargs.items())))
        with cls._lock:
            if key not in cls._pools:
                cls._pools[key] = super().from_url(url, **kwargs)
            return cls._pools[key]
