"""The README's first run, as written, in both of its environments.

A newcomer copies the README's `make demo` line (embedded, or with DATABASE_URL and REDIS_URL), then its two curl
blocks with the printed key. This runs exactly that on a fresh var/ and no keys in the environment: the steps
`make demo` would run (``make -n demo``: migrate, seed_demo, the supervisor; the install step is left out, the venv is
this one), the README's curl blocks through bash with only the URL, the key and the id substituted, and a reviewer's
approval in between (the README says "approve it in the browser"; here the reviewer API does it). The PostgreSQL line
broke once because keys were generated only when DATABASE_URL was unset (issue 17).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from tests.conftest import ARTIFACTS
from tests.ops.test_embedded import NOT_EMBEDDED, Supervised, manage
from tests.support.reliability_support import RedisServer
from tests.support.servers import ROOT, free_port, wait_until

README = (ROOT / "README.md").read_text()
README_URL = "http://127.0.0.1:8000"


def shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README, flags=re.S)


def demo_line(with_database: bool) -> str:
    """The README's `make demo` command: the bare one, or the one with DATABASE_URL and REDIS_URL."""
    lines = [line.strip() for block in shell_blocks() for line in block.splitlines()]
    lines += [line.strip() for line in re.findall(r"^    (make demo.*)$", README, flags=re.M)]
    found = [line.split("#")[0].strip() for line in lines if re.search(r"\bmake demo\b", line)]
    chosen = [line for line in found if ("DATABASE_URL=" in line) == with_database]
    assert chosen, f"no `make demo` line {'with' if with_database else 'without'} DATABASE_URL in the README"
    return chosen[0]


def curl_blocks() -> tuple[str, str]:
    """The propose block (export CS_KEY…; curl -X POST) and the wait block."""
    blocks = [b for b in shell_blocks() if "curl" in b]
    propose = next(b for b in blocks if "-X POST" in b and "/api/v1/actions" in b)
    wait = next(b for b in blocks if "/wait" in b)
    return propose, wait


def bash(script: str, env: dict[str, str], timeout: float = 60) -> str:
    done = subprocess.run(
        ["/bin/bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{script}\nfailed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def demo_env(line: str, var_dir: Path, substitutions: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The environment the README's line gives `make demo` (its VAR=value prefix), on a fresh var/ and no keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST") and k not in NOT_EMBEDDED}
    env.update({"COUNTERSIGN_VAR_DIR": str(var_dir), "PYTHONUNBUFFERED": "1"})
    words = shlex.split(line)
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = substitutions.get(name, value)
    assert words[:2] == ["make", "demo"], line
    return env, words[2:]


def make_steps(env: dict[str, str], port: int) -> list[str]:
    """What `make demo` runs, as make prints it; the venv is already installed (-o: its stamp counts as fresh)."""
    # Run from `make test`, this make is a sub-make: without its parent's flags it prints only the recipe.
    own = {k: v for k, v in env.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    dry = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", ".venv/.installed", "demo", f"PORT={port}"],
        cwd=ROOT,
        env=own,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    steps = [line for line in dry.splitlines() if line.strip()]
    assert any("seed_demo" in s for s in steps) and "config.supervise" in steps[-1], steps
    return steps


@pytest.fixture
def postgres_readme_database():
    """A database of its own for the README's PostgreSQL line (`countersign` there), dropped afterwards."""
    base = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"))
    name = f"{base.path.strip('/') or 'test'}_readme"
    admin = urlunsplit(base._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit(base._replace(path=f"/{name}"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_the_readme(tmp_path: Path, line: str, substitutions: dict[str, str]) -> None:
    var_dir = tmp_path / "var"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env, extra = demo_env(line, var_dir, substitutions)
    assert not extra, line
    for name in ("SECRET_KEY", "COUNTERSIGN_CREDENTIAL_KEYS", "COUNTERSIGN_AUDIT_CHECKPOINT_KEY"):
        assert name not in env  # a fresh clone: nobody gave any key

    *setup, start = make_steps(env, port)
    printed = "".join(bash(step, env, timeout=300) for step in setup)
    key = re.search(r"agent key\s+(cs_\S+)", printed).group(1)
    assert f"open       {url}/" in printed
    # The demo made and kept its keys in var/, with or without DATABASE_URL.
    for name in ("secret_key", "credential_key", "audit_checkpoint_key"):
        assert (var_dir / name).is_file(), name

    demo = Supervised("readme-demo", ["/bin/sh", "-c", f"exec env {start}"], env, ARTIFACTS / "logs").start()
    try:
        # Ready: database, Redis (the embedded one, or REDIS_URL's) and the broker answer. The worker may still be
        # starting; an approved execution waits for it in the broker.
        readyz = f"curl -s -o /dev/null -w '%{{http_code}}' {url}/readyz || true"
        wait_until(lambda: bash(readyz, env) == "200", timeout=60, interval=0.2, message=f"the demo:\n{demo.log()}")

        propose, wait = curl_blocks()
        propose = propose.replace(README_URL, url).replace("cs_…", key)
        created = json.loads(bash(propose, env))
        assert created["status"] == "pending", created

        wait = wait.replace(README_URL, url).replace("<id>", created["id"])
        waiting = subprocess.Popen(
            ["/bin/bash", "-c", f"export CS_KEY={key}\n{wait}"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        token = manage(env, "create_reviewer_token", "reviewer").strip()
        approved = bash(
            f"curl -s -X POST {url}/api/v1/actions/{created['id']}/approve -H 'Authorization: Token {token}' "
            "-H 'Content-Type: application/json' -d '{}'",
            env,
        )
        assert json.loads(approved)["status"] in ("approved", "executing", "succeeded"), approved
        out, _ = waiting.communicate(timeout=90)
        done = json.loads(out)
        assert done["status"] == "succeeded", done
        assert done["result"] == {"status_code": 200, "body": {"status": "ok"}}
    finally:
        demo.stop()
    assert "exited (code" not in demo.log(), demo.log()


@pytest.mark.embedded
def test_the_embedded_line_works_as_written(tmp_path):
    run_the_readme(tmp_path, demo_line(with_database=False), {})


def test_the_postgresql_and_redis_line_works_as_written_without_any_key(tmp_path, postgres_readme_database):
    # Only the addresses change: a database and a redis-server of the demo's own, not the README's `countersign`
    # and db 0. Not the suite's Redis: the suite's own worker listens there and would take the demo's tasks.
    line = demo_line(with_database=True)
    redis_server = RedisServer(name="readme-redis").start()
    try:
        run_the_readme(tmp_path, line, {"DATABASE_URL": postgres_readme_database, "REDIS_URL": redis_server.url()})
    finally:
        redis_server.close()


@pytest.mark.parametrize("missing", ["COUNTERSIGN_CREDENTIAL_KEYS", "COUNTERSIGN_AUDIT_CHECKPOINT_KEY"])
def test_production_settings_still_refuse_to_start_without_their_keys(tmp_path, missing):
    # The demo generates what it is not given; production must be given it (the same keys in every process).
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": "k9#Lq2@vX8!zR4$wN7^mT1&bY6*cH3(pJ5)sD0_fG2+eA8-uK4=iO9",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
        "COUNTERSIGN_CREDENTIAL_KEYS": "yGJBSU187eXkGrQ0HtwNUkuxb3XfR5Rd7fKrKFBT3Ts=",
        "COUNTERSIGN_AUDIT_CHECKPOINT_KEY": "production-test-checkpoint-key-0123456789",
        "COUNTERSIGN_VAR_DIR": str(tmp_path / "var"),
    }
    del env[missing]
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert f"{missing} (or _FILE) must be set in production" in result.stderr
    assert not (tmp_path / "var" / "credential_key").exists()
    assert not (tmp_path / "var" / "audit_checkpoint_key").exists()
