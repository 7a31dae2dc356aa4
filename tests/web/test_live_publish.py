"""A push sent from synchronous code (approvals.live.events.send_to_groups) is what channels-redis would send.

The dispatcher publishes on the pub/sub layer's channels itself, pipelined, instead of one ``group_send`` per group
through an event loop. A subscriber must not be able to tell: same channel names, same bytes, every group. If an
upgrade of channels-redis changed either, this fails (the live tests in test_live.py then show the sockets deaf).
"""

from __future__ import annotations

import time

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import channel_layers, get_channel_layer
from django.conf import settings

from approvals.live.events import STAFF_GROUP, action_group, reviewer_group, send_to_groups

GROUPS = [action_group("9b2f6c1e-0000-4000-8000-000000000001"), STAFF_GROUP, reviewer_group(7)]
MESSAGE = {"type": "action.event", "event": {"action_id": "9b2f…", "status": "pending", "seq": 12, "note": "é"}}


def heard(send) -> list[tuple[str, bytes]]:
    """What a raw Redis subscriber to every group's channel hears while ``send`` runs."""
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
    client = redis.Redis.from_url(settings.COUNTERSIGN_CHANNEL_REDIS_URL)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(*[f"{prefix}__group__{group}" for group in GROUPS])
    try:
        send()
        got: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + 5
        while len(got) < len(GROUPS) and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message:
                got.append((message["channel"].decode(), message["data"]))
        return got
    finally:
        pubsub.close()
        client.close()


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def test_every_group_hears_the_bytes_group_send_would_publish():
    def by_channels_redis() -> None:
        layer = get_channel_layer()

        async def each() -> None:
            for group in GROUPS:
                await layer.group_send(group, MESSAGE)

        async_to_sync(each)()

    expected = heard(by_channels_redis)
    assert len(expected) == len(GROUPS)
    assert heard(lambda: send_to_groups(GROUPS, MESSAGE)) == expected


def test_a_socket_in_a_group_receives_the_message():
    layer = get_channel_layer()

    async def listen() -> dict:
        import asyncio

        channel = await layer.new_channel()
        await layer.group_add(STAFF_GROUP, channel)
        try:
            await asyncio.sleep(0.1)  # the subscription reaches Redis
            await asyncio.get_running_loop().run_in_executor(None, send_to_groups, [STAFF_GROUP], MESSAGE)
            return await asyncio.wait_for(layer.receive(channel), timeout=5)
        finally:
            await layer.group_discard(STAFF_GROUP, channel)

    assert async_to_sync(listen)() == MESSAGE
