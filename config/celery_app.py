from __future__ import annotations

import gc
import logging
import os

from celery import Celery, bootsteps, signals
from celery.app.amqp import AMQP
from kombu import Connection

from config.request_id import connect_celery_signals

# Handing a task to the broker: one immediate retry (a pooled connection that died with a Redis restart), no
# sleeping between tries: while the broker is down the outbox message stays and the sweep retries it with
# backoff, instead of every request that commits one waiting out Celery's retries (docs/RELIABILITY.md).
PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0, "interval_max": 0}

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")


class CappedBackoffConnection(Connection):
    """A broker connection that never waits more than COUNTERSIGN_RECONNECT_MAX_SECONDS between attempts.

    Celery's worker consumer and beat reconnect through kombu's ``ensure_connection`` with its defaults, 2 s
    growing by 2 s per attempt up to 30 s, and no setting reaches them: after a 30 s Redis outage the next
    attempt came up to 12 s after Redis was back (docs/RELIABILITY.md). Every connection this app makes (worker,
    beat, the web's publishing pool) is of this class, so each retries at least once a second whatever the
    outage length; an explicit shorter policy (a publish's retry policy) is kept as it is.
    """

    def _ensure_connection(
        self, errback=None, max_retries=None, interval_start=2, interval_step=2, interval_max=30, **kwargs
    ):
        from django.conf import settings

        cap = settings.COUNTERSIGN_RECONNECT_MAX_SECONDS
        return super()._ensure_connection(
            errback,
            max_retries,
            interval_start=min(interval_start, cap),
            interval_step=min(interval_step, cap),
            interval_max=min(interval_max, cap),
            **kwargs,
        )


class CappedBackoffAMQP(AMQP):
    Connection = CappedBackoffConnection


class SweepOutboxOnConnect(bootsteps.StartStopStep):
    """Each time a worker (re)connects to the broker, it asks for an outbox sweep at once.

    While the broker was unreachable every side effect waited in the outbox. After a long outage beat, stuck in
    its own reconnect loop, sends its overdue sweep the moment it is through; after one shorter than its 5 s
    schedule it may not have noticed, and what waited would wait for its next tick. Several workers reconnecting
    mean several sweeps: harmless, each message is leased to one of them (docs/RELIABILITY.md, section 1).
    """

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def start(self, c) -> None:
        try:
            c.app.send_task("approvals.sweep_outbox", retry_policy=PUBLISH_RETRY)
        except Exception as exc:  # the broker went away again: beat's sweep is still there
            logging.getLogger(__name__).warning("could not ask for an outbox sweep on connect: %r", exc)


app = Celery("countersign", amqp=CappedBackoffAMQP)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.steps["consumer"].add(SweepOutboxOnConnect)
app.autodiscover_tasks()
# Tasks carry the request id of whatever sent them (config/request_id.py).
connect_celery_signals()


@signals.setup_logging.connect(weak=False)
def _use_django_logging(**kwargs) -> None:
    """Workers and beat log as the web process does (settings.LOGGING: JSON lines), not Celery's own format."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


@signals.worker_process_init.connect(weak=False)
def _freeze_what_startup_loaded(**kwargs) -> None:
    """As the web process does (config/asgi.py): a full collection would otherwise walk everything Django and
    the tasks loaded, pausing an execution now and then for tens of milliseconds."""
    gc.freeze()


@signals.beat_init.connect(weak=False)
def _heartbeat_on_start(**kwargs) -> None:
    from config.heartbeat import record_heartbeat

    record_heartbeat()


@signals.after_task_publish.connect(weak=False)
def _heartbeat_on_publish(sender=None, **kwargs) -> None:
    """Beat published its heartbeat task: it is alive and reaches the broker (config/heartbeat.py)."""
    from config.heartbeat import HEARTBEAT_TASK, record_heartbeat

    if sender == HEARTBEAT_TASK:
        record_heartbeat()
