"""Live events: what a push says, and which channel-layer groups hear it.

A push carries only ids and status; pages fetch what they show through
their own authenticated request, so a push never leaks more than the
recipient could read anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, TypedDict

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.conf import settings

from approvals.models import OutboxMessage


class ActionEvent(TypedDict):
    action_id: str
    status: str
    approvals: int
    required_approvals: int
    reviewer_group_id: int | None


STAFF_GROUP = "queue-staff"


def action_group(action_id) -> str:
    return f"action-{action_id}"


def reviewer_group(group_id: int) -> str:
    return f"queue-group-{group_id}"


def groups_for(event: ActionEvent) -> list[str]:
    groups = [action_group(event["action_id"]), STAFF_GROUP]
    if event["reviewer_group_id"] is not None:
        groups.append(reviewer_group(event["reviewer_group_id"]))
    return groups


def send_to_groups(groups: Iterable[str], message: dict[str, Any]) -> None:
    """Send ``message`` to every socket in ``groups``, from synchronous code, in one round trip to Redis.

    On the pub/sub layer (config/settings/base.py) a group is a Redis channel named after it, and a message is
    published there as the layer serialises it: this sends those same bytes to those same channels, pipelined, on a
    client of its own. ``group_send`` is a coroutine per group that a synchronous caller reaches through
    async_to_sync's hop to an event loop, then the layer's lock per connection: those took 12% of a proposal's CPU
    (docs/BENCHMARKS.md). tests/web/test_live_publish.py checks a subscriber hears the same thing either way.
    """
    layer = get_channel_layer()
    groups = list(groups)
    if not isinstance(layer, RedisPubSubChannelLayer):  # another layer, configured by hand: its own way

        async def send_each() -> None:
            for group in groups:
                await layer.group_send(group, message)

        async_to_sync(send_each)()
        return
    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    payload = layer.serialize(message)
    with _publisher().pipeline(transaction=False) as pipe:
        for group in groups:
            pipe.publish(f"{config.get('prefix', 'asgi')}__group__{group}", payload)
        pipe.execute()


_publisher_lock = threading.Lock()
_publisher_client: redis.Redis | None = None


def _publisher() -> redis.Redis:
    """One client per process, on the layer's Redis with its options (timeouts, the retry after a restart)."""
    global _publisher_client
    with _publisher_lock:
        if _publisher_client is None:
            (host,) = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
            options = dict(host) if isinstance(host, dict) else {"address": host}
            _publisher_client = redis.Redis.from_url(options.pop("address"), **options)
        return _publisher_client


# --- catching up after a reconnect -----------------------------------------------------------
#
# Every push is an OutboxMessage row; its id is the ``seq`` a page last heard. A page that
# (re)connects says ``resume`` with it and is sent what it missed, filtered like the live
# groups filter. A transaction can commit after one with a higher id, so rows written up to
# REPLAY_OVERLAP before the last one heard are sent again (pages ignore a seq they have seen).

REPLAY_MAX = 200
REPLAY_OVERLAP_SECONDS = 10
REPLAY_OVERLAP_ROWS = 50


def newest_push_seq() -> int:
    """The id of the newest push (0: none yet): a page drawn now catches up from there (``missed_events``).

    One read of the primary key index's end per page. Kept out of the push path on purpose: remembering it as
    each push commits would cost every proposal and decision a cache write, to spare a reviewer's page a read.
    """
    return (
        OutboxMessage.objects.filter(kind=OutboxMessage.Kind.PUSH).order_by("-id").values_list("id", flat=True).first()
        or 0
    )


def missed_events(*, staff: bool, group_ids: set[int], since: int) -> tuple[list[dict], bool]:
    """Pushes after ``since`` that this reviewer's groups heard; (events, complete).

    Not complete (the page should re-read everything) when more were missed than
    REPLAY_MAX or the row ``since`` names is unknown.
    """
    pushes = OutboxMessage.objects.filter(kind=OutboxMessage.Kind.PUSH)
    if not staff:
        pushes = pushes.filter(payload__reviewer_group_id__in=sorted(group_ids))
    every = OutboxMessage.objects.filter(kind=OutboxMessage.Kind.PUSH)
    anchor = every.filter(id=since).values_list("created_at", flat=True).first() if since > 0 else None
    if since > 0 and anchor is None:
        # The row it names is unknown (pruned, or made up): what was missed cannot be told apart.
        return [], not every.filter(id__gt=since).exists()
    rows = list(pushes.filter(id__gt=since).order_by("id").values_list("id", "payload")[: REPLAY_MAX + 1])
    complete = len(rows) <= REPLAY_MAX
    rows = rows[:REPLAY_MAX]
    if anchor is not None:
        # Read backwards by id (the index), a bounded number of rows, and keep the recent ones.
        overlap = anchor - timedelta(seconds=REPLAY_OVERLAP_SECONDS)
        recent = pushes.filter(id__lte=since).order_by("-id").values_list("id", "payload", "created_at")
        late = [(seq, payload) for seq, payload, at in recent[:REPLAY_OVERLAP_ROWS] if at >= overlap]
        rows = sorted(late) + rows if late else rows
    return [{**payload, "seq": seq} for seq, payload in rows], complete
