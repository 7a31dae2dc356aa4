"""Waiting for an action to change: the agent's ``wait`` long-poll and the gateway's held call.

Both read the action, and read it again each time its channel-layer group hears of a change, until what they read
is settled or their time is up; neither holds a thread or a database connection while it waits. The group is joined
*before* the first read, so a change between that read and the wait is not missed. Without the channel layer
(Redis down, or lost mid-wait) they poll the database instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from channels.layers import get_channel_layer

from approvals.live.events import action_group

POLL_SECONDS = 1.0  # without a channel layer, the action is read again this often
log = logging.getLogger(__name__)
Read = TypeVar("Read")


async def until_settled(
    action_id, *, timeout: float, read: Callable[[], Awaitable[Read]], settled: Callable[[Read], bool]
) -> Read:
    """``read()`` now and after each change of the action, until ``settled`` says so or ``timeout`` seconds have
    passed; returns the last read."""
    layer = get_channel_layer()
    group = action_group(action_id)
    channel = None
    try:
        channel = await layer.new_channel()  # the pub/sub layer subscribes here already
        await layer.group_add(group, channel)
    except Exception as exc:  # the channel layer (Redis) is down: poll the database instead
        log.warning("waiting for %s: channel layer unavailable (%s); polling", action_id, type(exc).__name__)
        channel = None
    try:
        deadline = time.monotonic() + timeout
        while True:
            found = await read()
            remaining = deadline - time.monotonic()
            if settled(found) or remaining <= 0:
                return found
            if channel is None:
                await asyncio.sleep(min(POLL_SECONDS, remaining))
                continue
            # On timeout, loop once more and answer with the current state.
            try:
                await asyncio.wait_for(layer.receive(channel), timeout=remaining)
            except TimeoutError:
                pass
            except Exception as exc:  # the layer went away mid-wait: poll for the rest of it
                log.warning("waiting for %s: channel layer lost (%s); polling", action_id, type(exc).__name__)
                channel = None
    finally:
        if channel is not None:
            with contextlib.suppress(Exception):
                await layer.group_discard(group, channel)
