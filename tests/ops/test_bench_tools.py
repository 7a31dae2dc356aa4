"""What the benchmarks rely on (docs/BENCHMARKS.md): seeded history is valid data, the fast verifier agrees
with the model-level one, and the floor endpoint exists only in the benchmark settings.

No timings here: the benchmarks measure, the suite only checks behaviour.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def _load_generator(tool: str, monkeypatch) -> None:
    """The benchmarks' load generator set to ``tool``; skipped where wrk is not installed."""
    if tool == "wrk" and not shutil.which("wrk"):
        pytest.skip("wrk is not installed (the benchmarks fall back to aiohttp)")
    monkeypatch.setenv("BENCH_LOADGEN", tool)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # wrk drops its connections when the time is up, answers in flight or not


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` answering on a loopback port for the block; its base URL."""
    server = _QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


class _Answering(BaseHTTPRequestHandler):
    def answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("tool", ["aiohttp", "wrk"])
def test_the_load_generator_paces_its_clients_when_given_a_rate(tool, monkeypatch):
    from bench import loadgen

    _load_generator(tool, monkeypatch)

    class Created(_Answering):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.answer(201)

    with _serving(Created) as base:
        full = loadgen.post_json(f"{base}/", {"a": 1}, {}, connections=4, seconds=1)
        paced = loadgen.post_json(f"{base}/", {"a": 1}, {}, connections=4, seconds=1, rate=10)
    assert full.errors == 0 and paced.errors == 0
    # 4 clients offering 10 requests/s together: each pauses 0.2-0.6 s between requests: at most ~24 in a second.
    assert 1 <= paced.requests <= 30 < full.requests, (paced.requests, full.requests)


# --- make bench-api (bench/api_cost.py): its verdicts, its CPU accounting, one action per approval -----------


def test_bench_api_table_says_met_only_when_every_target_of_the_row_holds():
    from bench.api_cost import TARGETS, table, verdicts

    good = {"req_per_s": 700.0, "cpu_ms": 1.2, "p50_at_1_ms": 3.0, "p99_paced_ms": 20.0, "errors": 0}
    rows = {
        "read": good,
        "list": {**good, "cpu_ms": 2.6},  # just over its 2.5 ms
        "wait": {**good, "req_per_s": float("nan")},  # nothing measured is not a pass
        "propose": {**good, "req_per_s": 352.0, "cpu_ms": 3.0},  # on the bars: met
        "propose-auto": {**good, "errors": 3},
        "approve": {**good, "req_per_s": 400.0, "p50_at_1_ms": 10.5},  # approve alone has a p50 target
    }
    lines = table(rows).splitlines()
    assert lines[0].startswith("| endpoint | req/s @32 | p50@1 ms | p99 paced ms | CPU ms/request @32 | target |")
    by_label = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}
    assert by_label["GET /actions/{id}"].endswith("| met |")
    assert "MISSED: CPU 2.6 > 2.5 ms" in by_label["GET /actions"]
    assert "MISSED: n/a < 633 req/s" in by_label["GET /actions/{id}/wait (decided)"]
    assert by_label["POST /actions (pending)"].endswith("| met |")
    assert "3 failed requests" in by_label["POST /actions (auto-approved)"]
    assert "p50@1 10.5 > 10 ms" in by_label["POST /actions/{id}/approve"]
    assert "p50@1" not in by_label["GET /actions/{id}"].split(" | ")[5]  # only approve is judged on it

    # The bars: 3x the upper end of "today" (117 creates/s, 211 reads/s).
    assert (TARGETS["read"].req_per_s, TARGETS["propose"].req_per_s) == (633, 351)
    failed = {v.name for v in verdicts(rows, {"p50_ms": 2.5}) if not v.ok}
    assert failed == {
        "list CPU ms/request",
        "wait req/s",
        "propose-auto failed requests",
        "approve p50 ms at 1 client",
        "wait hears the approval, p50 ms after it",
    }


def test_bench_api_cpu_per_request_counts_every_worker_and_survives_a_restart():
    from bench.api_cost import cpu_ms_per_request

    # Two workers used 1.0 s and 0.5 s for 1000 requests: 1.5 ms each.
    assert cpu_ms_per_request({1: 10.0, 2: 4.0}, {1: 11.0, 2: 4.5}, 1000) == 1.5
    # Worker 2 died and worker 3 replaced it: 3's time counts from zero, 2's up to its last reading.
    assert cpu_ms_per_request({1: 10.0, 2: 4.0}, {1: 11.0, 3: 0.25}, 500) == 2.5
    # Nothing answered: no figure rather than a division by zero or a flattering 0.
    assert math.isnan(cpu_ms_per_request({1: 1.0}, {1: 2.0}, 0))


def test_bench_api_reads_the_cpu_a_process_spent_from_proc():
    from bench.api_cost import cpu_by_pid

    burner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nwhile time.process_time() < 0.3: pass\nprint('done', flush=True)\nsys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert burner.stdout.readline().strip() == "done"
        used = cpu_by_pid([burner.pid, 2**22 + 12345])  # and a pid that does not exist
        assert used[burner.pid] >= 0.25
        assert used[2**22 + 12345] == 0.0
    finally:
        burner.communicate("", timeout=10)


@pytest.mark.parametrize("tool", ["aiohttp", "wrk"])
def test_bench_api_load_sends_each_approval_to_a_different_action(tool, monkeypatch):
    from collections import Counter

    from bench.api_cost import EXHAUSTED_PATH, Request, run_load

    _load_generator(tool, monkeypatch)
    seen: Counter[str] = Counter()
    bodies: list[bytes] = []

    class Approvals(_Answering):
        def do_POST(self):
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            seen[self.path] += 1
            known = self.path.endswith("/approve") and self.headers["Authorization"] == "Token t"
            self.answer(200 if known else 404)

    paths = [f"/api/v1/actions/{n}/approve" for n in range(60)]
    request = Request("POST", "", {"Authorization": "Token t"}, {"comment": "ok"}, paths=paths)
    with _serving(Approvals) as base:
        result = run_load(base, request, connections=4, seconds=1)
    assert {path: seen[path] for path in paths} == dict.fromkeys(paths, 1)  # each once, none left out
    assert set(seen) <= {*paths, EXHAUSTED_PATH}
    assert set(bodies) == {b'{"comment": "ok"}'}
    # Only the expected answers count: the requests sent after the paths ran out are errors, and say so.
    assert result.ok == 60 and result.paths_exhausted
    assert result.errors == result.requests - 60


@pytest.mark.parametrize("tool", ["aiohttp", "wrk"])
def test_bench_api_gives_wrk_s_own_cpu_per_request_beside_the_server_s(tool, monkeypatch):
    from bench.api_cost import Request, measure

    _load_generator(tool, monkeypatch)

    class Reads(_Answering):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.answer(200)

    with _serving(Reads) as base:
        row = measure(base, Request("GET", "/r", {}), [os.getpid()], connections=2, seconds=1)
    # Both read in clock ticks: a one-second round on a busy machine may read 0 (the accounting itself: below).
    assert row["ok"] > 0 and row["web_cpu_ms_per_request"] >= 0
    # The machine's speed during the round, from the load generator's own work; aiohttp's runs in this process, with
    # the server's.
    if tool == "wrk":
        assert isinstance(row["wrk_cpu_ms_per_request"], float) and 0 <= row["wrk_cpu_ms_per_request"] < 5
    else:
        assert row["wrk_cpu_ms_per_request"] is None


def test_bench_api_counts_the_cpu_of_the_load_generator_once_it_has_finished():
    from bench.api_cost import _children_cpu_seconds

    before = _children_cpu_seconds()
    subprocess.run([sys.executable, "-c", "import time\nwhile time.process_time() < 0.3: pass"], check=True)
    assert _children_cpu_seconds() - before >= 0.25


# --- python -m bench.instructions: instructions per request under callgrind --------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "usage: python -m bench.instructions"),
        (["propose"], "usage: python -m bench.instructions"),  # not an endpoint of bench.profile's API modes
        (["read", "40", "10"], "0 < N1 < N2"),
        (["read", "0", "10"], "0 < N1 < N2"),
        (["read", "10"], "0 < N1 < N2"),
        (["read", "ten", "40"], "0 < N1 < N2"),
    ],
)
def test_bench_instructions_refuses_bad_input_before_running_anything(args, message, monkeypatch):
    from bench import instructions

    monkeypatch.setattr(sys, "argv", ["bench.instructions", *args])
    monkeypatch.setattr(instructions, "instructions", lambda *a: pytest.fail("ran callgrind on bad input"))
    with pytest.raises(SystemExit) as refused:
        instructions.main()
    assert message in str(refused.value)


def test_bench_instructions_is_the_difference_of_two_runs_per_request(monkeypatch):
    from bench import instructions

    totals = {20: 1_000_000_000, 100: 1_560_000_000}  # 80 more requests, 560 M more instructions
    monkeypatch.setattr(sys, "argv", ["bench.instructions", "read"])
    monkeypatch.setattr(instructions, "instructions", lambda mode, n: totals[n])
    monkeypatch.setattr(instructions.shutil, "which", lambda name: "/usr/bin/valgrind")
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    instructions.main()
    assert out.getvalue().startswith("read: 7.000 M instructions per request (20 and 100 requests")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--b", "API_THREADS=1", "--endpoints", "propose,nope"], "unknown endpoint nope"),
        (["--b", "API_THREADS=1", "--endpoints", ","], "unknown endpoint (none)"),
        ([], "A and B are the same"),
        (["--a", "API_THREADS=1", "--b", "API_THREADS=1"], "A and B are the same"),
        (["--b", "API_THREADS"], "--b: NAME=VALUE"),
        (["--b-tree", "/tmp"], "not a Countersign checkout"),
        (["--b", "API_THREADS=1", "--pairs", "0"], "must be positive"),
    ],
)
def test_bench_ab_refuses_bad_input_before_starting_anything(args, message, monkeypatch, capsys):
    from bench import ab

    monkeypatch.setattr(ab.common, "prepare_database", lambda *a, **k: pytest.fail("touched a database on bad input"))
    with pytest.raises(SystemExit):
        ab.main(args)
    assert message in capsys.readouterr().err


def test_bench_ab_pairs_each_round_with_the_other_sides_next_to_it():
    """B - A per pair, the pairs B won, and the ratio with each round's wrk CPU divided out (the machine's speed)."""
    from bench import ab

    def row(cpu: float, wrk: float, rate: float) -> dict:
        return {"web_cpu_ms_per_request": cpu, "wrk_cpu_ms_per_request": wrk, "req_per_s": rate,
                "db_cpu_ms_per_request": 1.0, "errors": 0}  # fmt: skip

    # The machine twice as slow in the second pair: B is 10% cheaper in both, which the medians of the sides hide.
    a = [row(3.0, 0.05, 400), row(6.0, 0.10, 200)]
    b = [row(2.7, 0.05, 420), row(5.4, 0.10, 210)]
    result = ab.compare({"a": a, "b": b})
    assert result["b_won"] == 2 and result["pairs"] == 2
    assert result["cpu_ms_b_minus_a"] == pytest.approx(-0.45)
    assert result["b_over_a_per_wrk_cpu"] == pytest.approx(0.9)
    assert result["req_per_s"] == {"a": 300.0, "b": 315.0}


@pytest.mark.django_db
def test_bench_api_counts_the_cpu_of_the_database_serving_it():
    """PostgreSQL's CPU per request is read from its processes on this machine: the backend serving this very
    connection is among them."""
    from django.db import connection

    from bench.api_cost import database_pids

    if connection.vendor != "postgresql" or connection.settings_dict["HOST"] not in ("127.0.0.1", "localhost", ""):
        pytest.skip("a PostgreSQL server on this machine")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (backend,) = cursor.fetchone()
    assert backend in database_pids()


@pytest.mark.parametrize("args", [["nope"], ["read"], ["approve", "ten"], ["approve", "0"], ["approve", "5", "6"]])
def test_bench_layers_refuses_bad_input_before_touching_a_database(args, monkeypatch):
    from bench import layers

    monkeypatch.setattr(layers.profile, "setup_api", lambda: pytest.fail("touched a database"))
    with pytest.raises(SystemExit) as refused:
        layers.main(args)
    assert "usage: python -m bench.layers" in str(refused.value)


def test_bench_layers_counts_each_layer_while_inside_and_puts_everything_back():
    import agents.authentication
    import approvals.services
    from approvals.api import views
    from approvals.api.plain_writes import PlainWrites
    from approvals.api.serializers import ProposalInput
    from bench import layers

    chosen = layers.layers_for("propose-pending")

    def now():
        return (
            approvals.services.propose_action,
            agents.authentication.authenticate_agent_key,
            ProposalInput.is_valid,
            views.propose,
            PlainWrites._act,
        )

    before = now()
    spent = layers.Counter()
    with layers.timed(chosen, spent):
        assert agents.authentication.authenticate_agent_key("not a key") is None  # refused before any read
        assert ProposalInput(data={}).is_valid() is False
        assert all(wrapped is not original for wrapped, original in zip(now(), before, strict=True))
    assert set(spent) == {"authentication", "validation (serializer)"}
    assert now() == before and "is_valid" not in vars(ProposalInput)  # inherited before, inherited again


def test_bench_layers_gives_each_layer_less_the_layers_directly_inside_it():
    from bench import layers

    chosen = layers.layers_for("approve")
    order = "the shortcut's order (rate limit, parsing)"
    spent = {"the request's thread": 3.0, order: 2.5, "authentication": 0.3, "views.approve": 2.0,
             "validation (serializer)": 0.1, "the service (approve_action)": 1.5}  # fmt: skip
    rows = dict(layers.exclusive(4.0, spent, chosen))
    assert rows["the whole request (the process)"] == 4.0
    assert rows["the event loop's side (the whole less the thread)"] == pytest.approx(1.0)
    assert rows["the request's thread (less the layers inside)"] == pytest.approx(0.5)
    assert rows[order + " (less the layers inside)"] == pytest.approx(0.2)
    assert rows["views.approve (less the layers inside)"] == pytest.approx(0.4)
    assert rows["authentication"] == 0.3 and rows["the service (approve_action)"] == 1.5
    assert sum(value for what, value in rows.items() if what != "the whole request (the process)") == pytest.approx(4.0)


@pytest.mark.django_db(transaction=True)  # the socket's consumer reads the session from another thread
@pytest.mark.parametrize("staff", [False, True])
def test_the_benchmarks_signed_in_session_opens_the_queue_page_and_the_reviewers_socket(reviewers_group, staff):
    # bench-push's 200 sockets and bench-history's pages sign in this way: a session the site takes for nobody sends
    # the pages to the log-in form and closes every socket, and `make bench` stops at its second benchmark.
    from asgiref.sync import async_to_sync
    from django.test import Client, override_settings

    from bench import common
    from config.asgi import application
    from tests.support.asgi import first_socket_answer

    person = common.user("bench-reviewer-000", group=None if staff else reviewers_group, staff=staff)
    cookie = common.session_cookie(person)
    with override_settings(ALLOWED_HOSTS=["localhost", "testserver"], SECURE_SSL_REDIRECT=False):
        page = Client(HTTP_COOKIE=cookie).get("/")
        assert page.status_code == 200 and page.context["user"] == person

        answer = async_to_sync(first_socket_answer)(application, cookie, origin="http://localhost")
        assert answer == {"type": "websocket.accept", "subprotocol": None}
