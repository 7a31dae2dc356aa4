"""Schemathesis against the live ``/api/schema/`` of a server this test starts (uvicorn, PostgreSQL, Redis).

Two runs of the Schemathesis CLI, one with an agent key and one with a reviewer token, each bounded
(``RELIABILITY_FUZZ_EXAMPLES`` cases per operation and phase, default 15; a fixed seed): no server error,
every status code, content type, header and body as the schema declares, invalid input refused, declared
authentication enforced. And every operation called without credentials answers 401 problem JSON.
Reports (JUnit, NDJSON) land in test-artifacts/schemathesis/.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid

import httpx
import pytest

from tests.reliability_support import LOG_DIR, RedisServer, make_cast, stack_env_on, start_uvicorn, stop_all
from tests.servers import ROOT, VENV_BIN, RecordingServer

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "15")
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
        cast = make_cast(target.url, prefix="fuzz")
        yield url, cast
    finally:
        stop_all(web)
        redis_server.close()
        target.stop()


def schemathesis(url: str, name: str, authorization: str) -> subprocess.CompletedProcess:
    REPORTS.mkdir(parents=True, exist_ok=True)
    args = [
        str(VENV_BIN / "schemathesis"),
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
        "20261125",
        "--workers",
        "2",
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
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["NO_COLOR"] = "1"
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=240, check=False)
    (LOG_DIR / f"schemathesis-{name}.log").write_text(result.stdout + result.stderr)
    return result


def summary(result: subprocess.CompletedProcess) -> str:
    return "\n".join(result.stdout.splitlines()[-60:]) + result.stderr[-2000:]


def test_schemathesis_as_an_agent_and_as_a_reviewer_finds_nothing(live_api):
    url, cast = live_api
    for name, authorization in [
        ("agent", f"Bearer {cast.agent_keys[0]}"),
        ("reviewer", f"Token {cast.reviewer_tokens[0]}"),
    ]:
        result = schemathesis(url, name, authorization)
        assert result.returncode == 0, f"schemathesis as {name}:\n{summary(result)}"
        tested = re.search(r"(\d+) generated", result.stdout)
        assert tested and int(tested.group(1)) > 0, summary(result)
        print(f"\nschemathesis as {name}: " + " | ".join(result.stdout.strip().splitlines()[-3:]))


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
