"""Undo of a succeeded reversible action (issue 23, point 3): the type's reverse, proposed as a new action linked
to the original, through the normal policies. ``file.write`` restores the content recorded before the write, on a
real directory; undo of a time-boxed grant is ending it early."""

from __future__ import annotations

import pytest
from django.test import override_settings

from agents.services import grant_capability
from approvals import services
from approvals.errors import Conflict, NotAllowed
from approvals.models import ActionRequest, ActionStatus, Review
from approvals.services import access
from audit.models import AuditEvent
from tests import factories
from tests.conftest import CLI

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "motd.txt").write_text("welcome\n")
    with override_settings(COUNTERSIGN_FILE_ROOT=root):
        yield root


@pytest.fixture
def file_agent(agent):
    grant_capability(agent=agent, action_type="file.write", actor=CLI)
    return agent


def run(agent, reviewer, **params) -> ActionRequest:
    action = factories.propose(agent, "file.write", params, summary="Write a file")
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
    services.execute_action(action.id)
    action.refresh_from_db()
    return action


def test_undo_of_a_file_write_restores_the_previous_content_through_the_policy(root, file_agent, reviewer):
    original = run(file_agent, reviewer, path="motd.txt", content="maintenance tonight\n", mode="replace")
    assert original.status == ActionStatus.SUCCEEDED
    assert (root / "motd.txt").read_text() == "maintenance tonight\n"
    assert access.can_undo(original)

    undo = access.propose_undo(original.id, user=reviewer)
    # A new action, linked, pending like any proposal: the normal policy decides it.
    assert undo.status == ActionStatus.PENDING and undo.reverts_id == original.id and undo.revert_reason == "undo"
    assert undo.params == {
        "path": "motd.txt",
        "content": "welcome\n",
        "mode": "replace",
        "expected_sha256": original.result["sha256"],
    }
    assert (root / "motd.txt").read_text() == "maintenance tonight\n"
    with pytest.raises(Conflict):
        access.propose_undo(original.id, user=reviewer)  # one undo waits at a time
    assert not access.can_undo(original)

    services.approve_action(action_id=undo.id, reviewer=reviewer, via=Review.Via.API)
    assert services.execute_action(undo.id) == ActionStatus.SUCCEEDED
    assert (root / "motd.txt").read_text() == "welcome\n"
    original.refresh_from_db()
    assert original.reverted_at is not None
    verbs = list(AuditEvent.objects.filter(action_id=original.id).values_list("verb", flat=True))
    assert "action.undo_proposed" in verbs and "action.undone" in verbs
    with pytest.raises(Conflict):
        access.propose_undo(original.id, user=reviewer)  # already undone


def test_an_undo_never_overwrites_a_later_change(root, file_agent, reviewer):
    original = run(file_agent, reviewer, path="motd.txt", content="v2\n", mode="replace")
    undo = access.propose_undo(original.id, user=reviewer)
    (root / "motd.txt").write_text("v3 by someone else\n")
    services.approve_action(action_id=undo.id, reviewer=reviewer, via=Review.Via.API, override_reason="checking")
    assert services.execute_action(undo.id) == ActionStatus.FAILED
    assert (root / "motd.txt").read_text() == "v3 by someone else\n"
    original.refresh_from_db()
    assert original.reverted_at is None


def test_a_new_file_cannot_be_undone_by_a_write(root, file_agent, reviewer):
    original = run(file_agent, reviewer, path="new.txt", content="hello\n", mode="create")
    assert original.status == ActionStatus.SUCCEEDED
    assert not access.can_undo(original)
    with pytest.raises(Conflict, match="cannot be undone"):
        access.propose_undo(original.id, user=reviewer)


def test_the_recorded_previous_content_is_not_shown_to_the_agent(root, file_agent, reviewer, agent_api):
    original = run(file_agent, reviewer, path="motd.txt", content="new\n", mode="replace")
    body = agent_api.get(f"/api/v1/actions/{original.id}").json()
    assert "welcome" not in str(body)


# --- slack.post_message: undo is chat.delete -------------------------------------------------------------------

SLACK_TOKEN = "xoxb-access-tests-never-shown"
INFRA = "C0INFRA01"


@pytest.fixture
def slack(db):
    from tests.support.fake_slack import FakeSlack

    with FakeSlack(token=SLACK_TOKEN) as fake:
        fake.add_channel(INFRA, "infra-help")
        with override_settings(COUNTERSIGN_SLACK_API_URL=fake.url):
            yield fake


@pytest.fixture
def slack_agent(agent, slack):
    from approvals.services.credentials import create_credential

    create_credential(name="slack-bot", kind="slack_bot", secret=SLACK_TOKEN, scope={}, actor=CLI)
    grant_capability(agent=agent, action_type="slack.post_message", actor=CLI)
    return agent


def test_undo_of_a_slack_post_deletes_the_message_through_the_policy(slack, slack_agent, reviewer, agent):
    original = factories.propose(
        slack_agent,
        "slack.post_message",
        {"credential": "slack-bot", "channel": INFRA, "text": "Deploying now"},
        summary="Tell #infra-help",
    )
    services.approve_action(action_id=original.id, reviewer=reviewer, via=Review.Via.API)
    assert services.execute_action(original.id) == ActionStatus.SUCCEEDED
    original.refresh_from_db()
    ts = original.result["ts"]
    assert slack.message(INFRA, ts) is not None

    # The agent may not delete messages: the undo is refused by its capabilities, like any proposal of its own.
    with pytest.raises(NotAllowed):
        access.propose_undo(original.id, user=reviewer)
    assert not ActionRequest.objects.filter(reverts=original).exists()

    grant_capability(agent=agent, action_type="slack.delete_message", actor=CLI)
    undo = access.propose_undo(original.id, user=reviewer)
    assert (undo.action_type, undo.params) == (
        "slack.delete_message",
        {"credential": "slack-bot", "channel": INFRA, "ts": ts},
    )
    services.approve_action(action_id=undo.id, reviewer=reviewer, via=Review.Via.API)
    assert services.execute_action(undo.id) == ActionStatus.SUCCEEDED
    assert slack.message(INFRA, ts) is None
    assert [call.params.get("ts") for call in slack.calls_to("chat.delete")] == [ts]
    original.refresh_from_db()
    assert original.reverted_at is not None


# --- http.request: only where the credential defines the reverse call ---------------------------------------------


@pytest.fixture
def api(db):
    from tests.support.servers import RecordingServer

    server = RecordingServer().start()
    server.resources["/users"] = {"id": "u-42", "name": "dana"}
    yield server
    server.stop()


def http_credential(api, **scope):
    from approvals.services.credentials import create_credential

    return create_credential(
        name="directory", kind="http_bearer", secret="tok-never-shown", scope={"base_url": api.url, **scope}, actor=CLI
    )


def test_undo_of_an_http_call_uses_the_credentials_reverse_template(api, agent, reviewer):
    http_credential(
        api,
        reverse_calls=[{"method": "POST", "path": "/users", "reverse_method": "DELETE", "reverse_path": "/users/{id}"}],
    )
    created = run_http(agent, reviewer, method="POST", path="/users", json={"name": "dana"})
    undo = access.propose_undo(created.id, user=reviewer)
    assert undo.params == {"credential": "directory", "method": "DELETE", "path": "/users/u-42"}
    services.approve_action(action_id=undo.id, reviewer=reviewer, via=Review.Via.API)
    assert services.execute_action(undo.id) == ActionStatus.SUCCEEDED
    assert [(r.method, r.path) for r in api.requests if r.method != "GET"] == [
        ("POST", "/users"),
        ("DELETE", "/users/u-42"),
    ]

    # A call the template does not cover has no undo.
    other = run_http(agent, reviewer, method="PUT", path="/settings", json={"x": 1})
    assert not access.can_undo(other)
    with pytest.raises(Conflict, match="cannot be undone"):
        access.propose_undo(other.id, user=reviewer)


def test_an_http_call_without_a_reverse_template_cannot_be_undone(api, agent, reviewer):
    http_credential(api)
    created = run_http(agent, reviewer, method="POST", path="/users", json={"name": "dana"})
    assert not access.can_undo(created)


def run_http(agent, reviewer, **params) -> ActionRequest:
    action = factories.propose(agent, "http.request", {"credential": "directory", **params}, summary="Call the API")
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
    assert services.execute_action(action.id) == ActionStatus.SUCCEEDED
    action.refresh_from_db()
    return action
