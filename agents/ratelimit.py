"""Requests per agent key, in fixed windows counted in the shared cache.

A runaway agent must not be able to flood reviewers (proposals) or the
service (everything else), so each key has two budgets. Counting happens in
the cache every web process shares (Redis in production; the embedded
default has a single web process and uses local memory).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.core.exceptions import ImproperlyConfigured
from redis.commands.core import Script

log = logging.getLogger(__name__)

PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


@dataclass(frozen=True)
class Rate:
    limit: int
    period: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        count, _, unit = text.partition("/")
        try:
            rate = cls(int(count), PERIODS[unit.strip().lower()])
        except (ValueError, KeyError):
            raise ImproperlyConfigured(f"rate {text!r} is not like '30/min'") from None
        if rate.limit < 1:
            raise ImproperlyConfigured(f"rate {text!r} must allow at least one request")
        return rate


def rate_for(scope: str) -> Rate:
    return Rate.parse(settings.COUNTERSIGN_AGENT_RATES[scope])


def hit(key_id: str, *scopes: str) -> float | None:
    """Count one request against each budget; None if within all of them, else seconds until the window of
    the first budget it exceeds resets (the budgets after that one are not counted)."""
    now = time.time()
    budgets = [(scope, rate_for(scope)) for scope in scopes]
    names = [f"ratelimit:{scope}:{key_id}:{int(now // rate.period)}" for scope, rate in budgets]
    try:
        exceeded = _count(names, [rate for _, rate in budgets])
    except Exception as exc:
        # The shared cache (Redis) is down: fail open. Proposals and decisions only need the database, and
        # a Redis outage must not turn every agent request into a 500 (docs/RELIABILITY.md).
        log.warning("rate limit not counted (cache unreachable: %s); request allowed", type(exc).__name__)
        return None
    if exceeded is None:
        return None
    rate = budgets[exceeded][1]
    return max(1.0, math.ceil((int(now // rate.period) + 1) * rate.period - now))


# Every agent request counts against its budgets before anything else happens, so with Redis they are counted
# in one round trip (a script, atomic per budget) instead of an add and an incr per budget through the cache API.
_COUNT_SCRIPT = """
for i, key in ipairs(KEYS) do
    local count = redis.call('INCR', key)
    if count == 1 then redis.call('EXPIRE', key, ARGV[2 * i]) end
    if count > tonumber(ARGV[2 * i - 1]) then return i end
end
return 0
"""


def _count(names: list[str], rates: list[Rate]) -> int | None:
    """Index of the first budget over its limit, or None."""
    cache = caches["default"]
    if not isinstance(cache, RedisCache):  # the embedded default: a local-memory cache in one process
        for index, (name, rate) in enumerate(zip(names, rates, strict=True)):
            cache.add(name, 0, timeout=rate.period + 1)
            try:
                count = cache.incr(name)
            except ValueError:  # expired between add and incr
                cache.add(name, 1, timeout=rate.period + 1)
                count = 1
            if count > rate.limit:
                return index
        return None
    args: list[int] = []
    for rate in rates:
        args += [rate.limit, rate.period + 1]
    # The cache's own client (its pool is the process's, config/cache.py): Django's cache API has no scripts.
    client = cache._cache.get_client(write=True)
    exceeded = _count_script(client)(keys=[cache.make_key(name) for name in names], args=args, client=client)
    return int(exceeded) - 1 if exceeded else None


_script: Script | None = None


def _count_script(client: redis.Redis) -> Script:
    """The script, registered once (it is run by its SHA, and loaded again by redis-py if Redis lost it)."""
    global _script
    if _script is None:
        _script = client.register_script(_COUNT_SCRIPT)
    return _script
