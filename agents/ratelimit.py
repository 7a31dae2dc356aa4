"""Requests per agent key, in fixed windows counted in the shared cache.

A runaway agent must not be able to flood reviewers (proposals) or the
service (everything else), so each key has two budgets. Counting happens in
the cache every web process shares (Redis in production; the embedded
default has a single web process and uses local memory), in batches (below).
"""

from __future__ import annotations

import logging
import math
import threading
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
    for scope in scopes:
        rate = rate_for(scope)
        window = int(now // rate.period)
        try:
            allowed = _take(f"ratelimit:{scope}:{key_id}:{window}", rate, window)
        except Exception as exc:
            # The shared cache (Redis) is down: fail open. Proposals and decisions only need the database, and
            # a Redis outage must not turn every agent request into a 500 (docs/RELIABILITY.md).
            log.warning("rate limit not counted (cache unreachable: %s); request allowed", type(exc).__name__)
            return None
        if not allowed:
            return max(1.0, math.ceil((window + 1) * rate.period - now))
    return None


# Counting in batches. A web process does not ask Redis about every request: it takes a batch of a budget
# (a twentieth of it, at most RESERVATION_MAX requests) and spends it locally until it runs out, so a key's requests
# cost one Redis round trip per batch. What Redis hands out never exceeds the budget, so no key ever gets more than its
# limit across all processes; a key can be refused slightly early, by what other processes hold unspent in the same
# window (at most one batch each, minus one). The window is the budget's fixed window, as before.
RESERVATION_SHARE = 20
RESERVATION_MAX = 100
_RESERVE_SCRIPT = """
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if total == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
local before = total - tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if before >= limit then return 0 end
return math.min(tonumber(ARGV[1]), limit - before)
"""
_held: dict[tuple[str, Rate], tuple[int, int]] = {}  # (counter name, rate) -> (window, requests left in the batch)
_held_lock = threading.Lock()


def batch_size(rate: Rate) -> int:
    return max(1, min(rate.limit // RESERVATION_SHARE, RESERVATION_MAX))


def _take(name: str, rate: Rate, window: int) -> bool:
    """Spend one request of the budget ``name`` names: from this process's batch, or from a new one."""
    with _held_lock:
        held_window, left = _held.get((name, rate), (window, 0))
        if held_window == window and left > 0:
            _held[(name, rate)] = (window, left - 1)
            return True
        if len(_held) > 10_000:  # batches of windows that have ended
            for stale in [k for k, (w, _) in _held.items() if w != window]:
                del _held[stale]
    granted = _reserve(name, rate, batch_size(rate))
    if granted <= 0:
        return False
    with _held_lock:
        _, left = _held.get((name, rate), (window, 0))
        _held[(name, rate)] = (window, left + granted - 1)
    return True


def spend_held(key_id: str, scope: str) -> bool:
    """Count one request against ``scope`` from this process's batch alone, without asking the shared cache: False
    when the batch is spent (or was never taken), and then nothing is counted: the caller takes the way through
    ``hit``, which asks Redis for the next batch or refuses (approvals.api.agent_reads)."""
    rate = rate_for(scope)
    window = int(time.time() // rate.period)
    name = f"ratelimit:{scope}:{key_id}:{window}"
    with _held_lock:
        held_window, left = _held.get((name, rate), (window, 0))
        if held_window != window or left <= 0:
            return False
        _held[(name, rate)] = (window, left - 1)
        return True


def _reserve(name: str, rate: Rate, size: int) -> int:
    """Requests granted of ``size`` asked for, 0 when the budget is spent (in the shared cache)."""
    cache = caches["default"]
    if not isinstance(cache, RedisCache):  # the embedded default: a local-memory cache in one process
        cache.add(name, 0, timeout=rate.period + 1)
        try:
            total = cache.incr(name, size)
        except ValueError:  # expired between add and incr
            cache.add(name, size, timeout=rate.period + 1)
            total = size
        return max(0, min(size, rate.limit - (total - size)))
    # The cache's own client (its pool is the process's, config/cache.py): Django's cache API has no scripts.
    client = cache._cache.get_client(write=True)
    granted = _reserve_script(client)(
        keys=[cache.make_key(name)], args=[size, rate.limit, rate.period + 1], client=client
    )
    return int(granted)


_script: Script | None = None


def _reserve_script(client: redis.Redis) -> Script:
    """The script, registered once (it is run by its SHA, and loaded again by redis-py if Redis lost it)."""
    global _script
    if _script is None:
        _script = client.register_script(_RESERVE_SCRIPT)
    return _script
