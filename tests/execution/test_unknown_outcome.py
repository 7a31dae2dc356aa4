# ruff: noqa: F811 - pytest fixtures come from tests/support/slack_helpers
"""An execution whose outcome is unknown, told honestly on every surface and settled by a person.

The action is driven to ``executing`` through the services (propose, approve, the worker's move), its worker's
heartbeat goes stale, and the crash sweep (``settle_interrupted_executions``) ends it ``unknown``; a reviewer of the action (or staff) then records what they
found on the target: it took effect (``succeeded``) or it did not happen (``failed``), audited.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from approvals import services
from approvals.errors import InvalidInput, NotAllowed, NotUnknown
from approvals.models import ActionRequest, ActionStatus, OutboxMessage, Review
from approvals.selectors.actions import reviews_of
from approvals.services.execution import settle_interrupted_executions
from approvals.services.transitions import lock_action, transition
from approvals.slack.blocks import action_message, result_message
from audit.chain import Actor
from audit.models import AuditEvent
from tests import factories
from tests.conftest import propose_body, token_client
from tests.support.slack_helpers import (
    APPROVALS,
    BASE_URL,
    all_text,
    block,
    buttons,
    deliver_due,
    posted,
    slack,  # noqa: F401 - fixture
    worker,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.django_db

ADVICE = "check the target before retrying"


def interrupted(result: dict) -> bool:
    """What the crash sweep says of a POST whose worker stopped beating."""
    return (
        result["error"].startswith("execution interrupted: its worker stopped")
        and "not retried (not idempotent)" in result["error"]
        and result["advice"] == ADVICE
        and result["attempts"] == 1
    )


CALLBACK = "https://agent.example.com/hooks/countersign"


def approved_and_interrupted(action_id, reviewer) -> ActionRequest:
    """Approve the action, move it to executing (as the worker does), let its heartbeat go stale (the worker died)
    and run the crash sweep, which ends it unknown.

    Approved and moved in one transaction: the execute message goes out on commit, and a worker running in the
    test session then finds the action executing already and leaves it alone.
    """
    with transaction.atomic():
        services.approve_action(action_id=action_id, reviewer=reviewer, via=Review.Via.API)
        action = lock_action(action_id)
        transition(action, ActionStatus.EXECUTING, actor=Actor.system("worker"), verb="execution.started")
    stale = timezone.now() - timedelta(hours=1)
    ActionRequest.objects.filter(id=action_id).update(execution_heartbeat_at=stale)
    assert settle_interrupted_executions() == 1
    action = ActionRequest.objects.get(id=action_id)
    assert action.status == ActionStatus.UNKNOWN and interrupted(action.result)
    return action


def propose_post(agent_api, **overrides) -> str:
    """A non-idempotent call (POST) on the internal API: the kind of execution that can end unknown."""
    body = propose_body(
        action_type="http.request",
        params={"credential": "internal-api", "method": "POST", "path": "/deploys", "json": {"service": "billing"}},
        **{"summary": "Deploy billing", **overrides},
    )
    response = agent_api.post("/api/v1/actions", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


@pytest.fixture
def unknown_id(agent_api, reviewer, credential) -> str:
    action_id = propose_post(agent_api)
    approved_and_interrupted(action_id, reviewer)
    return action_id


@pytest.fixture
def staff(db):
    return User.objects.create_user("stella", email="stella@example.com", password="pw-stella", is_staff=True)


def refusals(action_id) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(verb="decision.refused", action_id=action_id).order_by("seq"))


def status_of(action_id) -> str:
    return ActionRequest.objects.values_list("status", flat=True).get(id=action_id)


# --- the API -------------------------------------------------------------------------------------------


def test_the_agent_sees_unknown_with_the_original_result(agent_api, unknown_id):
    shown = agent_api.get(f"/api/v1/actions/{unknown_id}").json()
    assert shown["status"] == "unknown"
    assert interrupted(shown["result"])
    assert shown["finished_at"] is not None
    assert shown["decision"]["outcome"] == "approved"
    listed = agent_api.get("/api/v1/actions?status=unknown").json()["results"]
    assert [a["id"] for a in listed] == [unknown_id]


def test_a_reviewer_resolves_it_through_the_api_and_it_is_audited(reviewer_api, reviewer, unknown_id):
    original = ActionRequest.objects.get(id=unknown_id).result
    response = reviewer_api.post(
        f"/api/v1/actions/{unknown_id}/resolve",
        {"outcome": "succeeded", "note": "The deploy is listed on the target (id 4411)."},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "succeeded"
    resolution = body["result"].pop("resolution")
    assert body["result"] == original  # the original result is kept as it was
    assert resolution["outcome"] == "succeeded" and resolution["by"] == "rita"
    assert resolution["note"] == "The deploy is listed on the target (id 4411)." and resolution["at"]

    [event] = AuditEvent.objects.filter(verb="execution.resolved", action_id=unknown_id)
    assert (event.actor, event.via) == ("rita", "api")
    assert event.data == {
        "from": "unknown",
        "to": "succeeded",
        "outcome": "succeeded",
        "note": "The deploy is listed on the target (id 4411).",
    }
    # Resolved once: a second resolution is refused (409) and recorded.
    again = reviewer_api.post(
        f"/api/v1/actions/{unknown_id}/resolve", {"outcome": "failed", "note": "changed my mind"}, format="json"
    )
    assert again.status_code == 409 and again["Content-Type"] == "application/problem+json"
    assert again.json()["type"].endswith("/not-unknown")
    assert status_of(unknown_id) == ActionStatus.SUCCEEDED
    [refused] = refusals(unknown_id)
    assert refused.data["verdict"] == "resolve" and "succeeded" in refused.data["reason"]


def test_staff_may_resolve_it_as_not_happened(staff, unknown_id):
    response = token_client(staff).post(
        f"/api/v1/actions/{unknown_id}/resolve",
        {"outcome": "failed", "note": "No deploy 4411 on the target; nothing changed."},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "failed"
    assert response.json()["result"]["resolution"]["by"] == "stella"


def test_bad_input_is_a_problem_and_writes_nothing(reviewer_api, unknown_id):
    cases = [
        ({"outcome": "succeeded"}, "note"),
        ({"outcome": "succeeded", "note": "   "}, "note"),
        ({"outcome": "maybe", "note": "checked"}, "outcome"),
        ({"note": "checked"}, "outcome"),
        ({"outcome": "succeeded", "note": "x" * 2001}, "note"),
    ]
    before = AuditEvent.objects.count()
    for body, field in cases:
        response = reviewer_api.post(f"/api/v1/actions/{unknown_id}/resolve", body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert response["Content-Type"] == "application/problem+json"
        assert field in response.json()["errors"], response.json()
    assert status_of(unknown_id) == ActionStatus.UNKNOWN
    assert AuditEvent.objects.count() == before


def test_outsiders_and_the_agent_are_refused_and_recorded(agent_api, outsider, unknown_id):
    response = token_client(outsider).post(
        f"/api/v1/actions/{unknown_id}/resolve", {"outcome": "succeeded", "note": "looked"}, format="json"
    )
    assert response.status_code == 403 and response.json()["type"].endswith("/not-allowed")
    response = agent_api.post(
        f"/api/v1/actions/{unknown_id}/resolve", {"outcome": "failed", "note": "I think it failed"}, format="json"
    )
    assert response.status_code == 403
    assert status_of(unknown_id) == ActionStatus.UNKNOWN
    [refused] = refusals(unknown_id)
    assert (refused.actor, refused.via, refused.data["verdict"]) == ("oscar", "api", "resolve")
    assert "only members of reviewers" in refused.data["reason"]
    [agent_attempt] = AuditEvent.objects.filter(verb="access.refused", agent_name="helper-bot")
    assert agent_attempt.data["path"] == f"/api/v1/actions/{unknown_id}/resolve"


def test_the_agents_owner_may_not_resolve_where_separation_of_duties_applies(
    agent_api, owner, reviewer, reviewers_group, credential
):
    owner.groups.add(reviewers_group)
    action_id = propose_post(agent_api)
    ActionRequest.objects.filter(id=action_id).update(risk="high")
    approved_and_interrupted(action_id, reviewer)
    with pytest.raises(NotAllowed, match="you own the agent"):
        services.resolve_unknown_outcome(action_id, user=owner, outcome="succeeded", note="mine, fine", via="api")
    assert [e.actor for e in refusals(action_id)] == ["olivia"]
    assert status_of(action_id) == ActionStatus.UNKNOWN


def test_only_an_unknown_outcome_is_resolved(agent_api, reviewer, reviewer_api, credential):
    action_id = propose_post(agent_api)
    with pytest.raises(NotUnknown):
        services.resolve_unknown_outcome(action_id, user=reviewer, outcome="failed", note="nothing", via="api")
    services.approve_action(action_id=action_id, reviewer=reviewer, via=Review.Via.API)
    response = reviewer_api.post(
        f"/api/v1/actions/{action_id}/resolve", {"outcome": "failed", "note": "nothing"}, format="json"
    )
    assert response.status_code == 409
    assert "approved" in response.json()["detail"]
    assert [e.data["verdict"] for e in refusals(action_id)] == ["resolve", "resolve"]
    with pytest.raises(InvalidInput):
        services.resolve_unknown_outcome(action_id, user=reviewer, outcome="failed", note="", via="api")
    assert status_of(action_id) == ActionStatus.APPROVED


def test_the_schema_names_the_status_and_the_endpoint(reviewer_api):
    schema = reviewer_api.get("/api/schema/?format=json").json()
    status = schema["components"]["schemas"]["ActionOutput"]["properties"]["status"]
    ref = status.get("$ref") or status["allOf"][0]["$ref"]
    enum = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]["enum"]
    assert "unknown" in enum and "failed" in enum
    resolve = schema["paths"]["/api/v1/actions/{action_id}/resolve"]["post"]
    assert resolve["operationId"] == "resolve_action"
    assert {"200", "400", "403", "404", "409"} <= set(resolve["responses"])


# --- webhooks ------------------------------------------------------------------------------------------


def test_webhooks_carry_action_unknown_then_the_resolution(agent_api, reviewer, credential, monkeypatch):
    monkeypatch.setattr("approvals.api.serializers.callback_refusal", lambda url: None)
    action_id = propose_post(agent_api, callback_url=CALLBACK)
    approved_and_interrupted(action_id, reviewer)
    services.resolve_unknown_outcome(
        action_id, user=reviewer, outcome="failed", note="Not on the target.", via=Review.Via.WEB
    )
    hooks = [m.payload for m in OutboxMessage.objects.filter(kind="webhook", action_id=action_id).order_by("id")]
    types = [h["event"]["type"] for h in hooks]
    assert types[-3:] == ["action.executing", "action.unknown", "action.failed"]
    unknown, resolved = hooks[-2], hooks[-1]
    assert unknown["action"]["status"] == "unknown" and interrupted(unknown["action"]["result"])
    assert resolved["action"]["result"]["resolution"]["outcome"] == "failed"
    assert resolved["action"]["result"]["resolution"]["note"] == "Not on the target."
    assert [h["event"]["sequence"] for h in hooks] == list(range(1, len(hooks) + 1))


# --- the desk ------------------------------------------------------------------------------------------


def test_a_reviewer_resolves_it_on_the_detail_page(reviewer, unknown_id):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(reviewer)
    page = browser.get(f"/actions/{unknown_id}").content.decode()
    assert 'class="badge status unknown" id="action-status">outcome unknown<' in page
    assert "Check the target before retrying" in page
    assert 'id="resolve-succeeded"' in page and 'id="resolve-failed"' in page
    assert 'class="step unknown"' in page

    # Without the CSRF token: refused, nothing changes.
    no_token = browser.post(f"/actions/{unknown_id}/resolve", {"outcome": "succeeded", "note": "checked"})
    assert no_token.status_code == 403
    token = browser.cookies["csrftoken"].value

    # Without a note: a readable message, nothing changes.
    response = browser.post(
        f"/actions/{unknown_id}/resolve",
        {"outcome": "succeeded", "note": "", "csrfmiddlewaretoken": token},
        follow=True,
    )
    assert "A resolution needs a note." in response.content.decode()
    assert status_of(unknown_id) == ActionStatus.UNKNOWN

    response = browser.post(
        f"/actions/{unknown_id}/resolve",
        {"outcome": "succeeded", "note": "Deploy <4411> is live on the target", "csrfmiddlewaretoken": token},
        follow=True,
    )
    page = response.content.decode()
    assert "Recorded: it took effect (succeeded)." in page
    assert status_of(unknown_id) == ActionStatus.SUCCEEDED
    assert 'id="resolution"' in page and "It took effect" in page and "<strong>rita</strong>" in page
    assert "Deploy &lt;4411&gt; is live on the target" in page and "<4411>" not in page
    assert 'id="resolve-succeeded"' not in page  # settled: no form any more
    [event] = AuditEvent.objects.filter(verb="execution.resolved", action_id=unknown_id)
    assert event.via == "web"


def test_the_page_tells_someone_who_may_not_resolve_why(outsider, owner, reviewers_group, unknown_id, staff):
    # Oscar cannot even see it; the attempt is recorded, as a refused decision is.
    browser = Client()
    browser.force_login(outsider)
    response = browser.post(f"/actions/{unknown_id}/resolve", {"outcome": "succeeded", "note": "looked"})
    assert response.status_code == 404
    assert [(e.actor, e.via) for e in refusals(unknown_id)] == [("oscar", "web")]

    # Staff see it and may resolve it.
    browser.force_login(staff)
    page = browser.get(f"/actions/{unknown_id}").content.decode()
    assert 'id="resolve-failed"' in page

    # A reviewer of another group's action reads why not.
    ActionRequest.objects.filter(id=unknown_id).update(risk="high")
    owner.groups.add(reviewers_group)
    browser.force_login(owner)
    page = browser.get(f"/actions/{unknown_id}").content.decode()
    assert 'id="resolve-succeeded"' not in page
    assert 'id="resolve-refusal"' in page and "you own the agent" in page


def test_history_filters_unknown_outcomes(reviewer, agent_api, unknown_id):
    other = propose_post(agent_api, summary="Something else")
    services.reject_action(action_id=other, reviewer=reviewer, via=Review.Via.WEB, reason="no")
    browser = Client()
    browser.force_login(reviewer)
    page = browser.get("/history?status=unknown").content.decode()
    assert f'id="action-{unknown_id}"' in page and f'id="action-{other}"' not in page
    assert '<option value="unknown" selected>outcome unknown</option>' in page
    assert 'id="unknown-help"' in page
    everything = browser.get("/history").content.decode()
    assert f'id="action-{unknown_id}"' in everything and f'id="action-{other}"' in everything
    assert browser.get("/history?status=rejected").content.decode().count('class="badge status rejected"') == 1
    # Not a status: everything, not an error.
    assert f'id="action-{other}"' in browser.get("/history?status=bogus").content.decode()
    queue = browser.get("/?status=unknown").content.decode()
    assert f'id="action-{unknown_id}"' in queue and '<option value="unknown" selected' in queue


def test_the_dashboard_counts_unknown_outcomes_as_approved_and_links_to_them(reviewer, unknown_id):
    browser = Client()
    browser.force_login(reviewer)
    page = browser.get("/dashboard").content.decode()
    assert 'id="stat-unknown">1 outcome unknown</a>' in page
    assert "1 approved, 0 rejected" in page


# --- Slack ---------------------------------------------------------------------------------------------


def test_the_slack_message_says_the_outcome_is_unknown_and_links_to_resolve(slack, worker, agent, reviewer, credential):
    action = factories.propose(
        agent,
        "http.request",
        {"credential": credential.name, "method": "POST", "path": "/deploys"},
        summary="Deploy <!channel> & *billing*",
    )
    deliver_due()
    approved_and_interrupted(action.id, reviewer)
    deliver_due()

    row = posted(action)
    message = slack.message(row.external_channel, row.external_id)
    header = block(message["blocks"], "header")[0]["text"]["text"]
    assert header.startswith(":grey_question: Outcome unknown: ") and "&lt;!channel&gt; &amp; *billing*" in header
    text = all_text(message["blocks"])
    assert "nobody knows whether it took effect" in text
    assert "Check the target before retrying" in text
    assert f"<{BASE_URL}/actions/{action.id}|Record what happened in Countersign>" in text
    assert buttons(message["blocks"]) == {}  # resolved on the page (a note is required), not by a button
    assert "<!channel>" not in str(message)
    [reply] = slack.replies(APPROVALS, row.external_id)
    assert "Execution interrupted: outcome unknown." in all_text(reply["blocks"])
    assert "Check the target before retrying" in all_text(reply["blocks"])

    services.resolve_unknown_outcome(
        action.id, user=reviewer, outcome="succeeded", note="Seen on <@U0ADMIN> & target", via=Review.Via.WEB
    )
    deliver_due()
    message = slack.message(row.external_channel, row.external_id)
    text = all_text(message["blocks"])
    assert block(message["blocks"], "header")[0]["text"]["text"].startswith(":white_check_mark: Done: ")
    assert "*rita* checked the target and recorded that it took effect" in text
    assert "What they checked: Seen on &lt;@U0ADMIN&gt; &amp; target" in text
    assert "<@U0ADMIN>" not in str(message)
    assert len(slack.replies(APPROVALS, row.external_id)) == 1  # the thread keeps its one result


def test_slack_blocks_for_an_unknown_outcome_are_pure_and_escaped(unknown_id):
    action = ActionRequest.objects.select_related("agent", "agent__owner", "reviewer_group").get(id=unknown_id)
    action.result = {**action.result, "error": "interrupted <!here> & gone"}
    text, blocks = action_message(action, reviews=reviews_of(action), base_url=BASE_URL)
    assert text.startswith(":grey_question: Outcome unknown: ")
    _lead, thread = result_message(action)
    assert "Error: interrupted &lt;!here&gt; &amp; gone" in all_text(thread)
    assert "<!here>" not in str(thread) and "<!here>" not in str(blocks)


# --- HumanLayer ----------------------------------------------------------------------------------------


def test_humanlayer_never_answers_an_unknown_outcome_as_approved(agent_key, reviewer):
    humanlayer = APIClient()
    humanlayer.credentials(HTTP_AUTHORIZATION=f"Bearer {agent_key}")
    created = humanlayer.post(
        "/humanlayer/v1/function_calls",
        {"run_id": "run-1", "call_id": "call-unknown", "spec": {"fn": "deploy", "kwargs": {"service": "billing"}}},
        format="json",
    )
    assert created.status_code == 201, created.content
    action = ActionRequest.objects.get(idempotency_key="humanlayer:fc:call-unknown")
    # decision.only never executes in Countersign; were it ever interrupted, this is what the SDK would read.
    approved_and_interrupted(action.id, reviewer)

    status = humanlayer.get("/humanlayer/v1/function_calls/call-unknown").json()["status"]
    assert status["approved"] is False  # approved: true would make the HumanLayer SDK run the function again
    assert "nobody knows whether it took effect" in status["comment"]
    assert "check the target before retrying" in status["comment"]
    assert status["responded_at"] is not None
