"""Waiting for something that can be observed, instead of sleeping and hoping it happened.

``wait_until`` (tests/support/servers.py) polls a condition until a deadline. What is here names conditions the
tests wait on often: a long-poll (``GET /api/v1/actions/{id}/wait``) is listening once its channel-layer group has a
subscriber in Redis, which is when a decision is sure to wake it rather than its timeout.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import redis
from django.conf import settings

from tests.support.servers import wait_until


def group_subscribers(group: str, redis_url: str | None = None) -> int:
    """How many connections listen to a channel-layer group: the pub/sub layer subscribes one Redis channel per
    group, named with the prefix config/settings/base.py derives from the Redis database number."""
    if redis_url is None:  # this process's layer
        url, prefix = settings.COUNTERSIGN_CHANNEL_REDIS_URL, settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
    else:  # a server started on another Redis URL
        url, prefix = redis_url, f"countersign.db{urlsplit(redis_url).path.strip('/') or '0'}."
    [(_, count)] = redis.Redis.from_url(url).pubsub_numsub(f"{prefix}__group__{group}")
    return count


def wait_for_waiter(action_id, redis_url: str | None = None, timeout: float = 15.0) -> None:
    """Return once a long-poll on ``action_id`` has joined the action's group (approvals/api/wait.py)."""
    wait_until(
        lambda: group_subscribers(f"action-{action_id}", redis_url) > 0,
        timeout=timeout,
        message=f"a wait on action {action_id} to subscribe",
    )
