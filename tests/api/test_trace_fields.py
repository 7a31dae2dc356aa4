"""trace_url, run_id and confidence: first-class fields of a proposal (issue 20, point 8; docs/API.md)."""

from __future__ import annotations

import pytest

from approvals.models import ActionRequest
from audit.models import AuditEvent
from tests.api.test_api import assert_problem
from tests.conftest import propose_body

pytestmark = pytest.mark.django_db


def test_they_are_accepted_stored_and_returned(agent_api):
    body = propose_body(trace_url="https://traces.example/run/7f3a", run_id="run-7f3a", confidence=0.82)
    response = agent_api.post("/api/v1/actions", body, format="json")
    assert response.status_code == 201, response.content
    answer = response.json()
    assert (answer["trace_url"], answer["run_id"], answer["confidence"]) == (
        "https://traces.example/run/7f3a",
        "run-7f3a",
        0.82,
    )
    fetched = agent_api.get(f"/api/v1/actions/{answer['id']}").json()
    assert (fetched["trace_url"], fetched["run_id"], fetched["confidence"]) == (
        "https://traces.example/run/7f3a",
        "run-7f3a",
        0.82,
    )
    action = ActionRequest.objects.get(id=answer["id"])
    assert (action.trace_url, action.run_id, action.confidence) == ("https://traces.example/run/7f3a", "run-7f3a", 0.82)


def test_they_are_optional_and_come_back_empty(agent_api):
    answer = agent_api.post("/api/v1/actions", propose_body(), format="json").json()
    assert (answer["trace_url"], answer["run_id"], answer["confidence"]) == ("", "", None)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("trace_url", "javascript:alert(document.cookie)"),
        ("trace_url", "JavaScript://example.com/%0aalert(1)"),
        ("trace_url", "data:text/html,<script>alert(1)</script>"),
        ("trace_url", "ftp://files.example/run"),
        ("trace_url", "https://"),
        ("trace_url", "https://example.com/" + "a" * 2000),
        ("run_id", "r" * 201),
        ("confidence", 1.5),
        ("confidence", -0.1),
        ("confidence", True),
        ("confidence", "0.5"),
    ],
)
def test_bad_values_are_a_400_problem_and_nothing_is_written(agent_api, field, value):
    events = AuditEvent.objects.count()
    response = agent_api.post("/api/v1/actions", propose_body(**{field: value}), format="json")
    assert_problem(response, 400, field)
    assert ActionRequest.objects.count() == 0
    assert not AuditEvent.objects.filter(verb="action.proposed").exists()
    assert AuditEvent.objects.count() == events


def test_the_python_sdk_sends_and_reads_them(agent_api):
    from countersign import Action
    from countersign.client import proposal_body

    body = proposal_body(
        "decision.only",
        {"command": "restart", "service": "billing"},
        "Restart billing",
        trace_url="https://traces.example/run/9",
        run_id="run-9",
        confidence=0.5,
    )
    assert (body["trace_url"], body["run_id"], body["confidence"]) == ("https://traces.example/run/9", "run-9", 0.5)
    assert "trace_url" not in proposal_body("decision.only", {}, "s")  # optional: not sent when not given
    action = Action.from_json(agent_api.post("/api/v1/actions", body, format="json").json())
    assert (action.trace_url, action.run_id, action.confidence) == ("https://traces.example/run/9", "run-9", 0.5)
