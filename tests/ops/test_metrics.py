"""/metrics as an operator alerts on it (issue 18, point 6).

Request rate, latency and errors by route group are counted in every web process and added up whichever process
answers the scrape: checked on a real `uvicorn --workers 2`, including after one worker is SIGKILLed and started
again. The database metrics (actions in flight and the age of the oldest at each stage, executions by outcome,
failing deliveries) are checked against actions and deliveries made here, through the services and real HTTP
targets (a recording server, the fake Slack, a closed SMTP port). The Prometheus rules and the Grafana dashboard
in docs/ops/ may only use metrics that /metrics serves.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client, override_settings
from django.utils import timezone
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from agents.keys import new_key
from approvals import services
from approvals.models import ActionRequest, ActionStatus, OutboxMessage
from approvals.services.transitions import lock_action, transition
from audit.chain import Actor
from config.request_metrics import LABEL_VALUES, LATENCY_BUCKETS, route_group
from tests import factories
from tests.conftest import propose_body
from tests.support.fake_slack import FakeSlack
from tests.support.reliability_support import make_cast, parent_pid, start_uvicorn
from tests.support.servers import ROOT, RecordingServer, free_port, wait_until
from tests.support.slack_helpers import deliver_due, time_passes

OPS = ROOT / "docs" / "ops"
WORKER = Actor.system("worker")
# Names the rules may use that Prometheus makes itself (not served by /metrics).
PROMETHEUS_OWN = {"up"}

Samples = dict[tuple[str, frozenset], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(url: str) -> Samples:
    """One scrape on a connection of its own (either worker may accept it)."""
    response = httpx.get(f"{url}/metrics", timeout=10, trust_env=False)
    assert response.status_code == 200, response.text
    return parse(response.text)


def in_process_scrape() -> Samples:
    response = Client().get("/metrics")
    assert response.status_code == 200
    return parse(response.content.decode())


def worker_pids(master: int) -> set[int]:
    """uvicorn's worker processes (multiprocessing's spawned children; not its resource tracker)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and parent_pid(int(entry.name)) == master:
            try:
                if b"spawn_main" in (entry / "cmdline").read_bytes():
                    pids.add(int(entry.name))
            except OSError:
                continue
    return pids


def counted_by(server_dir: Path, pid: int, scratch: Path, name: str, **labels: str) -> float:
    """What one worker's own files hold (its share of the sum)."""
    own = scratch / f"only-{pid}"
    shutil.rmtree(own, ignore_errors=True)
    own.mkdir(parents=True)
    for path in server_dir.glob(f"*_{pid}.db"):
        shutil.copy(path, own)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(own))
    return registry.get_sample_value(name, labels) or 0.0


def a_pid_not_running() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def unauthenticated(url: str, method: str = "GET") -> int:
    """One request on a fresh connection: 401 from the API."""
    return httpx.request(method, f"{url}/api/v1/actions", timeout=10, trust_env=False).status_code


def refused_websocket(url: str) -> int:
    """A websocket handshake from a foreign origin (refused with 403 by approvals.live.routing)."""
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Origin": "https://elsewhere.example",
    }
    return httpx.get(f"{url}/ws/events/", headers=headers, timeout=10, trust_env=False).status_code


# --- request metrics across processes ------------------------------------------------------------------------


def test_route_groups_never_carry_the_path():
    assert route_group("/api/v1/actions") == "api"
    assert route_group("/api/v1/actions/0b6e6a5e-5d7c-4a53-9b0e-3f0f0c9b3d11") == "api"
    assert route_group("/api/v1/actions/0b6e6a5e-5d7c-4a53-9b0e-3f0f0c9b3d11/wait") == "api_wait"
    assert route_group("/humanlayer/v1/function_calls/abc") == "humanlayer"
    assert route_group("/slack/interactivity") == "slack"
    assert route_group("/admin/approvals/actionrequest/") == "admin"
    assert [route_group(p) for p in ("/healthz", "/readyz", "/metrics", "/healthz/dependencies")] == ["ops"] * 4
    assert route_group("/static/js/live.js") == "static"
    assert [route_group(p) for p in ("/", "/actions/x", "/accounts/login/", "/no/such/page")] == ["web"] * 4


@pytest.fixture(scope="module")
def two_workers(stack_env, tmp_path_factory):
    """`uvicorn --workers 2` with its metrics under a base directory of its own, where a dead server left a
    directory (which the start must remove)."""
    base = tmp_path_factory.mktemp("metrics-base")
    stale = base / f"web-{a_pid_not_running()}-12345"
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"")
    web, _ = start_uvicorn({**stack_env, "COUNTERSIGN_METRICS_DIR": str(base)}, "metrics-web", workers=2)
    web.base, web.stale = base, stale
    yield web
    web.stop()


@pytest.mark.django_db(transaction=True)
def test_request_counts_of_two_workers_add_up_whichever_answers_and_survive_a_worker_crash(two_workers, tmp_path):
    url, master = two_workers.url, two_workers.proc.pid
    [server_dir] = two_workers.base.glob(f"web-{master}-*")
    assert not two_workers.stale.exists()  # a server no longer running: its directory went at start
    workers = wait_until(lambda: (pids := worker_pids(master)) and len(pids) == 2 and pids, message="two workers")
    read_4xx = {"group": "api", "method": "read", "status": "4xx"}
    write_4xx = {"group": "api", "method": "write", "status": "4xx"}
    before = scrape(url)

    reads = writes = 0
    for _ in range(30):  # fresh connections until each worker has answered some (the kernel picks the worker)
        for _ in range(5):
            assert unauthenticated(url) == 401
            assert unauthenticated(url, "POST") == 401
            reads, writes = reads + 1, writes + 1
        shares = [
            counted_by(server_dir, pid, tmp_path, "countersign_http_requests_total", **read_4xx) for pid in workers
        ]
        if all(shares):
            break
    assert all(shares), f"one worker answered every request: {shares}"

    expected_reads = value(before, "countersign_http_requests_total", **read_4xx) + reads
    expected_writes = value(before, "countersign_http_requests_total", **write_4xx) + writes
    for _ in range(6):  # whichever worker answers, the sum of both
        samples = scrape(url)
        assert value(samples, "countersign_http_requests_total", **read_4xx) == expected_reads
        assert value(samples, "countersign_http_requests_total", **write_4xx) == expected_writes
        assert value(samples, "countersign_http_request_duration_seconds_count", group="api", method="read") == (
            value(before, "countersign_http_request_duration_seconds_count", group="api", method="read") + reads
        )
    assert sum(shares) == expected_reads and max(shares) < expected_reads  # each file a part; a scrape the whole

    # A worker killed: uvicorn starts another, and what the dead one counted is still in the sum.
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: victim not in (pids := worker_pids(master)) and len(pids) == 2, timeout=60, message="a new worker"
    )
    wait_until(lambda: httpx.get(f"{url}/healthz", timeout=5).status_code == 200, timeout=30, message="serving")
    for _ in range(6):
        assert value(scrape(url), "countersign_http_requests_total", **read_4xx) == expected_reads
    for _ in range(3):
        assert unauthenticated(url) == 401
    assert value(scrape(url), "countersign_http_requests_total", **read_4xx) == expected_reads + 3


@pytest.mark.django_db(transaction=True)
def test_latency_histogram_buckets_route_groups_and_websockets(two_workers):
    url = two_workers.url
    cast = make_cast("http://127.0.0.1:9", prefix="metrics")
    proposed = httpx.post(
        f"{url}/api/v1/actions",
        json=propose_body(
            action_type="http.request", params={"credential": "internal-api", "method": "POST", "path": "/x"}
        ),
        headers={"Authorization": f"Bearer {cast.agent_keys[0]}"},
        timeout=10,
    )
    assert proposed.status_code == 201, proposed.text
    before = scrape(url)

    # The agent's long-poll: at least its 1 s timeout, counted under api_wait, never in the API's latency.
    waited = httpx.get(
        f"{url}/api/v1/actions/{proposed.json()['id']}/wait",
        params={"timeout": "1"},
        headers={"Authorization": f"Bearer {cast.agent_keys[0]}"},
        timeout=10,
    )
    assert waited.status_code == 200
    assert httpx.get(f"{url}/accounts/login/", timeout=10).status_code == 200
    assert refused_websocket(url) == 403
    after = scrape(url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    wait_labels = {"group": "api_wait", "method": "read"}
    assert delta("countersign_http_requests_total", status="2xx", **wait_labels) == 1
    assert delta("countersign_http_request_duration_seconds_count", **wait_labels) == 1
    assert delta("countersign_http_request_duration_seconds_bucket", le="1.0", **wait_labels) == 0
    assert delta("countersign_http_request_duration_seconds_bucket", le="+Inf", **wait_labels) == 1
    assert delta("countersign_http_request_duration_seconds_sum", **wait_labels) >= 1.0
    assert delta("countersign_http_requests_total", group="api", method="read", status="2xx") == 0
    assert delta("countersign_http_requests_total", group="web", method="read", status="2xx") == 1
    assert delta("countersign_websocket_connects_total", outcome="refused") == 1

    # Every bucket the histogram declares, cumulative, ending in +Inf = count.
    for labels in ({"group": "api", "method": "write"}, wait_labels):
        buckets = [
            value(after, "countersign_http_request_duration_seconds_bucket", le=str(b), **labels)
            for b in LATENCY_BUCKETS
        ]
        buckets.append(value(after, "countersign_http_request_duration_seconds_bucket", le="+Inf", **labels))
        assert buckets == sorted(buckets) and buckets[-1] > 0
        assert buckets[-1] == value(after, "countersign_http_request_duration_seconds_count", **labels)
    les = {
        dict(labels)["le"]
        for name, labels in after
        if name == "countersign_http_request_duration_seconds_bucket" and dict(labels)["group"] == "api_wait"
    }
    assert les == {str(b) for b in LATENCY_BUCKETS} | {"+Inf"}
    # Labels are route groups, method and status classes: no path, no id.
    label_values = {v for _, labels in after for _, v in labels}
    assert not any(proposed.json()["id"] in v or v.startswith("/") for v in label_values)


@pytest.mark.django_db(transaction=True)
def test_every_metric_the_alert_rules_and_the_dashboard_use_is_served(two_workers):
    url = two_workers.url
    assert unauthenticated(url) == 401 and refused_websocket(url) == 403
    served = {name for name, _ in scrape(url)}

    rules = yaml.safe_load((OPS / "countersign-alerts.yml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert all(
        rule.get("alert") and rule.get("annotations", {}).get("summary") for g in rules["groups"] for rule in g["rules"]
    )
    dashboard = json.loads((OPS / "grafana-dashboard.json").read_text())
    targets = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] and targets
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])

    used = {
        name
        for expression in expressions + targets
        for name in re.findall(r"\b(countersign_[a-z0-9_]+|process_[a-z0-9_]+|up)\b", expression)
    }
    assert {"countersign_http_requests_total", "countersign_oldest_action_age_seconds"} <= used
    assert used - PROMETHEUS_OWN <= served, f"not served by /metrics: {sorted(used - PROMETHEUS_OWN - served)}"
    # Every label value a selector names exists (a typo would make an alert that never fires): served now, or
    # one the request metrics may take.
    samples = scrape(url)
    for name, selector in re.findall(r"\b(countersign_[a-z0-9_]+)\{([^}]*)\}", "\n".join(expressions + targets)):
        for label, _, wanted in re.findall(r'(\w+)\s*(=~|!=|=)\s*"([^"]*)"', selector):
            known = {v for n, labels in samples if n == name for lab, v in labels if lab == label}
            known |= (
                set(LABEL_VALUES.get(label, ())) if name.startswith(("countersign_http", "countersign_web")) else set()
            )
            assert set(wanted.split("|")) <= known, (name, label, wanted, known)


@pytest.mark.django_db(transaction=True)
def test_with_the_database_down_requests_get_a_503_to_retry_counted_as_5xx_and_metrics_still_answer(stack_env):
    env = {**stack_env, "DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/gone"}
    web, url = start_uvicorn(env, "metrics-web-nodb")
    try:
        for _ in range(3):
            response = httpx.get(
                f"{url}/api/v1/actions",
                headers={"Authorization": f"Bearer {new_key()[0]}"},
                timeout=10,
                trust_env=False,
            )
            # Not a 500: nothing is wrong with the request, and it is worth repeating in a moment.
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "1"
            assert response.headers["Content-Type"] == "application/problem+json"
            assert response.json()["title"] == "Unavailable"
        samples = scrape(url)
        assert value(samples, "countersign_http_requests_total", group="api", method="read", status="5xx") == 3
        assert value(samples, "countersign_dependency_up", dependency="database") == 0
        assert ("countersign_queue_depth", frozenset()) not in samples  # nothing made up
    finally:
        web.stop()


# --- the database's view -----------------------------------------------------------------------------------


def backdate(action: ActionRequest, **seconds_ago: float) -> None:
    now = timezone.now()
    ActionRequest.objects.filter(id=action.id).update(
        **{field: now - timedelta(seconds=s) for field, s in seconds_ago.items()}
    )


def propose(agent, action_type: str = "decision.only", **extra) -> ActionRequest:
    params = (
        {"command": "restart"}
        if action_type == "decision.only"
        else {"credential": "internal-api", "method": "POST", "path": "/x"}
    )
    return factories.propose(agent, action_type, params, summary="metrics", **extra)


def approve(action: ActionRequest, reviewer) -> ActionRequest:
    return services.approve_action(action_id=action.id, reviewer=reviewer, via="web")


@pytest.mark.django_db
@override_settings(COUNTERSIGN_DEFAULT_NOTIFY=[])
def test_actions_in_flight_and_the_age_of_the_oldest_at_each_stage(agent, reviewer, credential):
    pending = propose(agent)
    backdate(pending, created_at=300)
    answered = approve(propose(agent), reviewer)  # decision.only: approved is its end, not waiting for a worker
    backdate(answered, decided_at=10_000)
    waiting = approve(propose(agent, "http.request"), reviewer)  # its execution not run (no commit in this test)
    backdate(waiting, decided_at=120)
    running = approve(propose(agent, "http.request"), reviewer)
    with transaction.atomic():
        transition(lock_action(running.id), ActionStatus.EXECUTING, actor=WORKER, verb="execution.started")
    backdate(running, execution_started_at=60)

    samples = in_process_scrape()
    assert [value(samples, "countersign_actions_open", status=s) for s in ("pending", "approved", "executing")] == [
        1,
        1,
        1,
    ]
    assert 300 <= value(samples, "countersign_oldest_action_age_seconds", status="pending") < 360
    assert 120 <= value(samples, "countersign_oldest_action_age_seconds", status="approved") < 180
    assert 60 <= value(samples, "countersign_oldest_action_age_seconds", status="executing") < 120
    assert value(samples, "countersign_actions", status="approved") == 2  # every approved one, as before

    # Interrupted after it may have reached the target: unknown, counted once, even after someone resolves it.
    with transaction.atomic():
        transition(lock_action(running.id), ActionStatus.UNKNOWN, actor=WORKER, verb="execution.outcome_unknown")
    samples = in_process_scrape()
    assert value(samples, "countersign_executions_total", outcome="unknown") == 1
    assert value(samples, "countersign_actions", status="unknown") == 1
    assert value(samples, "countersign_oldest_action_age_seconds", status="executing") == 0
    staff = User.objects.create_user(username="ops-staff", password="x", is_staff=True)
    services.resolve_unknown_outcome(
        running.id, user=staff, outcome="succeeded", note="Checked: it is there.", via="web"
    )
    samples = in_process_scrape()
    assert value(samples, "countersign_executions_total", outcome="unknown") == 1
    assert value(samples, "countersign_executions_total", outcome="succeeded") == 0
    assert value(samples, "countersign_actions", status="unknown") == 0
    assert value(samples, "countersign_actions", status="succeeded") == 1


SLACK_TOKEN = "xoxb-metrics-bot-token-0001"


@pytest.mark.django_db
def test_failing_webhook_slack_and_email_deliveries(agent):
    target = RecordingServer(status=500).start()
    smtp_port = free_port()  # nothing listens: every email attempt fails
    with (
        FakeSlack(token=SLACK_TOKEN) as slack,
        override_settings(
            COUNTERSIGN_SLACK_API_URL=slack.url,
            SLACK_BOT_TOKEN=SLACK_TOKEN,
            COUNTERSIGN_CALLBACK_ALLOWED_HOSTS=["127.0.0.1"],
            COUNTERSIGN_DEFAULT_NOTIFY=["slack:#approvals", "email:ops@example.com"],
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=smtp_port,
            EMAIL_TIMEOUT=5,
        ),
    ):
        slack.add_channel("C0APPROVE1", "approvals")
        slack.rate_limit("chat.postMessage", retry_after=30, times=1)
        try:
            propose(agent, callback_url=f"{target.url}/hook")
            assert deliver_due() == 0  # the webhook answered 500, Slack 429, the mail server is not there

            samples = in_process_scrape()
            for channel in ("webhook", "slack", "email"):
                assert value(samples, "countersign_deliveries_failing", channel=channel) == 1, channel
            assert value(samples, "countersign_notification_failures_total", channel="slack") == 1
            assert value(samples, "countersign_notification_failures_total", channel="email") == 1

            time_passes(40)  # still failing, now for 40 s; Slack's Retry-After is over
            slack.fail("chat.postMessage", "channel_not_found")  # refused for good: not retried
            target.status = 200
            assert deliver_due() == 2  # the webhook, and the Slack message given up on

            samples = in_process_scrape()
            assert value(samples, "countersign_deliveries_failing", channel="webhook") == 0
            assert value(samples, "countersign_deliveries_failing", channel="slack") == 0  # no backlog left ...
            assert value(samples, "countersign_notification_failures_total", channel="slack") == 2  # ... but counted
            assert value(samples, "countersign_deliveries_failing", channel="email") == 1
            assert value(samples, "countersign_deliveries_failing_oldest_seconds", channel="email") >= 40
            assert value(samples, "countersign_notification_failures_total", channel="email") == 2
            assert value(samples, "countersign_deliveries_failing_oldest_seconds", channel="webhook") == 0
            assert OutboxMessage.objects.filter(kind="notify", delivered_at__isnull=True).count() == 1
        finally:
            target.stop()
