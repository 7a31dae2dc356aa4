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

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

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


def hit(key_id: str, scope: str) -> float | None:
    """Count one request; None if it is within the budget, else seconds until the window resets."""
    rate = rate_for(scope)
    now = time.time()
    window = int(now // rate.period)
    name = f"ratelimit:{scope}:{key_id}:{window}"
    try:
        cache.add(name, 0, timeout=rate.period + 1)
        try:
            count = cache.incr(name)
        except ValueError:  # expired between add and incr
            cache.add(name, 1, timeout=rate.period + 1)
            count = 1
    except Exception as exc:
        # The shared cache (Redis) is down: fail open. Proposals and decisions only need the database, and
        # a Redis outage must not turn every agent request into a 500 (docs/RELIABILITY.md).
        log.warning("rate limit %s not counted (cache unreachable: %s); request allowed", scope, type(exc).__name__)
        return None
    if count <= rate.limit:
        return None
    return max(1.0, math.ceil((window + 1) * rate.period - now))
