"""Scale-out: two web processes and two Celery workers on one PostgreSQL and one Redis.

A reviewer's websocket is connected to web A; actions are proposed and approved through web B; whichever
worker takes each execution, the reviewer on A sees every step live (pending, approved, executing,
succeeded), the target sees each request once, and the two workers' logs together show exactly one
execution per action.
"""

from __future__ import annotations

import json

import pytest

from approvals.models import ActionRequest
from tests.support.reliability_support import (
    LOG_DIR,
    Api,
    LiveSocket,
    RedisServer,
    audit_chain_intact,
    make_cast,
    session_cookie,
    stack_env_on,
    start_uvicorn,
    stop_all,
)
from tests.support.servers import RecordingServer, start_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

ACTIONS = 6
LIFE = ["pending", "approved", "executing", "succeeded"]


def executions_in(log: str) -> list[str]:
    """Task ids of execute_action runs that ended in 'succeeded', from a worker's JSON log."""
    done = []
    for line in log.splitlines():
        try:
            message = json.loads(line)["message"]
        except (ValueError, KeyError):
            continue
        if message.startswith("Task approvals.execute_action[") and message.endswith("'succeeded'"):
            done.append(message.split("[", 1)[1].split("]", 1)[0])
    return done


def test_a_reviewer_on_web_a_sees_live_what_web_b_and_either_worker_do(stack_env):
    target = RecordingServer(delay=0.3).start()
    redis_server = RedisServer(name="scale-redis").start()
    env = stack_env_on(stack_env, redis_server)
    processes = []
    try:
        web_a, url_a = start_uvicorn(env, "scale-web-a")
        web_b, url_b = start_uvicorn(env, "scale-web-b")
        worker_1 = start_worker(env, LOG_DIR, name="scale-worker-1", concurrency=1)
        worker_2 = start_worker(env, LOG_DIR, name="scale-worker-2", concurrency=1)
        processes += [web_a, web_b, worker_1, worker_2]
        cast = make_cast(target.url, prefix="scale")
        key, token = cast.agent_keys[0], cast.reviewer_tokens[0]

        socket = LiveSocket(url_a, session_cookie(cast.reviewer_names[0]))
        api_b = Api(url_b)
        ids = []
        for i in range(ACTIONS):
            response = api_b.propose(key, f"/scale/{i}")
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        for action_id in ids:
            wait_until(lambda a=action_id: "pending" in socket.statuses(a), timeout=10, message="pending on web A")
            assert api_b.approve(token, action_id).status_code == 200
        for action_id in ids:
            wait_until(lambda a=action_id: "succeeded" in socket.statuses(a), timeout=30, message="succeeded on web A")
        api_b.close()
        socket.close()
        per_worker = [executions_in(worker_1.log()), executions_in(worker_2.log())]
    finally:
        stop_all(*processes)
        redis_server.close()
        target.stop()

    # Web A heard every step of every action, in order, though none of it happened in web A.
    for action_id in ids:
        statuses = socket.statuses(action_id)
        assert [s for s in LIFE if s in statuses] == LIFE, statuses
        assert sorted(statuses, key=LIFE.index) == statuses, statuses
    assert set(ActionRequest.objects.filter(id__in=ids).values_list("status", flat=True)) == {"succeeded"}
    # One execution per action across both workers, and one request per action at the target.
    assert sum(len(runs) for runs in per_worker) == ACTIONS, per_worker
    assert sorted(r.path for r in target.requests) == sorted(f"/scale/{i}" for i in range(ACTIONS))
    audit_chain_intact()
    print(f"\nscale-out: executions per worker {[len(runs) for runs in per_worker]}")
