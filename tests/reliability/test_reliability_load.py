"""bench/load.py, short: 10 agents for 10 s against uvicorn with two worker processes, a Celery worker and beat
on PostgreSQL and a private Redis. No 5xx, every 201 stored, every approved action executed exactly once, the
outbox drained, the audit chain intact. ``RELIABILITY_LOAD_AGENTS`` / ``RELIABILITY_LOAD_SECONDS`` scale it;
``make bench-load`` is the full run (50 agents x 60 s) with figures in docs/RELIABILITY.md.
"""

from __future__ import annotations

import os

import pytest

from bench.load import Config, report, run
from tests.support.reliability_support import LOG_DIR, RedisServer, stack_env_on

pytestmark = [pytest.mark.load, pytest.mark.django_db(transaction=True)]


def test_short_load_no_server_errors_and_every_approval_executed_once(stack_env):
    config = Config(
        agents=int(os.environ.get("RELIABILITY_LOAD_AGENTS", "10")),
        seconds=float(os.environ.get("RELIABILITY_LOAD_SECONDS", "10")),
        reviewers=2,
        web_workers=2,
        worker_concurrency=2,
        drain_timeout=60,
    )
    redis_server = RedisServer(name="load-redis").start()
    try:
        result = run(config, stack_env_on(stack_env, redis_server), LOG_DIR, name="load")
    finally:
        redis_server.close()
    print("\n" + report(result))
    assert result.stats.created, "the bench created no action"
    assert result.ok, report(result)
