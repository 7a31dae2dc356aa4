"""What each hot API request costs the server (``make bench-api``; issue 21's targets).

One server in the recommended layout (uvicorn x ``BENCH_WEB_WORKERS`` with the psycopg pool, the production
settings, PostgreSQL with fsync, Redis database 5) on a database of its own (``countersign_perf_api``,
re-created each run unless ``BENCH_API_REUSE=1``). Seven endpoints, each at 1, 8 and 32 closed-loop clients
(``BENCH_API_CLIENTS``), the endpoints alternating inside each round so that a change of the machine's load
hits all of them:

- ``read``: ``GET /api/v1/actions/{id}``, an agent's own pending action;
- ``list``: ``GET /api/v1/actions``, the agent's own list (``BENCH_API_LIST_SIZE`` actions, the default page);
- ``wait``: ``GET /api/v1/actions/{id}/wait?until=decision`` on an action already decided (returns at once);
- ``propose``: ``POST /api/v1/actions``, decision.only, no policy rule for the agent (the default: pending);
- ``propose-auto`` / ``propose-deny``: the same body from agents a policy rule auto-approves / denies;
- ``approve``: ``POST /api/v1/actions/{id}/approve`` by a reviewer token, every request a different pending
  action (copies of a real pending proposal, made in SQL before the round and handed out by wrk's Lua script
  or the aiohttp clients); only 200s count.

Per round: req/s, p50/p99 and **server CPU per request** = CPU seconds of the uvicorn workers (utime + stime
from /proc/<pid>/stat, before and after the round) / requests answered with the expected status. The
headline is the largest client count (``BENCH_ROUNDS`` rounds, median); the others run
``BENCH_API_OTHER_ROUNDS`` rounds. Then, per endpoint, a paced round at ``BENCH_PACED_FRACTION`` of the
saturated rate (p99: the latency when busy but not overrun, see bench/submit.py), and ``BENCH_API_WAIT_SAMPLES``
approvals one at a time with the agent's ``wait`` open on the action: the gap between the approve response
and the wait's response.

``BENCH_QUICK=1`` is a ~1-minute smoke run (2 s rounds, 1 and 32 clients, one round); ``BENCH_API_ONLY=propose,approve``
measures those endpoints only (a comparison of one change; the verdicts then cover those). Figures in
var/bench/api.json; the table compares them with issue 21's targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import common, loadgen
from bench.common import OUT, Verdict, log

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")


def _env(name: str, default: str, quick: str | None = None) -> str:
    return os.environ.get(name, quick if QUICK and quick is not None else default)


CLIENTS = tuple(sorted(int(c) for c in _env("BENCH_API_CLIENTS", "1,8,32", "1,32").split(",") if c.strip()))
SECONDS = float(_env("BENCH_SECONDS", "8", "2"))
ROUNDS = int(_env("BENCH_ROUNDS", "3", "1"))  # the median of three: this machine's speed moves between rounds
OTHER_ROUNDS = int(_env("BENCH_API_OTHER_ROUNDS", "1"))
WARMUP_SECONDS = float(_env("BENCH_API_WARMUP", "2", "1"))
PACED_FRACTION = float(_env("BENCH_PACED_FRACTION", "0.5"))
WAIT_SAMPLES = int(_env("BENCH_API_WAIT_SAMPLES", "50", "15"))
LIST_SIZE = int(_env("BENCH_API_LIST_SIZE", "200", "60"))
# Some of the endpoints only (comma-separated names), for a quick comparison; the verdicts then cover those.
ONLY = {name.strip() for name in _env("BENCH_API_ONLY", "").split(",") if name.strip()}
REUSE = os.environ.get("BENCH_API_REUSE", "") not in ("", "0")
DATABASE_URL = os.environ.get("BENCH_API_DATABASE_URL", common.DATABASE_URL.rsplit("/", 1)[0] + "/countersign_perf_api")

PROPOSAL = {
    "action_type": "decision.only",
    "summary": "Restart the billing service",
    "params": {"command": "restart", "service": "billing"},
    "context": {"reasoning": "It is stuck."},
}
APPROVAL = {"comment": "ok"}

# Issue 21: "today" (the upper end of each range is the bar for 3x), and the targets.
TODAY_CREATE_REQ_PER_S = 117
TODAY_READ_REQ_PER_S = 211
THROUGHPUT_FACTOR = 3
PACED_P99_MS = 50.0
APPROVE_P50_MS = 10.0
WAIT_GAP_P50_MS = 2.0


@dataclass(frozen=True)
class Target:
    cpu_ms: float  # server CPU per request at the headline client count, at most
    req_per_s: float  # at the headline client count, at least
    p50_at_1_ms: float | None = None  # unloaded, at most (approve only)


def _reads(cpu_ms: float) -> Target:
    return Target(cpu_ms, THROUGHPUT_FACTOR * TODAY_READ_REQ_PER_S)


def _writes(cpu_ms: float, p50_at_1_ms: float | None = None) -> Target:
    return Target(cpu_ms, THROUGHPUT_FACTOR * TODAY_CREATE_REQ_PER_S, p50_at_1_ms)


# list, wait and approve have no "today" req/s in the issue: they get the bar of their kind (a read or a write).
TARGETS: dict[str, Target] = {
    "read": _reads(1.5),
    "list": _reads(2.5),
    "wait": _reads(1.5),
    "propose": _writes(3.0),
    "propose-auto": _writes(3.5),
    "propose-deny": _writes(3.5),
    "approve": _writes(4.0, APPROVE_P50_MS),
}
LABELS = {
    "read": "GET /actions/{id}",
    "list": "GET /actions",
    "wait": "GET /actions/{id}/wait (decided)",
    "propose": "POST /actions (pending)",
    "propose-auto": "POST /actions (auto-approved)",
    "propose-deny": "POST /actions (denied)",
    "approve": "POST /actions/{id}/approve",
}


# --- the pure pieces (tests/ops/test_bench_tools.py) ------------------------------------------------------


def cpu_ms_per_request(before: dict[int, float], after: dict[int, float], requests: int) -> float:
    """Milliseconds of CPU per request from per-process CPU seconds read before and after a round.

    A process that appeared during the round (a restarted worker) counts from zero; one that vanished
    counts what it had used by the last reading (its time after that is lost, so a restart shows as a drop).
    """
    if requests <= 0:
        return float("nan")
    used = sum(after.get(pid, before.get(pid, 0.0)) - before.get(pid, 0.0) for pid in before.keys() | after.keys())
    return round(1000 * max(used, 0.0) / requests, 3)


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    return {pid: common.cpu_seconds([pid]) for pid in pids}


def database_pids() -> list[int]:
    """PostgreSQL's processes on this machine (the postmaster, its backends and helpers), found by name: their CPU
    per request is what the database spends on it (with nothing else using the database during a round)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    found.append(int(entry.name))
    return found


def approve_pool_size(fastest_req_per_s: float, seconds: float, connections: int) -> int:
    """How many pending actions a round of approvals needs: every request takes a fresh one, and the
    fastest endpoint measured so far bounds how fast approvals can go. At least 500/s's worth, above the approvals'
    target: measured alone (``BENCH_API_ONLY=approve``), an approval has only its own slower rounds to go by."""
    return math.ceil(1.5 * max(fastest_req_per_s, 500.0) * seconds) + 4 * connections + 50


def judge(name: str, row: dict[str, Any], target: Target) -> tuple[bool, list[str]]:
    """(met, what missed) for one endpoint's figures against its target; a figure that is missing (NaN) misses."""
    missed = []
    if not row["cpu_ms"] <= target.cpu_ms:
        missed.append(f"CPU {_fmt(row['cpu_ms'])} > {target.cpu_ms:g} ms")
    if not row["req_per_s"] >= target.req_per_s:
        missed.append(f"{_fmt(row['req_per_s'])} < {target.req_per_s:g} req/s")
    if not row["p99_paced_ms"] <= PACED_P99_MS:
        missed.append(f"paced p99 {_fmt(row['p99_paced_ms'])} > {PACED_P99_MS:g} ms")
    if target.p50_at_1_ms is not None and not row["p50_at_1_ms"] <= target.p50_at_1_ms:
        missed.append(f"p50@1 {_fmt(row['p50_at_1_ms'])} > {target.p50_at_1_ms:g} ms")
    if row["errors"]:
        missed.append(f"{row['errors']} failed requests")
    return not missed, missed


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:g}"
    return str(value)


def target_text(target: Target) -> str:
    text = f"CPU <= {target.cpu_ms:g} ms, >= {target.req_per_s:g} req/s, paced p99 <= {PACED_P99_MS:g} ms"
    if target.p50_at_1_ms is not None:
        text += f", p50@1 <= {target.p50_at_1_ms:g} ms"
    return text


def table(rows: dict[str, dict[str, Any]], targets: dict[str, Target] = TARGETS) -> str:
    """The figures beside the targets, one line per endpoint, as a Markdown table."""
    lines = [
        "| endpoint | req/s @32 | p50@1 ms | p99 paced ms | CPU ms/request @32 | target | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        target = targets[name]
        met, missed = judge(name, row, target)
        verdict = "met" if met else "MISSED: " + "; ".join(missed)
        cells = [LABELS.get(name, name), row.get("req_per_s"), row.get("p50_at_1_ms"), row.get("p99_paced_ms")]
        cells += [row.get("cpu_ms"), target_text(target), verdict]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    return "\n".join(lines)


def verdicts(rows: dict[str, dict[str, Any]], wait_gap: dict[str, Any] | None) -> list[Verdict]:
    out = []
    for name, row in rows.items():
        target = TARGETS[name]
        out.append(
            Verdict(f"{name} CPU ms/request", row["cpu_ms"], f"<= {target.cpu_ms:g}", row["cpu_ms"] <= target.cpu_ms)
        )
        out.append(
            Verdict(f"{name} req/s", row["req_per_s"], f">= {target.req_per_s:g}", row["req_per_s"] >= target.req_per_s)
        )
        out.append(Verdict(f"{name} paced p99 ms", row["p99_paced_ms"], "<= 50", row["p99_paced_ms"] <= PACED_P99_MS))
        if target.p50_at_1_ms is not None:
            p50 = row["p50_at_1_ms"]
            out.append(
                Verdict(f"{name} p50 ms at 1 client", p50, f"<= {target.p50_at_1_ms:g}", p50 <= target.p50_at_1_ms)
            )
        out.append(Verdict(f"{name} failed requests", row["errors"], "0", row["errors"] == 0))
    if wait_gap is not None:
        gap = wait_gap["p50_ms"]
        out.append(
            Verdict("wait hears the approval, p50 ms after it", gap, f"<= {WAIT_GAP_P50_MS:g}", gap <= WAIT_GAP_P50_MS)
        )
    return out


# --- load: one method and path, or a fresh path per request ------------------------------------------------


@dataclass
class Request:
    """What a round sends: ``method`` to ``path`` (or, with ``paths``, each request to the next of them)."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict | None = None
    expect: int = 200
    paths: list[str] = field(default_factory=list)


@dataclass
class Load:
    tool: str
    ok: int  # answered with the expected status
    requests: int
    seconds: float
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    paths_exhausted: bool = False

    @property
    def errors(self) -> int:
        return self.requests - self.ok + self.socket_errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "requests": self.requests,
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "req_per_s": round(self.ok / self.seconds, 1) if self.seconds else 0.0,
            "errors": self.errors,
            "p50_ms": round(self.p50_ms, 2),
            "p90_ms": round(self.p90_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "max_ms": round(self.max_ms, 2),
            **({"paths_exhausted": True} if self.paths_exhausted else {}),
        }


EXHAUSTED_PATH = "/bench-paths-exhausted"

# Each wrk thread has a Lua state of its own: setup() (in the main state) numbers the threads, each thread
# keeps every n-th path of the file, and done() adds up the threads' counts of expected answers.
_WRK_LUA = """
local threads = {{}}
setup = function(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
ok = 0
exhausted = 0
local paths = {{}}
local next_path = 0
init = function(args)
  local file = {paths_file}
  if file ~= "" then
    local n = 0
    for line in io.lines(file) do
      if n % {threads} == tid then table.insert(paths, line) end
      n = n + 1
    end
  end
end
{headers}
-- wrk calls thread 0's request() once before the run, to count the requests it returns (script_verify_request):
-- that call must not use up a path.
local verified = false
request = function()
  local path = {path}
  if #paths > 0 or {paths_file} ~= "" then
    if tid == 0 and not verified then
      verified = true
      return wrk.format({method}, paths[1] or {exhausted_path}, nil, {body})
    end
    next_path = next_path + 1
    path = paths[next_path]
    if path == nil then
      exhausted = 1
      path = {exhausted_path}
    end
  end
  return wrk.format({method}, path, nil, {body})
end
response = function(status, headers, body)
  if status == {expect} then ok = ok + 1 end
end
{delay}
done = function(summary, latency, requests)
  local good, out = 0, 0
  for _, t in ipairs(threads) do
    good = good + t:get("ok")
    out = out + t:get("exhausted")
  end
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON{{\\"requests\\":%d,\\"ok\\":%d,\\"exhausted\\":%d,\\"duration_us\\":%d,\\"errors\\":%d," ..
    "\\"p50\\":%d,\\"p90\\":%d,\\"p99\\":%d,\\"max\\":%d}}\\n",
    summary.requests, good, out, summary.duration, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def wrk_script(request: Request, *, threads: int, pause_ms: float, paths_file: str = "") -> str:
    q = loadgen._lua_string
    header_lines = "\n".join(f"wrk.headers[{q(k)}] = {q(v)}" for k, v in request.headers.items())
    if request.body is not None:
        header_lines += '\nwrk.headers["Content-Type"] = "application/json"'
    delay = (
        f"delay = function() return math.random({int(pause_ms * 0.5)}, {int(pause_ms * 1.5)}) end" if pause_ms else ""
    )
    return _WRK_LUA.format(
        paths_file=q(paths_file),
        threads=threads,
        headers=header_lines,
        path=q(request.path),
        exhausted_path=q(EXHAUSTED_PATH),
        method=q(request.method),
        body=q(json.dumps(request.body)) if request.body is not None else "nil",
        expect=request.expect,
        delay=delay,
    )


def run_load(
    base_url: str, request: Request, *, connections: int, seconds: float, rate: float | None = None, threads: int = 2
) -> Load:
    """``connections`` closed-loop clients for ``seconds`` (with ``rate``: pausing so that together they offer
    about ``rate`` requests/s), with wrk if installed, else aiohttp (bench/loadgen.py)."""
    pause_ms = 1000 * connections / rate if rate else 0
    threads = max(1, min(threads, connections))
    if loadgen.tool() == "wrk":
        return _wrk(base_url, request, connections=connections, seconds=seconds, threads=threads, pause_ms=pause_ms)
    return asyncio.run(_aiohttp(base_url, request, connections=connections, seconds=seconds, pause_ms=pause_ms))


def _wrk(base_url: str, request: Request, *, connections: int, seconds: float, threads: int, pause_ms: float) -> Load:
    OUT.mkdir(parents=True, exist_ok=True)
    paths_file = ""
    if request.paths:
        paths_path = OUT / f"wrk-paths-{os.getpid()}.txt"
        paths_path.write_text("\n".join(request.paths) + "\n")
        paths_file = str(paths_path)
    script = OUT / f"wrk-api-{os.getpid()}.lua"
    script.write_text(wrk_script(request, threads=threads, pause_ms=pause_ms, paths_file=paths_file))
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    args += ["-s", str(script), base_url]
    try:
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    finally:
        if paths_file:
            Path(paths_file).unlink(missing_ok=True)
    line = next((x for x in out.splitlines() if x.startswith("BENCHJSON")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    data = json.loads(line[len("BENCHJSON") :])
    return Load(
        tool="wrk",
        ok=data["ok"],
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        socket_errors=data["errors"],
        p50_ms=data["p50"] / 1000,
        p90_ms=data["p90"] / 1000,
        p99_ms=data["p99"] / 1000,
        max_ms=data["max"] / 1000,
        paths_exhausted=bool(data["exhausted"]),
    )


async def _aiohttp(base_url: str, request: Request, *, connections: int, seconds: float, pause_ms: float) -> Load:
    import random

    import aiohttp

    latencies: list[float] = []
    ok = socket_errors = 0
    exhausted = False
    paths = iter(request.paths) if request.paths else None
    payload = json.dumps(request.body).encode() if request.body is not None else None
    headers = {**request.headers, **({"Content-Type": "application/json"} if payload is not None else {})}
    deadline = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal ok, socket_errors, exhausted
        while time.perf_counter() < deadline:
            if pause_ms:
                await asyncio.sleep(random.uniform(0.5, 1.5) * pause_ms / 1000)
            path = request.path
            if paths is not None:
                path = next(paths, None)
                if path is None:
                    exhausted = True
                    return
            started = time.perf_counter()
            try:
                async with session.request(request.method, base_url + path, data=payload, headers=headers) as response:
                    await response.read()
                    ok += response.status == request.expect
            except aiohttp.ClientError:
                socket_errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        await asyncio.gather(*(client(session) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    ms = [x * 1000 for x in latencies]
    return Load(
        tool="aiohttp",
        ok=ok,
        requests=len(ms),
        seconds=elapsed,
        socket_errors=socket_errors,
        p50_ms=common.percentile(ms, 50),
        p90_ms=common.percentile(ms, 90),
        p99_ms=common.percentile(ms, 99),
        max_ms=max(ms) if ms else float("nan"),
        paths_exhausted=exhausted,
    )


# --- fixtures (in this process, through the services; the approve pool in SQL) ----------------------------


@dataclass
class Fixtures:
    agent_key: str  # reads, lists, waits (its history stays as seeded)
    propose_key: str  # proposes (no rule names it: pending, the default policy)
    auto_key: str  # a rule auto-approves its decision.only proposals
    deny_key: str  # a rule denies them
    approve_agent_key: str  # owns the pending actions the reviewer approves
    reviewer_token: str
    pending_id: str  # the agent's own pending action
    decided_id: str  # the agent's own approved action
    template_id: str  # a pending action of the approve agent, copied for every approval
    approve_agent_id: Any = None


def make_fixtures(*, list_size: int = LIST_SIZE) -> Fixtures:
    """Agents, keys, a reviewer, the policy rules, and the agent's history (``list_size`` actions)."""
    from approvals import services
    from approvals.models import Review
    from approvals.policies import store as policy_store

    owner = common.user("bench-owner")
    group = common.reviewers_group()
    reviewer = common.user("bench-approver", group=group)
    agent, agent_key = common.agent_with_key("bench-api", owner=owner, allow=["decision.only"])
    _, propose_key = common.agent_with_key("bench-api-propose", owner=owner, allow=["decision.only"])
    auto, auto_key = common.agent_with_key("bench-api-auto", owner=owner, allow=["decision.only"])
    deny, deny_key = common.agent_with_key("bench-api-deny", owner=owner, allow=["decision.only"])
    approver_agent, approve_agent_key = common.agent_with_key("bench-api-approve", owner=owner, allow=["decision.only"])
    # The rules name their agent, so the pending proposals of the others meet the default policy.
    policy_store.save_rule(
        {
            "name": f"bench-auto-{common.RUN_ID}",
            "agent": auto.name,
            "action_type": "decision.only",
            "effect": "auto_approve",
        },
        actor=common.actor(),
    )
    policy_store.save_rule(
        {
            "name": f"bench-deny-{common.RUN_ID}",
            "agent": deny.name,
            "action_type": "decision.only",
            "effect": "deny",
            "reason": "The benchmark's denied proposal.",
        },
        actor=common.actor(),
    )

    def propose(who, n: int = 0):
        proposal = services.Proposal(**{**PROPOSAL, "summary": f"{PROPOSAL['summary']} #{n}"})
        return services.propose_action(agent=who, proposal=proposal)[0]

    history = [propose(agent, n) for n in range(max(list_size - 2, 0))]
    decided = propose(agent, list_size - 1)
    services.approve_action(action_id=decided.id, reviewer=reviewer, via=Review.Via.API, comment="ok")
    pending = propose(agent, list_size)
    template = propose(approver_agent)
    del history
    return Fixtures(
        agent_key=agent_key,
        propose_key=propose_key,
        auto_key=auto_key,
        deny_key=deny_key,
        approve_agent_key=approve_agent_key,
        reviewer_token=common.reviewer_token(reviewer),
        pending_id=str(pending.id),
        decided_id=str(decided.id),
        template_id=str(template.id),
        approve_agent_id=approver_agent.pk,
    )


def copy_pending(template_id: str, count: int) -> list[str]:
    """``count`` copies of a pending action (every column as proposed, a new id, no idempotency key): each
    can be approved once. Made in SQL, thousands a second; they have no audit event of their own."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = 'approvals_actionrequest' ORDER BY ordinal_position"
        )
        columns = [row[0] for row in cursor.fetchall()]
        fresh = {"id": "gen_random_uuid()", "idempotency_key": "NULL", "claimed_by_id": "NULL", "claimed_at": "NULL"}
        fresh |= {"created_at": "now() - (n * interval '1 microsecond')", "updated_at": "now()"}
        names = ", ".join(f'"{c}"' for c in columns)
        values = ", ".join(fresh.get(c, f'a."{c}"') for c in columns)
        cursor.execute(
            f"INSERT INTO approvals_actionrequest ({names}) SELECT {values} "  # the names come from the catalog
            "FROM approvals_actionrequest a, generate_series(1, %s) AS n WHERE a.id = %s RETURNING id",
            [count, template_id],
        )
        return [str(row[0]) for row in cursor.fetchall()]


def drop_unused(ids: list[str]) -> None:
    """Remove the copies a round did not approve (they would sit in the reviewers' queue)."""
    from django.db import connection

    with contextlib.suppress(Exception), connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM approvals_actionrequest a WHERE a.id = ANY(%s::uuid[]) AND a.status = 'pending' "
            "AND NOT EXISTS (SELECT 1 FROM approvals_review r WHERE r.action_id = a.id)",
            [ids],
        )


def requests_for(fx: Fixtures) -> dict[str, Request]:
    agent = {"Authorization": f"Bearer {fx.agent_key}"}
    return {
        "read": Request("GET", f"/api/v1/actions/{fx.pending_id}", agent),
        "list": Request("GET", "/api/v1/actions", agent),
        "wait": Request("GET", f"/api/v1/actions/{fx.decided_id}/wait?until=decision&timeout=5", agent),
        "propose": Request(
            "POST", "/api/v1/actions", {"Authorization": f"Bearer {fx.propose_key}"}, PROPOSAL, expect=201
        ),
        "propose-auto": Request(
            "POST", "/api/v1/actions", {"Authorization": f"Bearer {fx.auto_key}"}, PROPOSAL, expect=201
        ),
        "propose-deny": Request(
            "POST", "/api/v1/actions", {"Authorization": f"Bearer {fx.deny_key}"}, PROPOSAL, expect=201
        ),
        "approve": Request("POST", "", {"Authorization": f"Token {fx.reviewer_token}"}, APPROVAL),
    }


def approve_paths(ids: list[str]) -> list[str]:
    return [f"/api/v1/actions/{i}/approve" for i in ids]


# --- the wait hears the approval ------------------------------------------------------------------------


async def wait_hears_approval(base_url: str, fx: Fixtures, ids: list[str]) -> dict[str, Any]:
    """For each pending action: the agent's wait opened, then the reviewer approves; the gap between the
    approve's response and the wait's, and the approve's own latency (one at a time, no other load)."""
    import aiohttp

    agent = {"Authorization": f"Bearer {fx.approve_agent_key}"}
    reviewer = {"Authorization": f"Token {fx.reviewer_token}", "Content-Type": "application/json"}
    gaps, approvals, failures = [], [], 0
    async with aiohttp.ClientSession() as session:

        async def wait(action_id: str) -> tuple[float, str]:
            url = f"{base_url}/api/v1/actions/{action_id}/wait?until=decision&timeout=10"
            async with session.get(url, headers=agent) as response:
                body = await response.json()
            return time.perf_counter(), body.get("status", "")

        for action_id in ids:
            waiting = asyncio.ensure_future(wait(action_id))
            await asyncio.sleep(0.1)  # the wait subscribes to the action's group before it reads the action
            started = time.perf_counter()
            url = f"{base_url}/api/v1/actions/{action_id}/approve"
            async with session.post(url, data=json.dumps(APPROVAL), headers=reviewer) as response:
                await response.read()
                status = response.status
            approved = time.perf_counter()
            heard, state = await waiting
            if status != 200 or state != "approved":
                failures += 1
                continue
            approvals.append(approved - started)
            gaps.append(heard - approved)
    gap_ms = [g * 1000 for g in gaps]
    return {
        "samples": len(gaps),
        "failures": failures,
        "gap_p50_ms": round(common.percentile(gap_ms, 50), 2),
        "gap_p99_ms": round(common.percentile(gap_ms, 99), 2),
        "gap_max_ms": round(max(gap_ms), 2) if gap_ms else float("nan"),
        "approve_ms": common.summary_ms(approvals),
    }


# --- the run --------------------------------------------------------------------------------------------


def measure(base_url: str, request: Request, workers: list[int], **kw) -> dict[str, Any]:
    load = common.loadavg()
    before, driver_before = cpu_by_pid(workers), _children_cpu_seconds()
    db_before = cpu_by_pid(database_pids())
    result = run_load(base_url, request, **kw)
    cpu = cpu_ms_per_request(before, cpu_by_pid(workers), result.ok)
    db_cpu = cpu_ms_per_request(db_before, cpu_by_pid(list({*db_before, *database_pids()})), result.ok)
    # wrk's own CPU per request: the same work for every request of every build, so it moves only with the machine's
    # speed (a virtual machine's, which its host's load moves by half within minutes), measured over the round itself.
    driver = _children_cpu_seconds() - driver_before
    wrk_ms = round(1000 * driver / result.requests, 3) if result.tool == "wrk" and result.requests else None
    return {
        **result.as_dict(),
        "web_cpu_ms_per_request": cpu,
        "db_cpu_ms_per_request": db_cpu,
        "wrk_cpu_ms_per_request": wrk_ms,
        "load_before": load,
    }


def _children_cpu_seconds() -> float:
    """CPU seconds of this process's finished children (wrk runs as one)."""
    times = os.times()
    return times.children_user + times.children_system


def main() -> None:
    common.wait_for_quiet()
    load_start = common.loadavg()
    started = time.monotonic()
    if not REUSE:
        common.prepare_database(DATABASE_URL, fresh=True)
    else:
        common.prepare_database(DATABASE_URL)
    common.flush_redis()
    common.setup_django(DATABASE_URL)
    fx = make_fixtures()
    requests = requests_for(fx)
    names = [name for name in requests if not ONLY or name in ONLY]
    headline = max(CLIENTS)
    rounds: dict[str, dict[int, list[dict]]] = {name: {c: [] for c in CLIENTS} for name in names}
    paced: dict[str, dict] = {}

    def approve_request(connections: int, seconds: float, fastest: float) -> tuple[Request, list[str]]:
        ids = copy_pending(fx.template_id, approve_pool_size(fastest, seconds, connections))
        base = requests["approve"]
        return Request(base.method, "", base.headers, base.body, base.expect, approve_paths(ids)), ids

    env = common.server_env(DATABASE_URL)
    with common.Stack() as stack:
        web, url = stack.web(env)
        workers = web.children()
        log(
            f"web: {common.WEB_WORKERS} uvicorn workers, DB_POOL={common.DB_POOL}, load generator {loadgen.tool()}; "
            f"clients {CLIENTS}, {SECONDS:g} s rounds; load {common.loadavg()}"
        )
        # The fastest rate seen so far, the warm-up's included, over the whole run: it sizes each round's pool of
        # actions to approve (reset every round, an approval measured alone ran out of actions and its CPU per
        # approval counted the refusals' CPU).
        fastest = 0.0
        for name in names:
            request = requests[name]
            ids: list[str] = []
            if name == "approve":
                request, ids = approve_request(headline, WARMUP_SECONDS, 1000.0)
            warm = run_load(url, request, connections=headline, seconds=WARMUP_SECONDS)
            fastest = max(fastest, warm.as_dict()["req_per_s"])
            drop_unused(ids)
        log("warmed up")
        for clients in CLIENTS:
            for i in range(ROUNDS if clients == headline else OTHER_ROUNDS):
                for name in names:
                    request, ids = requests[name], []
                    if name == "approve":
                        request, ids = approve_request(clients, SECONDS, fastest)
                    row = measure(url, request, workers, connections=clients, seconds=SECONDS)
                    drop_unused(ids)
                    fastest = max(fastest, row["req_per_s"])
                    rounds[name][clients].append(row)
                    log(
                        f"{clients:>3} clients, round {i + 1}, {name}: {row['req_per_s']} req/s, p50 {row['p50_ms']} "
                        f"ms, p99 {row['p99_ms']} ms, CPU {row['web_cpu_ms_per_request']} ms/req (PostgreSQL "
                        f"{row['db_cpu_ms_per_request']}), errors "
                        f"{row['errors']}{' (ran out of actions to approve)' if row.get('paths_exhausted') else ''} "
                        f"(load {row['load_before']}, wrk {row['wrk_cpu_ms_per_request']} ms/req)"
                    )
        for name in names:
            saturated = statistics.median(r["req_per_s"] for r in rounds[name][headline])
            rate = round(max(PACED_FRACTION * saturated, 1.0), 1)
            request, ids = requests[name], []
            if name == "approve":
                request, ids = approve_request(headline, SECONDS, rate)
            row = measure(url, request, workers, connections=headline, seconds=SECONDS, rate=rate)
            drop_unused(ids)
            paced[name] = {**row, "offered_req_per_s": rate}
            log(
                f"paced {name}, {headline} clients offering {rate} req/s: {row['req_per_s']} req/s, "
                f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, errors {row['errors']} "
                f"(load {row['load_before']}, wrk {row['wrk_cpu_ms_per_request']} ms/req)"
            )
        load_wait = common.loadavg()
        ids = copy_pending(fx.template_id, WAIT_SAMPLES)
        heard = asyncio.run(wait_hears_approval(url, fx, ids))
        heard["load_before"] = load_wait
        log(f"wait hears the approval: {heard}")

    def med(name: str, clients: int, key: str) -> float:
        values = [r[key] for r in rounds[name].get(clients, [])]
        return round(statistics.median(values), 2) if values else float("nan")

    lowest = min(CLIENTS)
    rows = {
        name: {
            "req_per_s": med(name, headline, "req_per_s"),
            "cpu_ms": med(name, headline, "web_cpu_ms_per_request"),
            "p50_at_1_ms": med(name, lowest, "p50_ms") if lowest == 1 else float("nan"),
            "p99_paced_ms": paced[name]["p99_ms"],
            "errors": sum(r["errors"] for rs in rounds[name].values() for r in rs) + paced[name]["errors"],
        }
        for name in names
    }
    figures = {
        "clients": list(CLIENTS),
        "headline_clients": headline,
        "seconds_per_round": SECONDS,
        "rounds_at_headline": ROUNDS,
        "quick": QUICK,
        "web_workers": common.WEB_WORKERS,
        "db_pool": common.DB_POOL,
        "load_generator": loadgen.tool(),
        "summary": rows,
        "rounds": {name: {str(c): rs for c, rs in by.items()} for name, by in rounds.items()},
        "paced": paced,
        "wait_hears_approval": heard,
        "load_start": load_start,
        "load_end": common.loadavg(),
        "run_seconds": round(time.monotonic() - started, 1),
    }
    gap = {"p50_ms": heard["gap_p50_ms"]}
    checks = verdicts(rows, gap)
    checks.append(Verdict("wait samples that failed", heard["failures"], "0", heard["failures"] == 0))
    common.report("api", figures, checks)
    print()
    print(table(rows))
    print(
        f"\nwait hears the approval: p50 {heard['gap_p50_ms']} ms, p99 {heard['gap_p99_ms']} ms after the approve "
        f"response ({heard['samples']} samples; target p50 <= {WAIT_GAP_P50_MS:g} ms); approve alone p50 "
        f"{heard['approve_ms']['p50_ms']} ms. Load {load_start} at the start, {figures['load_end']} at the end; "
        f"{figures['run_seconds']} s."
    )


if __name__ == "__main__":
    main()
