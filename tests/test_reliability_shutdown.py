"""Graceful shutdown, as an orchestrator does it: SIGTERM to the main process.

- A Celery worker told to stop in the middle of an execution finishes it (warm shutdown) and exits 0; the task
  it had not started stays in the broker and the next worker runs it. Each request reaches the target once.
- uvicorn told to stop while an agent's long-poll ``wait`` is open stops taking connections, lets the wait
  answer (here with the decision a reviewer made through another web process meanwhile) and the requests in
  flight finish: no 5xx, no request cut off mid-response, then the process exits.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import httpx
import pytest

from approvals.models import ActionRequest, OutboxMessage
from tests.reliability_support import (
    LOG_DIR,
    Api,
    RedisServer,
    audit_chain_intact,
    make_cast,
    stack_env_on,
    start_uvicorn,
    stop_all,
)
from tests.servers import RecordingServer, start_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def status_of(action_id: str) -> str:
    return ActionRequest.objects.values_list("status", flat=True).get(id=action_id)


@pytest.fixture
def stack(stack_env):
    target = RecordingServer().start()
    redis_server = RedisServer(name="shutdown-redis").start()
    env = stack_env_on(stack_env, redis_server)
    started = []
    try:
        yield env, target, started
    finally:
        stop_all(*started)
        redis_server.close()
        target.stop()


def test_sigterm_to_a_worker_mid_execution_finishes_it_and_loses_nothing(stack):
    env, target, started = stack
    web, url = start_uvicorn(env, "shutdown-web")
    started.append(web)
    worker = start_worker(env, LOG_DIR, name="shutdown-worker", concurrency=1)
    started.append(worker)
    cast = make_cast(target.url, prefix="term")
    api = Api(url)
    target.delay = 3.0
    running, queued = (api.propose(cast.agent_keys[0], f"/term/{n}").json()["id"] for n in ("running", "queued"))
    assert api.approve(cast.reviewer_tokens[0], running).status_code == 200
    wait_until(lambda: target.requests, timeout=20, message="the execution to reach the target")
    assert api.approve(cast.reviewer_tokens[0], queued).status_code == 200
    assert status_of(running) == "executing"

    signalled = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)  # the main process only, as docker stop / Kubernetes do
    assert worker.proc.wait(timeout=30) == 0
    exit_seconds = time.monotonic() - signalled
    log = worker.log()
    assert "Warm shutdown" in log, log[-2000:]
    assert status_of(running) == "succeeded"  # finished during the warm shutdown, not interrupted
    assert status_of(queued) == "approved"  # never started: its task is still in the broker

    target.delay = 0.0
    successor = start_worker(env, LOG_DIR, name="shutdown-worker-2", concurrency=1)
    started.append(successor)
    wait_until(lambda: status_of(queued) == "succeeded", timeout=30, message="the next worker to run the queued one")
    assert Counter(r.path for r in target.requests) == {"/term/running": 1, "/term/queued": 1}
    wait_until(lambda: not OutboxMessage.objects.filter(delivered_at__isnull=True).exists(), timeout=20)
    audit_chain_intact()
    api.close()
    print(f"\nworker SIGTERM mid-execution: exited 0 after {exit_seconds:.1f}s with the execution finished")


def test_sigterm_to_uvicorn_lets_an_open_wait_answer_and_cuts_off_no_request(stack):
    env, target, started = stack
    web_a, url_a = start_uvicorn(env, "shutdown-web-a")
    web_b, url_b = start_uvicorn(env, "shutdown-web-b")
    started += [web_a, web_b]
    cast = make_cast(target.url, prefix="drain")
    key, token = cast.agent_keys[0], cast.reviewer_tokens[0]
    api_b = Api(url_b)
    action_id = api_b.propose(key, "/drain/0").json()["id"]

    waited: dict[str, object] = {}

    def long_poll():
        started_at = time.monotonic()
        try:
            response = httpx.get(
                f"{url_a}/api/v1/actions/{action_id}/wait",
                params={"timeout": 30, "until": "decision"},
                headers={"Authorization": f"Bearer {key}"},
                timeout=60,
            )
            waited["status"], waited["body"] = response.status_code, response.json()
        except httpx.HTTPError as exc:
            waited["error"] = repr(exc)
        waited["seconds"] = time.monotonic() - started_at

    outcomes: Counter[str] = Counter()
    stop_traffic = threading.Event()
    sigterm_sent = threading.Event()

    def traffic():
        # Normal requests on fresh connections, before, during and after the SIGTERM.
        while not stop_traffic.is_set():
            try:
                response = httpx.get(
                    f"{url_a}/api/v1/actions/{action_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10
                )
                outcomes[f"answered {response.status_code}"] += 1
            except httpx.ConnectError:
                outcomes["refused (listener closed)"] += 1
            except httpx.RemoteProtocolError as exc:
                # At shutdown uvicorn closes a connection it accepted but whose request it had not parsed yet (no
                # request cycle: nothing of it reached the application). To the client that is a closed listener,
                # which a proxy retries; a response cut short would be another error.
                unread = sigterm_sent.is_set() and "without sending a response" in str(exc)
                outcomes["closed before the request was read" if unread else f"cut off: {exc}"] += 1
            except httpx.HTTPError as exc:
                outcomes[f"cut off: {type(exc).__name__}"] += 1
            time.sleep(0.02)

    poller = threading.Thread(target=long_poll)
    poller.start()
    time.sleep(1.0)  # the wait is open and subscribed
    senders = [threading.Thread(target=traffic) for _ in range(3)]
    for sender in senders:
        sender.start()
    time.sleep(1.0)

    signalled = time.monotonic()
    sigterm_sent.set()
    web_a.proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    assert web_a.proc.poll() is None  # still draining: the wait is open
    assert api_b.approve(token, action_id).status_code == 200  # decided through the other web process
    poller.join(timeout=40)
    exit_code = web_a.proc.wait(timeout=30)
    exit_seconds = time.monotonic() - signalled
    time.sleep(0.5)
    stop_traffic.set()
    for sender in senders:
        sender.join(timeout=15)
    api_b.close()

    assert waited.get("status") == 200, waited
    assert waited["body"]["status"] in ("approved", "executing", "succeeded"), waited
    # uvicorn re-raises the signal once it has shut down cleanly: the exit status says "terminated by SIGTERM".
    assert exit_code in (0, -signal.SIGTERM), exit_code
    log = web_a.log()
    assert log.index("Waiting for connections to close") < log.index("/wait 200") < log.index("Finished server process")
    assert not [o for o in outcomes if o.startswith("cut off") or o.startswith("answered 5")], outcomes
    assert outcomes["answered 200"] > 0 and outcomes["refused (listener closed)"] > 0, outcomes
    print(
        f"\nuvicorn SIGTERM with a wait open: the wait answered {waited['body']['status']} after "
        f"{waited['seconds']:.1f}s; process gone {exit_seconds:.1f}s after the signal; other requests {dict(outcomes)}"
    )
