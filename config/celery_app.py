from __future__ import annotations

import gc
import os

from celery import Celery, signals

from config.request_id import connect_celery_signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("countersign")
app.config_from_object("django.conf:settings", namespace="CELERY")
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
