"""``scim.group_membership`` against a real SCIM 2.0 server (scim2-server, in memory) on loopback.

Users and the group are seeded through the server's own SCIM API, and every
outcome is read back through it: the preview is computed from the live group,
and execution really changes its members.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from agents.services import grant_capability
from approvals import services
from approvals.models import ActionRequest, ActionStatus, Review
from approvals.presentation.previews import compute_preview
from approvals.services.credentials import create_credential
from audit.models import AuditEvent
from catalog import registry
from tests import factories
from tests.conftest import CLI
from tests.support.scim import GROUP, SCIM_TOKEN, USER, ScimServer, idp_credential

pytestmark = pytest.mark.django_db
__all__ = ["GROUP", "SCIM_TOKEN", "USER", "ScimServer"]  # other modules take the server from here too


@pytest.fixture
def scim():
    server = ScimServer()
    for name in ("alice", "bob", "carol", "dave"):
        server.add_user(name)
    server.group_id = server.add_group("engineering", ["bob", "carol"])
    server.other_group_id = server.add_group("admins", ["dave"])
    yield server
    server.stop()


@pytest.fixture
def scim_agent(agent):
    grant_capability(agent=agent, action_type="scim.group_membership", actor=CLI)
    return agent


def params(**overrides) -> dict:
    return {"credential": "idp", "group": "engineering", "add": ["alice"], "remove": ["bob"]} | overrides


def propose(agent, **overrides) -> ActionRequest:
    return factories.propose(
        agent,
        "scim.group_membership",
        params(**overrides),
        summary="Rotate on-call access",
        on_behalf_of="olivia",  # an access change names a known requester (the agent's owner, here)
    )


def approve(action, *reviewers, override_reason: str = "") -> None:
    for reviewer in reviewers:
        services.approve_action(
            action_id=action.id, reviewer=reviewer, via=Review.Via.API, override_reason=override_reason
        )


def no_secret_anywhere(*things) -> None:
    for thing in things:
        assert SCIM_TOKEN not in str(thing)
    assert SCIM_TOKEN not in str(list(AuditEvent.objects.values_list("data", flat=True)))


def test_the_type_is_registered_as_access_changing_and_idempotent():
    scim_type = registry.get("scim.group_membership")
    assert scim_type is not None
    assert scim_type.modifies_access is True and str(scim_type.risk) == "high"
    assert scim_type.credential_kinds == ("scim_bearer",)
    assert scim_type.is_idempotent(params()) is True


def test_propose_preview_approve_execute_changes_the_real_group(
    scim, scim_credential, scim_agent, agent_api, reviewer, second_reviewer
):
    response = agent_api.post(
        "/api/v1/actions",
        {
            "action_type": "scim.group_membership",
            "params": params(),
            "summary": "Swap bob for alice",
            "on_behalf_of": "olivia",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["risk"] == "high" and body["required_approvals"] >= 2  # access changes need two people
    action = ActionRequest.objects.get(id=body["id"])

    preview = compute_preview("scim.group_membership", action.effective_params)
    assert preview.kind == "text", preview.error
    assert preview.title == "Members of engineering"
    assert (preview.before, preview.after) == ("bob\ncarol", "alice\ncarol")
    assert preview.notes == ["adds: alice", "removes: bob"]
    assert scim.members(scim.group_id) == {"bob", "carol"}  # a preview changes nothing

    approve(action, reviewer, second_reviewer)
    assert services.execute_action(action.id) == ActionStatus.SUCCEEDED

    assert scim.members(scim.group_id) == {"alice", "carol"}
    assert scim.members(scim.other_group_id) == {"dave"}
    action.refresh_from_db()
    assert action.result == {
        "group": {"id": scim.group_id, "displayName": "engineering"},
        "added": ["alice"],
        "removed": ["bob"],
        "already_members": [],
        "not_members": [],
        "changed": True,
        "status_code": 204,
        "member_count": 2,
    }
    after = compute_preview("scim.group_membership", {**action.effective_params, "add": ["bob"], "remove": []})
    assert (after.before, after.after) == ("alice\ncarol", "alice\nbob\ncarol")
    no_secret_anywhere(preview, after, action.result, response.content)


def test_the_group_can_be_named_by_id_and_removals_alone_work(
    scim, scim_credential, scim_agent, reviewer, second_reviewer
):
    action = propose(scim_agent, group=scim.group_id, add=[], remove=["bob", "carol"])
    preview = compute_preview("scim.group_membership", action.effective_params)
    assert (preview.title, preview.before, preview.after) == ("Members of engineering", "bob\ncarol", "")
    assert preview.notes == ["removes: bob, carol"]

    approve(action, reviewer, second_reviewer)
    assert services.execute_action(action.id) == ActionStatus.SUCCEEDED
    assert scim.members(scim.group_id) == set()
    action.refresh_from_db()
    assert action.result["removed"] == ["bob", "carol"] and action.result["member_count"] == 0


def test_a_change_already_in_place_is_shown_and_executed_as_a_no_op(
    scim, scim_credential, scim_agent, reviewer, second_reviewer
):
    version = scim.group(scim.group_id)["meta"]["version"]
    action = propose(scim_agent, add=["carol"], remove=["alice"])
    preview = compute_preview("scim.group_membership", action.effective_params)
    assert preview.before == preview.after == "bob\ncarol"
    assert preview.notes == [
        "carol is already a member",
        "alice is not a member",
        "no change: the group already looks like this",
    ]

    approve(action, reviewer, second_reviewer)
    assert services.execute_action(action.id) == ActionStatus.SUCCEEDED
    action.refresh_from_db()
    assert action.result["changed"] is False
    assert action.result["already_members"] == ["carol"] and action.result["not_members"] == ["alice"]
    assert scim.group(scim.group_id)["meta"]["version"] == version  # no PATCH was sent


def test_members_that_are_not_users_are_listed_by_id(scim, scim_credential):
    body = {"schemas": [GROUP], "displayName": "legacy", "members": [{"value": scim.ids["bob"]}, {"value": "gone-42"}]}
    assert scim.api.post("/Groups", json=body).status_code == 201
    preview = compute_preview("scim.group_membership", params(group="legacy", add=["carol"], remove=[]))
    assert (preview.before, preview.after) == ("[member id gone-42]\nbob", "[member id gone-42]\nbob\ncarol")


def test_an_unknown_user_is_a_preview_note_and_a_failed_execution_that_changes_nothing(
    scim, scim_credential, scim_agent, reviewer, second_reviewer
):
    action = propose(scim_agent, add=["alice", "zed"], remove=["bob"])
    preview = compute_preview("scim.group_membership", action.effective_params)
    assert preview.kind == "text"
    assert "unknown user: zed (execution would fail; nothing would change)" in preview.notes

    approve(action, reviewer, second_reviewer, override_reason="checking that nothing changes")
    assert services.execute_action(action.id) == ActionStatus.FAILED
    action.refresh_from_db()
    assert action.result == {"error": "unknown user(s): zed; nothing was changed", "unknown_users": ["zed"]}
    assert scim.members(scim.group_id) == {"bob", "carol"}


def test_an_unknown_group_makes_the_preview_unavailable_and_the_execution_fail(
    scim, scim_credential, scim_agent, reviewer, second_reviewer
):
    for group in ("no-such-group", "../Users", ".."):
        preview = compute_preview("scim.group_membership", params(group=group))
        assert preview.kind == "unavailable"
        assert preview.error == f"no group with the displayName or id {group!r}"

    action = propose(scim_agent, group="no-such-group")
    approve(action, reviewer, second_reviewer)
    assert services.execute_action(action.id) == ActionStatus.FAILED
    action.refresh_from_db()
    assert action.result["error"] == "no group with the displayName or id 'no-such-group'"


def test_server_down_preview_unavailable_and_execution_fails_clearly(
    scim, scim_credential, scim_agent, reviewer, second_reviewer
):
    action = propose(scim_agent)
    approve(action, reviewer, second_reviewer)
    scim.stop()

    preview = compute_preview("scim.group_membership", action.effective_params)
    assert preview.kind == "unavailable"
    assert preview.error == f"could not reach the SCIM server at {scim.base_url} (ConnectError)"

    assert services.execute_action(action.id) == ActionStatus.FAILED
    action.refresh_from_db()
    assert action.result == {"error": f"could not reach the SCIM server at {scim.base_url} (ConnectError)"}


def test_a_refused_token_is_reported_without_the_token(scim, scim_agent, reviewer, second_reviewer):
    wrong = "wrong-token-also-secret"
    idp_credential(scim, token=wrong)
    action = propose(scim_agent)
    preview = compute_preview("scim.group_membership", action.effective_params)
    assert preview.kind == "unavailable"
    assert preview.error.startswith("looking up group 'engineering': the SCIM server refused the credential (401)")

    approve(action, reviewer, second_reviewer)
    assert services.execute_action(action.id) == ActionStatus.FAILED
    action.refresh_from_db()
    assert "refused the credential (401)" in action.result["error"] and action.result["status_code"] == 401
    assert wrong not in str(preview) + str(action.result)
    assert scim.members(scim.group_id) == {"bob", "carol"}


def test_the_executor_client_is_narrowed_and_keeps_the_token_to_itself(scim, scim_credential):
    from approvals.credentials.scoped import credential_view

    scim_type = registry.get("scim.group_membership")
    client = scim_type.make_client(credential_view(scim_credential, SCIM_TOKEN), params(), idempotency_key="k")
    assert SCIM_TOKEN not in repr(client) and not hasattr(client, "reveal")
    public = {name for name in dir(client) if not name.startswith("_")}
    assert public == {
        *("base_url", "group", "find_users", "user_names", "patch_members", "redact"),
        *("redactor", "reads"),  # scrubs without handing out what it scrubs; what a preview read
    }
    # The only write goes to the group the params name, whatever ids it is handed.
    client.patch_members(add_ids=[scim.ids["dave"]], remove_ids=[])
    assert scim.members(scim.group_id) == {"bob", "carol", "dave"}
    assert scim.members(scim.other_group_id) == {"dave"}


BASE = {"credential": "idp", "group": "engineering"}


@pytest.mark.parametrize(
    ("bad", "error_key"),
    [
        (BASE, "params.add"),  # neither add nor remove
        (BASE | {"add": [], "remove": []}, "params.add"),
        (BASE | {"add": "alice"}, "params.add"),
        (BASE | {"add": ["alice", "alice"]}, "params.add"),
        (BASE | {"add": [""]}, "params.add.0"),
        (BASE | {"add": ["alice"], "remove": ["ALICE"]}, "params.remove"),
        (BASE | {"add": ["a"] * 51}, "params.add"),
        ({"credential": "idp", "add": ["alice"]}, "params.group"),
        (BASE | {"group": "", "add": ["alice"]}, "params.group"),
        (BASE | {"group": "eng\nineering", "add": ["alice"]}, "params.group"),
        (BASE | {"members": ["alice"]}, "params"),
        (BASE | {"credential": "nope", "add": ["alice"]}, "params.credential"),
    ],
)
def test_invalid_params_are_400_and_record_nothing(scim, scim_credential, scim_agent, agent_api, bad, error_key):
    response = agent_api.post(
        "/api/v1/actions", {"action_type": "scim.group_membership", "params": bad, "summary": "x"}, format="json"
    )
    assert response.status_code == 400, response.content
    assert error_key in response.json()["errors"], response.json()
    assert not ActionRequest.objects.exists()


def test_scim_credentials_need_a_base_url(db):
    for scope in ({}, {"base_url": "ftp://idp/scim/v2"}, {"base_url": "https://idp/scim/v2?x=1"}):
        with pytest.raises(ValidationError):
            create_credential(name="idp", kind="scim_bearer", secret="t", scope=scope, actor=CLI)
