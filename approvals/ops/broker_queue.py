"""What the Celery broker holds, read from Redis the way kombu's Redis transport stores it.

A task handed to the broker is a JSON message LPUSHed onto the queue's list (``celery``); a worker BRPOPs it
and, in the same breath, files it in the ``unacked`` hash until it acknowledges it (after the task ran: acks
late). A task a dead worker held stays in that hash until the visibility timeout puts it back on the list. So a
task is still somewhere on its way to a worker while its id is in the list or in the hash; in neither, it is
gone (Redis restarted without persistence, or flushed). The ``unacked_index`` sorted set says when a worker took
each delivered task, which tells a task being run from one a dead worker took and never started. Production and
embedded mode use this same transport.

The scan is bounded: a queue or hash longer than ``SCAN_LIMIT`` answers "cannot tell", and so does a Redis that
cannot be read; a caller then assumes nothing is lost.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

SCAN_LIMIT = 5000


def tasks_held(task_ids: set[str]) -> dict[str, float | None] | None:
    """Which of ``task_ids`` the broker holds: task id -> None while it is queued, or the time (epoch seconds) a
    worker took it while it is delivered and unacknowledged. None if the broker cannot tell."""
    if not task_ids:
        return {}
    from config.celery_app import app

    try:
        with app.connection_for_read() as connection:
            channel = connection.default_channel
            unacked_key = getattr(channel, "unacked_key", None)
            if unacked_key is None:
                return None  # not kombu's Redis transport: nothing here to read
            client = channel.client
            queue = app.conf.task_default_queue
            queued, held = client.pipeline().llen(queue).hlen(unacked_key).execute()
            if queued > SCAN_LIMIT or held > SCAN_LIMIT:
                return None
            waiting, delivered, taken_at = (
                client.pipeline()
                .lrange(queue, 0, -1)
                .hgetall(unacked_key)
                .zrange(channel.unacked_index_key, 0, -1, withscores=True)
                .execute()
            )
    except Exception as exc:  # the broker is down or unreadable: say so, and let the caller assume nothing
        log.warning("could not read the broker's queue (%s: %s)", type(exc).__name__, exc)
        return None
    # The task id is a JSON string in the message's headers ("id") and properties ("correlation_id").
    found: dict[str, float | None] = {}
    taken = {_text(tag): score for tag, score in taken_at}
    for tag, message in delivered.items():
        blob = _text(message)
        for task_id in task_ids:
            if f'"{task_id}"' in blob:
                # No index entry (mid-write): taken just now.
                found[task_id] = taken.get(_text(tag), time.time())
    queued_blob = "\n".join(_text(m) for m in waiting)
    found.update({task_id: None for task_id in task_ids if f'"{task_id}"' in queued_blob})
    return found


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
