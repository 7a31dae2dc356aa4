"""Hostile input on the agent API: each gets a clear 4xx and leaves nothing behind."""

from __future__ import annotations

import pytest
from django.test import override_settings

from approvals.models import ActionRequest, AuditEvent
from tests.conftest import propose_body
from tests.test_api import assert_problem

pytestmark = pytest.mark.django_db


def refused(agent_api, status: int, *keys: str, **overrides) -> dict:
    body = assert_problem(agent_api.post("/api/v1/actions", propose_body(**overrides), format="json"), status, *keys)
    assert not ActionRequest.objects.exists()
    assert not AuditEvent.objects.filter(verb="action.proposed").exists()
    return body


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/admin",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://172.16.5.5/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",
        "http://user:pw@example.com/hook",
        "http://no-such-host.invalid/hook",
        "gopher://example.com/",
        "file:///etc/passwd",
    ],
)
def test_callback_urls_into_private_networks_are_refused(agent_api, url):
    refused(agent_api, 400, "callback_url", callback_url=url)


@override_settings(COUNTERSIGN_CALLBACK_ALLOWED_NETWORKS=["127.0.0.0/8"])
def test_an_allow_listed_network_is_accepted(agent_api):
    response = agent_api.post("/api/v1/actions", propose_body(callback_url="http://127.0.0.1:9/hook"), format="json")
    assert response.status_code == 201, response.content


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("summary", "x" * 100_000),
        ("action_type", "x" * 100_000),
        ("on_behalf_of", "x" * 100_000),
        ("idempotency_key", "x" * 100_000),
        ("callback_url", "https://example.com/" + "x" * 100_000),
        ("expires_in", -1),
        ("expires_in", 0),
        ("expires_in", 10**30),
        ("expires_in", "soon"),
        ("expires_in", 3.5),
        ("summary", ""),
        ("summary", None),
        ("params", None),
        ("context", ["not", "an", "object"]),
        ("on_behalf_of", {"email": "x"}),
    ],
)
def test_absurd_field_values_are_400_naming_the_field(agent_api, field, value):
    refused(agent_api, 400, field, **{field: value})


def test_huge_strings_in_params_and_context_stay_within_limits(agent_api):
    refused(agent_api, 400, "context", context={"reasoning": "x" * 70_000})
    refused(agent_api, 413, params={"text": "x" * 300_000})


def test_a_header_idempotency_key_that_is_too_long_is_refused(agent_api):
    response = agent_api.post("/api/v1/actions", propose_body(), format="json", HTTP_IDEMPOTENCY_KEY="k" * 1000)
    assert_problem(response, 400, "idempotency_key")
    assert not ActionRequest.objects.exists()


def test_a_declared_length_over_the_limit_is_refused_before_reading(agent_api):
    response = agent_api.generic(
        "POST", "/api/v1/actions", b"{}", content_type="application/json", CONTENT_LENGTH=str(10 * 1024 * 1024)
    )
    assert_problem(response, 413)
