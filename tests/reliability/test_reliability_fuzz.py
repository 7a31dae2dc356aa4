"""Schemathesis against the live ``/api/schema/`` of a server this test starts (uvicorn, PostgreSQL, Redis).

Two runs of the Schemathesis CLI, bounded (``RELIABILITY_FUZZ_EXAMPLES`` cases per operation and phase,
default 10; fixed seed ``RELIABILITY_FUZZ_SEED``): with an agent key, every ``{action_id}`` being the agent's
own (rejected) action; with a reviewer token, another agent's pending action. ``RELIABILITY_FUZZ_FULL=1`` adds
a run per principal with random ids. Checked: no server error; status codes, content types, headers and bodies
as the schema declares; invalid input refused; declared authentication enforced. And every operation called
without credentials (or with made-up ones) answers 401 problem JSON.
Reports (JUnit, NDJSON) land in test-artifacts/schemathesis/.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid

import httpx
import pytest

from tests.support.reliability_support import (
    LOG_DIR,
    Api,
    RedisServer,
    make_cast,
    stack_env_on,
    start_uvicorn,
    stop_all,
)
from tests.support.servers import ROOT, VENV_BIN, RecordingServer

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "10")
FULL = os.environ.get("RELIABILITY_FUZZ_FULL", "") == "1"
SEED = os.environ.get("RELIABILITY_FUZZ_SEED", "20261125")
REPORTS = ROOT / "test-artifacts" / "schemathesis"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "ignored_auth",
    ]
)


@pytest.fixture
def live_api(stack_env):
    target = RecordingServer().start()
    redis_server = RedisServer(name="fuzz-redis").start()
    web = None
    try:
        web, url = start_uvicorn(stack_env_on(stack_env, redis_server), "fuzz-web")
        cast = make_cast(target.url, agents=2, prefix="fuzz")
        yield url, cast
    finally:
        stop_all(web)
        redis_server.close()
        target.stop()


def schemathesis(url: str, name: str, authorization: str, action_id: str | None = None, *extra: str):
    """One bounded CLI run; with ``action_id`` every ``{action_id}`` is that real action instead of a random id."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    config = REPORTS / f"{name}.toml"
    # The long-poll answers at its timeout when nothing happens: keep that short for every generated case.
    lines = ["[cache]", "enabled = false", "", "[parameters]", '"query.timeout" = 1']
    if action_id:
        lines.append(f'"path.action_id" = "{action_id}"')
    config.write_text("\n".join(lines) + "\n")
    args = [
        str(VENV_BIN / "schemathesis"),
        "--config-file",
        str(config),
        "run",
        f"{url}/api/schema/",
        "--url",
        url,
        "--header",
        f"Authorization: {authorization}",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        EXAMPLES,
        "--seed",
        SEED,
        # One worker: Hypothesis parses lambdas with ast.parse, which CPython 3.11 can break across
        # threads ("SystemError: AST constructor recursion depth mismatch").
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--report",
        "junit,ndjson",
        "--report-junit-path",
        str(REPORTS / f"{name}.xml"),
        "--report-ndjson-path",
        str(REPORTS / f"{name}.ndjson"),
        "--output-sanitize",
        "true",
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["NO_COLOR"] = "1"
    result = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPORTS, timeout=240, check=False)
    (LOG_DIR / f"schemathesis-{name}.log").write_text(result.stdout + result.stderr)
    return result


def summary(result: subprocess.CompletedProcess) -> str:
    return "\n".join(result.stdout.splitlines()[-60:]) + result.stderr[-2000:]


def test_schemathesis_as_an_agent_and_as_a_reviewer_finds_nothing(live_api):
    url, cast = live_api
    agent, reviewer = f"Bearer {cast.agent_keys[0]}", f"Token {cast.reviewer_tokens[0]}"
    api = Api(url)
    # Real actions, so operations on one answer 200 with a body to check, not only 404: the agent's own
    # rejected action (every read answers at once), and another agent's pending one for the reviewer to decide.
    rejected = api.propose(cast.agent_keys[0], "/fuzz/rejected").json()["id"]
    assert api.reject(cast.reviewer_tokens[0], rejected).status_code == 200
    pending = api.propose(cast.agent_keys[1], "/fuzz/pending").json()["id"]
    api.close()
    no_wait = ("--exclude-path-regex", "/wait$")  # a reviewer's long-poll on a pending action waits each time
    runs = [
        ("agent-own-action", agent, rejected),
        ("reviewer-pending-action", reviewer, pending, *no_wait),
    ]
    if FULL:  # and with random ids (mostly 404s), as each principal
        runs += [("agent", agent, None), ("reviewer", reviewer, None, *no_wait)]
    for name, authorization, action_id, *extra in runs:
        result = schemathesis(url, name, authorization, action_id, *extra)
        assert result.returncode == 0, f"schemathesis as {name}:\n{summary(result)}"
        tested = re.search(r"(\d+) generated", result.stdout)
        assert tested and int(tested.group(1)) > 0, summary(result)
        print(f"\nschemathesis {name}: {tested.group(0)}; " + result.stdout.strip().splitlines()[-1].strip("= "))


def test_every_operation_refuses_a_call_without_credentials(live_api):
    url, _ = live_api
    schema = httpx.get(f"{url}/api/schema/", headers={"Accept": "application/json"}).json()
    operations = [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    ]
    assert len(operations) >= 9
    for method, path in operations:
        concrete = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
        for headers in ({}, {"Authorization": "Bearer cs_nope_nope"}, {"Authorization": "Token csr_nope_nope"}):
            response = httpx.request(method, f"{url}{concrete}", headers=headers, json={} if method != "GET" else None)
            assert response.status_code == 401, (method, path, headers, response.status_code, response.text[:200])
            assert response.headers["Content-Type"].startswith("application/problem+json"), (method, path)
