"""A runaway agent is stopped at its key's budget with 429 and Retry-After; others are not."""

from __future__ import annotations

import contextvars

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from agents.services import create_agent
from approvals.models import ActionRequest
from tests.api.test_api import assert_problem
from tests.conftest import CLI, propose_body

pytestmark = pytest.mark.django_db

# Hour-long windows, so a window boundary can't fall inside a test.
RATES = {"requests": "6/hour", "proposals": "3/hour"}


@override_settings(COUNTERSIGN_AGENT_RATES=RATES)
def test_proposals_beyond_the_budget_are_429_and_record_nothing(agent_api):
    for _ in range(3):
        assert agent_api.post("/api/v1/actions", propose_body(), format="json").status_code == 201
    response = agent_api.post("/api/v1/actions", propose_body(), format="json")
    assert_problem(response, 429)
    assert 1 <= int(response["Retry-After"]) <= 3600
    assert ActionRequest.objects.count() == 3


@override_settings(COUNTERSIGN_AGENT_RATES=RATES)
def test_every_request_counts_against_the_key(agent_api):
    for _ in range(6):
        assert agent_api.get("/api/v1/actions").status_code == 200
    assert_problem(agent_api.get("/api/v1/actions"), 429)
    assert_problem(agent_api.get("/api/v1/action-types"), 429)


@override_settings(COUNTERSIGN_AGENT_RATES=RATES)
def test_one_keys_flood_does_not_throttle_another_agent(agent_api, owner, reviewer_api):
    for _ in range(7):
        agent_api.get("/api/v1/actions")
    _, _, raw = create_agent(name="calm-bot", owner=owner, actor=CLI, allow=["decision.only"])
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert other.get("/api/v1/actions").status_code == 200
    assert reviewer_api.get("/api/v1/actions").status_code == 200


@pytest.mark.django_db(transaction=True)
@override_settings(COUNTERSIGN_AGENT_RATES=RATES)
def test_wait_counts_too(agent_api):
    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    statuses = [agent_api.get(f"/api/v1/actions/{action_id}/wait?timeout=0").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]


@override_settings(
    COUNTERSIGN_AGENT_RATES=RATES,
    CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "rate-limit-test"}},
)
def test_the_embedded_default_counts_in_local_memory_the_same_way(agent_api):
    # Without Redis the budgets are counted in the process's own cache, one budget after the other.
    for _ in range(3):
        assert agent_api.post("/api/v1/actions", propose_body(), format="json").status_code == 201
    assert_problem(agent_api.post("/api/v1/actions", propose_body(), format="json"), 429)
    assert [agent_api.get("/api/v1/actions").status_code for _ in range(2)] == [200, 200]  # the 5th and 6th
    assert_problem(agent_api.get("/api/v1/actions"), 429)
    assert ActionRequest.objects.count() == 3


def test_every_request_context_counts_through_the_same_redis_pool():
    # Under ASGI each request runs in its own context, and Django gives each context its own cache object:
    # with a pool per object, every agent request connected to Redis anew (config/cache.py).
    from django.core.cache import caches

    def cache_and_pool():
        cache = caches["default"]
        return cache, cache._cache._get_connection_pool(write=True)

    (first_cache, first_pool), (second_cache, second_pool) = (
        contextvars.Context().run(cache_and_pool) for _ in range(2)
    )
    assert first_cache is not second_cache
    assert first_pool is second_pool
