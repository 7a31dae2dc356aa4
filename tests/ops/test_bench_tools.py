"""What the benchmarks rely on (docs/BENCHMARKS.md): seeded history is valid data, the fast verifier agrees
with the model-level one, and the floor endpoint exists only in the benchmark settings.

No timings here: the benchmarks measure, the suite only checks behaviour.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.urls import Resolver404, resolve

from approvals.models import ActionRequest, ActionStatus, Review
from audit.canonical import canonical_json
from audit.chain import EDITED, Actor, event_body, iter_events, record_event, verify_chain, verify_log
from audit.models import AuditEvent
from bench.seeding import Command as SeedHistory
from config.request_id import bind_request_id, reset_request_id

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db(transaction=True)
def test_seed_history_makes_a_realistic_history_with_a_valid_chain():
    call_command(SeedHistory(), "300", "--pending", "7", "--audit", "--agents", "3", stdout=io.StringIO())

    assert ActionRequest.objects.count() == 300
    assert ActionRequest.objects.filter(status=ActionStatus.PENDING).count() == 7
    statuses = set(ActionRequest.objects.values_list("status", flat=True))
    assert {ActionStatus.SUCCEEDED, ActionStatus.REJECTED, ActionStatus.EXPIRED} <= statuses
    decided = ActionRequest.objects.exclude(status=ActionStatus.PENDING)
    assert not decided.filter(decided_at__isnull=True).exists()
    approved = ActionRequest.objects.filter(status__in=[ActionStatus.SUCCEEDED, ActionStatus.FAILED])
    assert Review.objects.filter(action__in=approved, verdict=Review.Verdict.APPROVE).count() >= approved.count()
    assert AuditEvent.objects.filter(verb="action.proposed").count() == 300

    result = verify_log()
    assert result.broken is None
    assert result.checked == AuditEvent.objects.count()
    assert verify_chain(iter_events()) == (result.checked, None)  # the stored bodies are what record_event writes

    # A second seed continues the same chain.
    call_command(SeedHistory(), "20", "--pending", "0", "--audit", "--agents", "3", stdout=io.StringIO())
    assert verify_log().broken is None


# Bad input: one clear error, nothing written (as every management command answers it: tests/ops/test_commands.py).
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-5"], "at least 1"),
        (["10", "--batch", "0"], "--batch must be at least 1"),
        (["10", "--pending", "11"], "--pending is between"),
    ],
)
@pytest.mark.django_db
def test_seed_history_refuses_bad_input_in_one_line_and_writes_nothing(args, message):
    before = (ActionRequest.objects.count(), AuditEvent.objects.count())
    with pytest.raises(CommandError) as refused:
        call_command(SeedHistory(), *args, stdout=io.StringIO(), stderr=io.StringIO())
    text = str(refused.value)
    assert message in text
    assert "\n" not in text.strip(), text
    assert (ActionRequest.objects.count(), AuditEvent.objects.count()) == before


def test_seed_history_runs_from_a_shell_as_the_docs_say(stack_env):
    done = subprocess.run(
        [sys.executable, "-m", "bench.seed_history", "10", "--pending", "11"],
        cwd=ROOT,
        env=stack_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == ["CommandError: --pending is between 0 and the count"], done.stderr


@pytest.mark.django_db(transaction=True)
def test_the_fast_verifier_agrees_with_the_model():
    token = bind_request_id("req-bench-1")
    try:
        with transaction.atomic():
            record_event(
                actor=Actor("user", "rita", "web"),
                verb="policy.changed",
                object_type="policy",
                object_id="3",
                data={"é": "ünïcode", "nested": {"b": [1, 2.5, None, True], "a": "\u2028"}, "big": 2**60},
            )
    finally:
        reset_request_id(token)
    with transaction.atomic():
        record_event(actor=Actor.system("beat"), verb="action.expired", object_type="action", object_id="x")

    events = list(iter_events(batch=1))
    for event in events:
        assert event.body == canonical_json(event_body(event))
    result = verify_log(watch={2, 5}, batch=1)
    assert (result.checked, result.broken) == (2, None)
    assert result.hashes == {2: events[1].hash}
    assert verify_chain(events) == (2, None)


@pytest.mark.django_db(transaction=True)
def test_the_fast_verifier_still_finds_a_changed_row():
    for n in range(3):
        with transaction.atomic():
            record_event(actor=Actor.system("cli"), verb="bench.test", object_type="x", object_id=str(n))
    with transaction.atomic():
        # The append-only trigger allows this only in the test settings' maintenance sessions.
        AuditEvent.objects.filter(seq=AuditEvent.objects.order_by("seq")[1].seq).update(data={"changed": True})
    result = verify_log()
    assert result.checked == 1
    assert result.broken is not None and result.broken.reason == EDITED


def test_the_floor_endpoint_is_not_in_the_production_urls():
    with pytest.raises(Resolver404):
        resolve("/bench/floor", urlconf="config.urls")
    assert resolve("/bench/floor", urlconf="bench.urls").url_name == "bench-floor"


@pytest.mark.parametrize("tool", ["aiohttp", "wrk"])
def test_the_load_generator_paces_its_clients_when_given_a_rate(tool, monkeypatch):
    import shutil
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from bench import loadgen

    if tool == "wrk" and not shutil.which("wrk"):
        pytest.skip("wrk is not installed (the benchmarks fall back to aiohttp)")
    monkeypatch.setenv("BENCH_LOADGEN", tool)

    class Created(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(201)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Created)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        full = loadgen.post_json(url, {"a": 1}, {}, connections=4, seconds=1)
        paced = loadgen.post_json(url, {"a": 1}, {}, connections=4, seconds=1, rate=10)
    finally:
        server.shutdown()
    assert full.errors == 0 and paced.errors == 0
    # 4 clients offering 10 requests/s together: each pauses 0.2-0.6 s between requests: at most ~24 in a second.
    assert 1 <= paced.requests <= 30 < full.requests, (paced.requests, full.requests)
