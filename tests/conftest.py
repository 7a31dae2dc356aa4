from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.cache import cache
from hypothesis import settings as hypothesis_settings
from rest_framework.test import APIClient

from agents import ratelimit
from approvals.models import ReviewerToken
from approvals.services.containment import BANNER_CACHE_KEY
from approvals.services.credentials import create_credential
from tests.factories import CLI, AgentFactory, ReviewerFactory, UserFactory, propose_body, reviewer_group
from tests.support.servers import RecordingServer, process_env, start_web, start_worker

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

# CI runs the property tests on Hypothesis's fixed sequence of examples (.ci/run sets HYPOTHESIS_PROFILE=ci), so a
# run there passes or fails the same way every time; a developer's runs keep exploring new examples.
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
__all__ = ["CLI", "propose_body"]  # tests import these from here as well as from tests.factories


@pytest.fixture(scope="session", autouse=True)
def _clean_redis():
    """The test Redis database holds only this run's queues and channel groups (tests/unit overrides this: the fast
    lane runs with no Redis at all)."""
    redis.Redis.from_url(settings.REDIS_URL).flushdb()


@pytest.fixture(autouse=True)
def _no_cached_banner():
    """The kill-switch banner is cached for seconds in the shared Redis (approvals.services.containment.banner): each
    test starts without the one an earlier test left, which would show that test's switches, and lapse mid-test."""
    cache.delete(BANNER_CACHE_KEY)


@pytest.fixture(autouse=True)
def _agent_reads_connections_closed():
    """A test that drove config.asgi.application leaves its agent reads' connections (approvals.api.agent_reads)
    idle in this process: closed after it, or they would keep the test database from being dropped at the end."""
    yield
    asgi = sys.modules.get("config.asgi")
    if asgi is not None:
        asgi.agent_reads.connections.discard()
    shared = sys.modules.get("approvals.api.loop_connections")
    if shared is not None:
        shared.shared.discard()  # the wait's reads after a change (approvals.api.wait)


@pytest.fixture
def plain_http_and_fresh_batches(settings, monkeypatch):
    """For requests sent straight to the API's ASGI shortcuts: plain HTTP to localhost, and no rate-limit batch held
    over from another test (agents.ratelimit)."""
    settings.ALLOWED_HOSTS = ["localhost", "testserver"]
    settings.SECURE_SSL_REDIRECT = False
    monkeypatch.setattr(ratelimit, "_held", {})


@pytest.fixture
def reviewers_group(db) -> Group:
    return reviewer_group()


@pytest.fixture
def owner(db):
    """The accountable human behind the agent (not a reviewer)."""
    return UserFactory(username="olivia")


@pytest.fixture
def reviewer(reviewers_group):
    return ReviewerFactory(username="rita")


@pytest.fixture
def second_reviewer(reviewers_group):
    return ReviewerFactory(username="sam")


@pytest.fixture
def outsider(db):
    """Signed in, but in no reviewer group."""
    return UserFactory(username="oscar")


@pytest.fixture
def agent_and_key(owner):
    agent = AgentFactory(name="helper-bot", owner=owner, allow=["decision.only", "http.request"])
    return agent, agent.raw_key


@pytest.fixture
def agent(agent_and_key):
    return agent_and_key[0]


@pytest.fixture
def agent_key(agent_and_key):
    return agent_and_key[1]


@pytest.fixture
def agent_api(agent_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {agent_key}")
    return client


def token_client(user) -> APIClient:
    _, raw = ReviewerToken.issue(user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    return client


@pytest.fixture
def reviewer_api(reviewer):
    return token_client(reviewer)


@pytest.fixture
def target():
    server = RecordingServer().start()
    yield server
    server.stop()


TARGET_SECRET = "s3cr3t-target-token-never-shown"


@pytest.fixture
def credential(target, db):
    # Preview reads on: the tests that show a diff read it from the target (tests/web/test_preview_reads.py: off).
    return create_credential(
        name="internal-api",
        kind="http_bearer",
        secret=TARGET_SECRET,
        scope={"base_url": target.url},
        actor=CLI,
        allow_preview_reads=True,
    )


# --- real processes ----------------------------------------------------------------


@pytest.fixture
def scim_credential(scim):
    """The SCIM credential "idp" on the test's ``scim`` server (tests/support/scim.py; each suite seeds its own)."""
    from tests.support.scim import idp_credential

    return idp_credential(scim)


@pytest.fixture(scope="session")
def stack_env(django_db_setup, django_db_blocker):
    """Environment for subprocesses: the test database pytest-django created, and the test Redis."""
    from django.db import connection

    name = connection.settings_dict["NAME"]
    base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    return process_env(f"{base}/{name}", settings.REDIS_URL)


@pytest.fixture(scope="session")
def celery_worker(stack_env):
    worker = start_worker(stack_env, ARTIFACTS / "logs")
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def web_server(stack_env):
    web, url = start_web(stack_env, ARTIFACTS / "logs")
    web.url = url
    yield web
    web.stop()
