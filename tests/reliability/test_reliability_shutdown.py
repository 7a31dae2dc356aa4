"""Graceful shutdown, as an orchestrator does it: SIGTERM to the main process.

- A Celery worker told to stop in the middle of an execution finishes it (warm shutdown) and exits 0; the task
  it had not started stays in the broker and the next worker runs it. Each request reaches the target once.
- uvicorn, started with the Procfile's own command, told to stop while an agent's long-poll ``wait`` is open stops
  taking connections, lets the wait answer (here with the decision a reviewer made through another web process
  meanwhile) and the requests in flight finish: no 5xx, no response cut short, then the process exits.
- The Procfile, the compose file and the Dockerfile agree on keep-alive and shutdown times: keep-alive longer than
  a proxy's idle timeout, the web's graceful shutdown longer than the longest ``wait`` and shorter than the
  container's grace, the worker's grace longer than any task may run.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import h11
import httpx
import pytest
import yaml
from django.conf import settings

from approvals.api.wait import MAX_TIMEOUT
from approvals.models import ActionRequest, OutboxMessage
from config.supervise import read_procfile, stop_grace
from tests.support.reliability_support import (
    LOG_DIR,
    Api,
    RedisServer,
    audit_chain_intact,
    make_cast,
    stack_env_on,
    start_procfile_web,
    start_uvicorn,
    stop_all,
)
from tests.support.servers import ROOT, RecordingServer, start_worker, wait_until
from tests.support.waiting import wait_for_waiter

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


@pytest.mark.parametrize("workers", [1, 2])
def test_a_web_process_that_stops_marks_the_pushes_it_delivered(stack, workers):
    """Pushes are marked delivered in batches (approvals/outbox/marks.py); a web process stopped between a push and its
    batch marks it on the way out, alone or as one of uvicorn's workers (which end without running atexit)."""
    env, target, started = stack
    web, url = start_uvicorn({**env, "COUNTERSIGN_PUSH_MARK_MS": "5000"}, f"marks-web-{workers}", workers=workers)
    started.append(web)
    cast = make_cast(target.url, prefix=f"marks{workers}")
    api = Api(url)
    action_id = api.propose(cast.agent_keys[0], "/marks").json()["id"]
    api.close()
    push = OutboxMessage.objects.get(action_id=action_id, kind=OutboxMessage.Kind.PUSH)
    assert push.delivered_at is None and push.claimed_until is not None  # noted; its batch is 5 s away

    web.proc.send_signal(signal.SIGTERM)
    assert web.proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    push.refresh_from_db()
    assert push.delivered_at is not None and push.attempts == 1 and push.claimed_until is None


# --- uvicorn ---------------------------------------------------------------------------------------------------

# Idle timeouts of the proxies docs/deploy.md assumes in front of the web: nginx's keepalive_timeout for upstream
# connections and proxy_read_timeout, an AWS ALB's idle timeout, Google's HTTP(S) load balancer (backend
# keep-alive 600 s is configurable there; its default backend timeout is 30 s, below ours).
PROXY_IDLE_TIMEOUT = 60


def get_on_a_fresh_connection(port: int, path: str, key: str, request_id: str) -> str:
    """One GET on a new TCP connection, classified by what the client actually received.

    - ``refused``: the connection was not established (the listener is closed).
    - ``closed unread``: the connection was closed or reset with not one byte of a response. At shutdown uvicorn
      closes a connection whose request it has not read yet (no request cycle; the kernel answers a close with
      unread data by a reset), and resets what still waits in the listener's accept queue when it closes it.
      The test proves from the web's request log that none of these reached the application.
    - ``answered <status>``: a complete response (h11 saw its end).
    - ``cut off after N bytes``: a response started and did not end: the defect this test exists to catch.
    """
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    except (ConnectionRefusedError, ConnectionResetError):
        return "refused"
    except TimeoutError:
        return "connect timed out"
    client = h11.Connection(our_role=h11.CLIENT)
    received = 0
    status = None
    headers = [
        ("Host", "127.0.0.1"),
        ("Authorization", f"Bearer {key}"),
        ("X-Request-ID", request_id),
        ("Connection", "close"),
    ]
    with sock:
        try:
            sock.sendall(client.send(h11.Request(method="GET", target=path, headers=headers)))
            sock.sendall(client.send(h11.EndOfMessage()))
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    data = sock.recv(65536)
                    received += len(data)
                    client.receive_data(data)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.EndOfMessage):
                    return f"answered {status}"
        except TimeoutError:
            return f"no complete answer within 10 s ({received} bytes)"
        except (OSError, h11.RemoteProtocolError) as exc:  # reset, broken pipe, or closed before the end
            return "closed unread" if received == 0 else f"cut off after {received} bytes ({type(exc).__name__})"


def test_sigterm_to_uvicorn_lets_an_open_wait_answer_and_cuts_off_no_request(stack):
    env, target, started = stack
    # Rates lifted: this test counts connections at shutdown, not the limiter's answers.
    env = {**env, "COUNTERSIGN_AGENT_REQUEST_RATE": "1000000/min"}
    web_a, url_a = start_procfile_web(env, "shutdown-web-a")
    web_b, url_b = start_uvicorn(env, "shutdown-web-b")
    started += [web_a, web_b]
    port_a = int(url_a.rsplit(":", 1)[1])
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
    request_ids: dict[str, list[str]] = {"answered": [], "closed unread": []}
    stop_traffic = threading.Event()
    sigterm_sent = threading.Event()
    numbers = iter(range(1_000_000))
    lock = threading.Lock()

    def traffic():
        # Normal requests on fresh connections, before, during and after the SIGTERM; each with an id of its own
        # that the web's request log names if the request reached the application.
        while not stop_traffic.is_set():
            with lock:
                request_id = f"drain-probe-{next(numbers):06d}"
            outcome = get_on_a_fresh_connection(port_a, f"/api/v1/actions/{action_id}", key, request_id)
            if outcome.startswith("answered"):
                request_ids["answered"].append(request_id)
            elif not sigterm_sent.is_set():
                outcome = f"before the SIGTERM: {outcome}"
            elif outcome == "closed unread":
                request_ids["closed unread"].append(request_id)
            outcomes[outcome] += 1
            time.sleep(0.02)

    poller = threading.Thread(target=long_poll)
    poller.start()
    wait_for_waiter(action_id, env["REDIS_URL"])  # the wait is open and subscribed
    senders = [threading.Thread(target=traffic) for _ in range(3)]
    for sender in senders:
        sender.start()
    wait_until(lambda: len(request_ids["answered"]) >= 3, timeout=15, message="traffic answered before the SIGTERM")

    signalled = time.monotonic()
    sigterm_sent.set()
    web_a.proc.send_signal(signal.SIGTERM)  # sh exec'd uvicorn: this is uvicorn's main process
    time.sleep(1.0)  # the behaviour under test: a second after the signal, the wait still holds the process open
    assert web_a.proc.poll() is None  # still draining: the wait is open
    assert api_b.approve(token, action_id).status_code == 200  # decided through the other web process
    poller.join(timeout=40)
    exit_code = web_a.proc.wait(timeout=30)
    exit_seconds = time.monotonic() - signalled
    wait_until(lambda: outcomes["refused"], timeout=15, message="traffic refused once the process is gone")
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
    allowed = {"answered 200", "refused", "closed unread"}
    assert set(outcomes) <= allowed, outcomes
    assert outcomes["answered 200"] > 0 and outcomes["refused"] > 0, outcomes
    # The proof that "closed unread" lost nothing: the application logged every answered request by its id (so
    # the log is where to look), and not one of the closed ones.
    logged = set(re.findall(r'"request_id": "(drain-probe-\d{6})"', log))
    assert set(request_ids["answered"]) <= logged
    assert not set(request_ids["closed unread"]) & logged, "a request that reached the application got no answer"
    print(
        f"\nuvicorn SIGTERM with a wait open: the wait answered {waited['body']['status']} after "
        f"{waited['seconds']:.1f}s; process gone {exit_seconds:.1f}s after the signal; other requests {dict(outcomes)}"
    )


# --- what the Procfile, compose and the Dockerfile promise -----------------------------------------------------


def _flag(command: str, name: str) -> int:
    """The value a command gives ``--name``, its ``${VAR:-default}`` default when it is a variable."""
    match = re.search(rf"--{name}[= ](?:\$?\$\{{\w+:-(\d+)\}}|(\d+))", command)
    assert match, f"--{name} missing from: {command}"
    return int(match.group(1) or match.group(2))


def _seconds(duration: str) -> int:
    """A compose duration (``75s``, ``5m30s``) in seconds."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(duration))
    assert parts and any(parts.groups()), duration
    return int(parts.group(1) or 0) * 60 + int(parts.group(2) or 0)


def test_keep_alive_outlasts_the_proxy_and_every_grace_covers_the_longest_work():
    procfile = dict(read_procfile(ROOT / "Procfile"))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    web, worker = compose["services"]["web"], compose["services"]["worker"]
    compose_web = " ".join(web["command"])
    dockerfile_cmd = re.search(r"^CMD (.+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE).group(1)
    for command in (procfile["web"], compose_web, dockerfile_cmd):
        keep_alive = _flag(command, "timeout-keep-alive")
        graceful = _flag(command, "timeout-graceful-shutdown")
        # uvicorn must not close an idle connection the proxy is about to reuse (a 502 at the proxy).
        assert keep_alive > PROXY_IDLE_TIMEOUT, command
        # An open wait (the longest request) answers before uvicorn cancels what is left.
        assert graceful > MAX_TIMEOUT, command
    # The orchestrator's SIGKILL comes after uvicorn's own deadline, and after any task the worker may be running.
    assert _seconds(web["stop_grace_period"]) > _flag(compose_web, "timeout-graceful-shutdown")
    assert _seconds(worker["stop_grace_period"]) > settings.CELERY_TASK_TIME_LIMIT
    # The same for `make demo` / `make run` (config/supervise.py).
    assert stop_grace("web") > _flag(procfile["web"], "timeout-graceful-shutdown")
    assert stop_grace("worker") > settings.CELERY_TASK_TIME_LIMIT


def test_the_supervisor_stops_a_process_with_sigterm_and_waits_for_it_to_drain(tmp_path, stack_env):
    """`make demo` / `make run`: Ctrl-C (or SIGTERM) reaches config/supervise.py, which sends SIGTERM to each process
    and waits while it finishes what it is doing, instead of killing it."""
    script = tmp_path / "drains.py"
    script.write_text(
        "import signal, sys, time\n"
        "def drain(*_):\n"
        "    time.sleep(3)  # a running execution finishing\n"
        "    print('drained', flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, drain)\n"
        "print('running', flush=True)\n"
        "time.sleep(600)\n"
    )
    procfile = tmp_path / "Procfile"
    procfile.write_text(f"worker: {sys.executable} {script}\n")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "config.supervise", "--procfile", str(procfile)],
        cwd=ROOT,
        env=stack_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(supervisor.stdout), daemon=True)
    reader.start()
    wait_until(lambda: any("running" in line for line in lines), timeout=30, message="the process to start")
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0
    reader.join(timeout=5)
    console = "".join(lines)
    assert "waiting for worker to finish what it is doing" in console, console
    assert "drained" in console and "killing it" not in console, console
