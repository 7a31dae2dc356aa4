"""What every benchmark shares: its own database and Redis, the server processes, fixtures, figures.

Benchmarks never use the test databases or the developer's DATABASE_URL: ``BENCH_DATABASE_URL``
(default ``countersign_perf``; bench/load.py drops and re-creates ``countersign_bench``, so not that one)
and ``BENCH_REDIS_URL`` (default Redis database 5) only. The servers run
the production settings (bench.settings) with the process layout docs/deploy.md recommends:
``WEB_CONCURRENCY`` uvicorn workers with a psycopg pool (``DB_POOL``), and a Celery worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
OUT = ROOT / "var" / "bench"
RUN_ID = uuid.uuid4().hex[:6]

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/countersign_perf")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
WEB_WORKERS = int(os.environ.get("BENCH_WEB_WORKERS", os.environ.get("WEB_CONCURRENCY", "2")))
WORKER_CONCURRENCY = int(os.environ.get("BENCH_WORKER_CONCURRENCY", "2"))
DB_POOL = os.environ.get("BENCH_DB_POOL", "8")  # per web process; "0" = no pool (a connection per request)

# The floor endpoint's table (bench/views.py), made by prepare_database outside the migrations.
FLOOR_TABLE = "bench_floor"
CREATE_FLOOR_TABLE = f"""
CREATE TABLE IF NOT EXISTS {FLOOR_TABLE} (
    id bigserial PRIMARY KEY,
    agent_id uuid NOT NULL,
    body jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""

# Fixed secrets: the benchmark database holds nothing of value.
_FIXED = {
    "SECRET_KEY": "bench-only-secret-key-not-for-production-0123456789abcdef",
    "COUNTERSIGN_CREDENTIAL_KEYS": "ttwQKd3kXV664hCSoPLkX3mgHYmF2AH1yqw8-tU2s-c=",
    "COUNTERSIGN_AUDIT_CHECKPOINT_KEY": "bench-only-audit-checkpoint-key-0123456789",
}


def server_env(database_url: str = DATABASE_URL, **extra: str) -> dict[str, str]:
    """The environment of the web and worker processes (production settings, bench endpoints on)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(_FIXED)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "COUNTERSIGN_BENCH_ENDPOINTS": "1",
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
            "SECURE_SSL_REDIRECT": "false",  # plain HTTP on loopback; TLS ends at the proxy in production
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            # Budgets far above any benchmark's rate: the limiter still counts every request in Redis.
            "COUNTERSIGN_AGENT_REQUEST_RATE": "100000000/min",
            "COUNTERSIGN_AGENT_PROPOSAL_RATE": "100000000/min",
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
            "DB_POOL": DB_POOL,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def setup_django(database_url: str = DATABASE_URL) -> None:
    """Make this process a Django process on the benchmark database (fixtures, in-process measurements)."""
    level = os.environ.get("BENCH_DRIVER_LOG_LEVEL", "WARNING")
    for key, value in server_env(database_url, LOG_LEVEL=level, DB_POOL="0").items():
        if key not in os.environ or key in _OVERRIDDEN:
            os.environ[key] = value
    import django

    django.setup()


_OVERRIDDEN = {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "LOG_LEVEL", "DB_POOL", *_FIXED}
_OVERRIDDEN |= {"SECURE_SSL_REDIRECT", "ALLOWED_HOSTS", "COUNTERSIGN_BENCH_ENDPOINTS"}
_OVERRIDDEN |= {"COUNTERSIGN_AGENT_REQUEST_RATE", "COUNTERSIGN_AGENT_PROPOSAL_RATE"}


# --- database and redis ---------------------------------------------------------------------


def _db_name(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?")[0]


def _admin_url(url: str) -> str:
    return url.rsplit("/", 1)[0] + "/postgres"


def prepare_database(database_url: str = DATABASE_URL, *, fresh: bool = False) -> None:
    """Create (or with ``fresh``, recreate) the benchmark database and migrate it."""
    import psycopg

    name = _db_name(database_url)
    if name.startswith("test"):
        raise SystemExit(f"refusing to use {name!r}: test_* databases belong to the test suites")
    with psycopg.connect(_admin_url(database_url), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and fresh:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = None
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    log(f"migrating {name} ...")
    subprocess.run(
        [str(VENV_BIN / "python"), "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=server_env(database_url, LOG_LEVEL="WARNING", DB_POOL="0"),
        check=True,
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(CREATE_FLOOR_TABLE)


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


# --- machine and load -------------------------------------------------------------------------


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def wait_for_quiet() -> None:
    """With BENCH_MAX_LOAD set, wait (up to BENCH_QUIET_TIMEOUT s) until the 1-minute load is below it."""
    limit = os.environ.get("BENCH_MAX_LOAD")
    if not limit:
        return
    deadline = time.monotonic() + float(os.environ.get("BENCH_QUIET_TIMEOUT", "600"))
    while os.getloadavg()[0] > float(limit) and time.monotonic() < deadline:
        log(f"load {loadavg()} above {limit}; waiting")
        time.sleep(15)


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A subprocess in its own session (so stopping it stops its children), logging to var/bench/."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], *, cwd: Path = ROOT):
        OUT.mkdir(parents=True, exist_ok=True)
        self.name, self.args, self.env = name, args, env
        self.log_path = OUT / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - open for the process's lifetime
        self.proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[int]:
        return children_of(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


def children_of(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(p) for p in (task / "children").read_text().split())
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far (dead processes count as 0)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_web(
    env: dict[str, str], *, workers: int = WEB_WORKERS, name: str = "web", cwd: Path = ROOT
) -> tuple[Proc, str]:
    """uvicorn as the Procfile runs it, with ``workers`` processes, serving the checkout at ``cwd``; returns (process,
    base URL)."""
    port = free_port()
    args = [str(VENV_BIN / "uvicorn"), "config.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--no-access-log", "--workers", str(workers)]
    web = Proc(name, args, env, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    _wait_http(web, f"{url}/healthz", expected_children=workers if workers > 1 else 0)
    return web, url


def _wait_http(proc: Proc, url: str, expected_children: int) -> None:
    import httpx

    deadline = time.monotonic() + 60
    ok = 0
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited:\n{proc.log()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                ok += 1
                # Every worker answers /healthz once it is up; give them all the time to start.
                if ok >= 3 and len(proc.children()) >= expected_children:
                    time.sleep(1.0)
                    return
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} did not start:\n{proc.log()[-4000:]}")


def start_worker(env: dict[str, str], *, concurrency: int = WORKER_CONCURRENCY, name: str = "worker") -> Proc:
    """A Celery worker as the Procfile runs it (prefork, ``concurrency`` children).

    Workers keep one connection per child (DB_CONN_MAX_AGE) instead of a pool: a prefork child runs one
    task at a time, and a pool opened before the fork would be shared by the children (docs/deploy.md).
    """
    env = {**env, "DB_POOL": "0", "DB_CONN_MAX_AGE": env.get("BENCH_WORKER_CONN_MAX_AGE", "60")}
    worker = Proc(
        name,
        [
            str(VENV_BIN / "celery"),
            "-A",
            "config",
            "worker",
            f"--loglevel={env.get('LOG_LEVEL', 'INFO')}",
            f"--concurrency={concurrency}",
            "--without-mingle",
            "--without-gossip",
            "-n",
            f"{name}-{RUN_ID}@%h",
        ],
        env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "ready." in worker.log():
            return worker
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker exited:\n{worker.log()[-4000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"worker did not start:\n{worker.log()[-4000:]}")


class Stack(contextlib.ExitStack):
    """Processes started by a benchmark, stopped when it ends (even on Ctrl-C or an error)."""

    def web(self, env: dict[str, str], **kw) -> tuple[Proc, str]:
        web, url = start_web(env, **kw)
        self.callback(web.stop)
        return web, url

    def worker(self, env: dict[str, str], **kw) -> Proc:
        worker = start_worker(env, **kw)
        self.callback(worker.stop)
        return worker


# --- fixtures (in this process, through the services, so everything is audited as usual) ------------

BENCH_ACTOR_NAME = "bench"


def actor():
    from audit.chain import Actor

    return Actor("user", BENCH_ACTOR_NAME, "cli")


def reviewers_group():
    from django.conf import settings
    from django.contrib.auth.models import Group

    return Group.objects.get_or_create(name=settings.COUNTERSIGN_DEFAULT_REVIEWER_GROUP)[0]


def user(username: str, *, group=None, staff: bool = False):
    from django.contrib.auth.models import User

    found, _ = User.objects.get_or_create(
        username=username, defaults={"email": f"{username}@example.com", "is_staff": staff}
    )
    if group is not None:
        found.groups.add(group)
    return found


def agent_with_key(name: str, *, owner, allow: list[str]) -> tuple[Any, str]:
    """A fresh agent (unique per run) and its key."""
    from agents.services import create_agent

    agent, _, raw = create_agent(name=f"{name}-{RUN_ID}", owner=owner, actor=actor(), allow=allow)
    return agent, raw


def reviewer_token(reviewer) -> str:
    from approvals.models import ReviewerToken

    return ReviewerToken.issue(reviewer)[1]


def session_cookie(user_obj) -> str:
    """A signed-in session for ``user_obj`` (through Django's login, with the configured backend, its signals and
    what they record), as a Cookie header value. A session made by hand named a backend no longer configured once
    sign-in moved to approvals.sso: pages and sockets took it for nobody."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user_obj)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


# --- figures ------------------------------------------------------------------------------------------


def percentile(samples: list[float], p: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary_ms(samples_s: list[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds of samples in seconds."""
    ms = [s * 1000 for s in samples_s]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p90_ms": round(percentile(ms, 90), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2) if ms else float("nan"),
        "mean_ms": round(statistics.fmean(ms), 2) if ms else float("nan"),
    }


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Verdict:
    name: str
    value: float
    target: str
    ok: bool

    def line(self) -> str:
        return f"  {'PASS' if self.ok else 'MISS'}  {self.name}: {self.value:g} (target {self.target})"


def report(name: str, figures: dict[str, Any], verdicts: list[Verdict]) -> None:
    """Print the figures and the verdicts; keep them in var/bench/<name>.json for docs/BENCHMARKS.md."""
    record = {
        "benchmark": name,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "figures": figures,
        "verdicts": [v.__dict__ for v in verdicts],
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(record, indent=2, default=str))
    print(f"\n== {name} ==")
    print(json.dumps(figures, indent=2, default=str))
    if verdicts:
        print("verdicts:")
        for v in verdicts:
            print(v.line())
    print(f"(saved to {(OUT / f'{name}.json').relative_to(ROOT)})")
