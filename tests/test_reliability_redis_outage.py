"""Redis down for 30 seconds: proposals and decisions still succeed (they only write the database), their side
effects wait in the outbox, and once Redis is back every push, webhook and execution happens exactly as it
should: each approved request reaches the target once, nothing is delivered twice, the audit chain verifies.

Real processes on a private redis-server: uvicorn, a Celery worker and Celery beat (its 5 s outbox sweep is
what re-dispatches). ``RELIABILITY_REDIS_OUTAGE_SECONDS`` changes the outage (default 30).
"""

from __future__ import annotations

import os
import time
from collections import Counter

import httpx
import pytest
import redis

from approvals.models import ActionRequest, OutboxMessage
from tests.reliability_support import (
    LOG_DIR,
    Api,
    LiveSocket,
    RedisServer,
    audit_chain_intact,
    make_cast,
    session_cookie,
    stack_env_on,
    start_beat,
    start_uvicorn,
    stop_all,
)
from tests.servers import RecordingServer, start_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

OUTAGE_SECONDS = float(os.environ.get("RELIABILITY_REDIS_OUTAGE_SECONDS", "30"))


def status_of(action_id: str) -> str:
    return ActionRequest.objects.values_list("status", flat=True).get(id=action_id)


def undelivered() -> int:
    return OutboxMessage.objects.filter(delivered_at__isnull=True).count()


@pytest.fixture
def outage_stack(stack_env):
    target = RecordingServer().start()
    hooks = RecordingServer().start()
    redis_server = RedisServer(name="outage-redis").start()
    env = stack_env_on(
        stack_env,
        redis_server,
        COUNTERSIGN_CALLBACK_ALLOWED_NETWORKS="127.0.0.0/8",
        COUNTERSIGN_EXECUTE_REDISPATCH_SECONDS="10",
    )
    processes = []
    try:
        processes.append(start_worker(env, LOG_DIR, name="outage-worker"))
        processes.append(start_beat(env, name="outage-beat"))
        web, url = start_uvicorn(env, "outage-web")
        processes.append(web)
        yield {"target": target, "hooks": hooks, "redis": redis_server, "url": url, "procs": processes}
    finally:
        stop_all(*processes)
        redis_server.close()
        target.stop()
        hooks.stop()


def test_a_redis_outage_loses_and_repeats_nothing(outage_stack):
    target, hooks, redis_server, url = (outage_stack[k] for k in ("target", "hooks", "redis", "url"))
    worker = outage_stack["procs"][0]
    cast = make_cast(target.url, agents=1, reviewers=1, prefix="outage")
    key, token = cast.agent_keys[0], cast.reviewer_tokens[0]
    api = Api(url)
    callback = f"{hooks.url}/hook"
    figures: dict[str, object] = {}

    # Warm-up with Redis up: the whole loop works, and a reviewer's socket hears it.
    socket_before = LiveSocket(url, session_cookie(cast.reviewer_names[0]))
    warm = api.propose(key, "/warm", callback_url=callback)
    assert warm.status_code == 201, warm.text
    warm_id = warm.json()["id"]
    assert api.approve(token, warm_id).status_code == 200
    wait_until(lambda: status_of(warm_id) == "succeeded", timeout=30, message="the warm-up execution")
    wait_until(lambda: undelivered() == 0, timeout=30, message="the warm-up outbox to drain")
    wait_until(lambda: "succeeded" in socket_before.statuses(warm_id), timeout=10, message="the warm-up push")

    # In flight when Redis dies: two slow executions occupy both worker processes, so a third approved
    # action's execute task waits in the Redis queue, and Redis (no persistence) loses it.
    target.delay = 5.0
    in_flight = {}
    for name in ("slow-0", "slow-1", "queued"):
        response = api.propose(key, f"/inflight/{name}")
        assert response.status_code == 201, response.text
        in_flight[name] = response.json()["id"]
    for name in ("slow-0", "slow-1"):
        assert api.approve(token, in_flight[name]).status_code == 200
    wait_until(lambda: len([r for r in target.requests if "/slow-" in r.path]) == 2, message="two slow executions")
    assert api.approve(token, in_flight["queued"]).status_code == 200
    broker = redis.Redis(port=redis_server.port)
    queued = lambda: [m for m in broker.lrange("celery", 0, -1) if b"approvals.execute_action" in m]  # noqa: E731
    wait_until(queued, timeout=10, message="the third execution queued in Redis")
    assert "/inflight/queued" not in {r.path for r in target.requests}
    target.delay = 0.0

    # --- Redis goes away -------------------------------------------------------------------------
    redis_server.stop()
    down_at = time.monotonic()

    assert httpx.get(f"{url}/healthz").status_code == 200
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("error"), ready.text

    latencies: dict[str, list[float]] = {}
    statuses: Counter[int] = Counter()

    def timed(name, call, *args, **kwargs):
        started = time.perf_counter()
        response = call(*args, **kwargs)
        latencies.setdefault(name, []).append(time.perf_counter() - started)
        statuses[response.status_code] += 1
        return response

    plan = {"approve": 4, "reject": 1, "cancel": 1}
    ids: dict[str, list[str]] = {verdict: [] for verdict in plan}
    for verdict, count in plan.items():
        for i in range(count):
            response = timed("propose", api.propose, key, f"/outage/{verdict}/{i}", callback_url=callback)
            assert response.status_code == 201, response.text
            ids[verdict].append(response.json()["id"])
    for action_id in ids["approve"]:
        response = timed("approve", api.approve, token, action_id)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "approved"
    for action_id in ids["reject"]:
        assert timed("reject", api.reject, token, action_id).status_code == 200
    for action_id in ids["cancel"]:
        assert timed("cancel", api.cancel, key, action_id).status_code == 200
    for action_ids in ids.values():
        for action_id in action_ids:
            assert timed("get", api.get, key, action_id).status_code == 200
    # The long-poll cannot subscribe to the channel layer; it still answers with the action's state.
    waited = timed(
        "wait",
        api.http.get,
        f"/api/v1/actions/{ids['reject'][0]}/wait",
        params={"timeout": 1},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert waited.status_code == 200 and waited.json()["status"] == "rejected", waited.text
    assert not [code for code in statuses if code >= 500], statuses

    # Nothing ran, nothing was lost: every side effect is waiting in the outbox.
    assert not [r for r in target.requests if r.path.startswith("/outage/")]
    assert all(status_of(a) == "approved" for a in ids["approve"])
    waiting = Counter(OutboxMessage.objects.filter(delivered_at__isnull=True).values_list("kind", flat=True))
    assert waiting["execute"] == len(ids["approve"]) and waiting["push"] > 0 and waiting["webhook"] > 0, waiting
    figures["requests during outage"] = sum(statuses.values())
    figures["slowest answer during the outage, by call (s)"] = {k: round(max(v), 2) for k, v in latencies.items()}
    figures["outbox waiting at restart"] = dict(waiting)

    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
    # --- Redis is back (empty: nothing was persisted) --------------------------------------------
    redis_server.start()
    up_at = time.monotonic()

    wait_until(
        lambda: all(status_of(a) == "succeeded" for a in [*ids["approve"], *in_flight.values()]),
        timeout=120,
        interval=0.2,
        message="every approved action to execute after the restart",
    )
    figures["restart -> all executed (s)"] = round(time.monotonic() - up_at, 1)
    wait_until(lambda: undelivered() == 0, timeout=120, interval=0.2, message="the outbox to drain")
    figures["restart -> outbox drained (s)"] = round(time.monotonic() - up_at, 1)

    # Each approved request reached the target exactly once; the others never.
    paths = Counter(r.path for r in target.requests)
    for i in range(plan["approve"]):
        assert paths[f"/outage/approve/{i}"] == 1, paths
    assert not [p for p in paths if p.startswith(("/outage/reject", "/outage/cancel"))], paths
    # The two running executions finished while Redis was down; the queued one, lost with Redis, was
    # queued again by the outbox sweep (approvals.outbox.redispatch_lost_executions), and ran once.
    for name in in_flight:
        assert paths[f"/inflight/{name}"] == 1, paths
    assert OutboxMessage.objects.filter(action_id=in_flight["queued"], kind="execute").count() == 2
    assert {status_of(a) for a in ids["reject"]} == {"rejected"}
    assert {status_of(a) for a in ids["cancel"]} == {"cancelled"}

    # Every status change reached the agent's callback exactly once.
    expected = {
        "approve": ["pending", "approved", "executing", "succeeded"],
        "reject": ["pending", "rejected"],
        "cancel": ["pending", "cancelled"],
    }
    wait_until(
        lambda: len(hooks.requests) >= 4 + sum(len(expected[v]) * n for v, n in plan.items()),
        timeout=30,
        message="every webhook",
    )
    seen: dict[str, list[str]] = {}
    sequences: dict[str, list[int]] = {}
    for request in hooks.requests:
        body = request.json()
        seen.setdefault(body["id"], []).append(body["status"])
        sequences.setdefault(body["id"], []).append(body["event"]["sequence"])
    # In order, too: one action's webhooks wait for each other (approvals.outbox), whichever worker sends them.
    for verdict, action_ids in ids.items():
        for action_id in action_ids:
            assert seen.get(action_id) == expected[verdict], (verdict, seen.get(action_id))
            assert sequences[action_id] == list(range(1, len(expected[verdict]) + 1)), sequences[action_id]
    assert seen[warm_id] == expected["approve"], seen[warm_id]

    # Every push row was delivered to the channel layer; a socket opened now hears new events live.
    assert not OutboxMessage.objects.filter(kind="push", delivered_at__isnull=True).exists()
    socket_after = LiveSocket(url, session_cookie(cast.reviewer_names[0]))
    fresh = api.propose(key, "/after", callback_url=callback)
    assert fresh.status_code == 201
    fresh_id = fresh.json()["id"]
    wait_until(lambda: "pending" in socket_after.statuses(fresh_id), timeout=15, message="a live push after restart")
    # A socket that stayed open through the outage hears it too: its process subscribed again on reconnecting.
    assert not socket_before.closed.is_set()
    wait_until(lambda: "pending" in socket_before.statuses(fresh_id), timeout=15, message="a push to an old socket")
    socket_before.close()
    socket_after.close()

    executions = worker.log().count("approvals.execute_action[")
    figures["execute_action task lines in worker log"] = executions
    figures["audit events verified"] = audit_chain_intact()
    api.close()
    print("\nredis outage figures:", figures)
