"""What made an approval cheaper (issue 21) keeps every guarantee it had.

An approval reads the policy head with the action it locks (approvals.services.transitions.lock_action), fresh each
time: a rule changed between two approvals decides the very next one. ``config.prepared.update`` writes only the
columns changed since the row was read, and leaves the row exactly as ``save()`` would, whatever else wrote to it.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from approvals.action_types.http_request import HttpRequest
from approvals.errors import NotAllowed, NotPending, TargetChanged
from approvals.models import ActionRequest, Review
from approvals.policies import store as policy_store
from approvals.presentation.previews import compute_preview, fingerprint
from approvals.services.credentials import create_credential
from approvals.services.reviews import approve_action, reject_action
from approvals.services.transitions import lock_action, lock_action_with_policy_head
from audit.models import AuditEvent
from config import prepared
from config.prepared import update
from tests.conftest import propose_body
from tests.factories import CLI, propose

pytestmark = pytest.mark.django_db

AT = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


# An action's UPDATE, on its own or held for the transaction's statement of writes (audit.chain.update_with_events).
_ACTION_UPDATE = re.compile(r'UPDATE "approvals_actionrequest" SET .*? WHERE "id" = ')


def _writes_to_actions(queries) -> list[str]:
    return [found.group(0) for q in queries for found in _ACTION_UPDATE.finditer(q["sql"])]


def _set_columns(sql: str) -> set[str]:
    assigned = sql.split(" SET ", 1)[1].rsplit(" WHERE ", 1)[0]
    return set(re.findall(r'(?:^|, )"(\w+)" = ', assigned))


# --- the policy head, read with the locked action ---------------------------------------------------------------


def test_an_approval_reads_the_policy_head_in_the_statement_that_locks_the_action(agent_api, reviewer_api):
    pending = [agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"] for _ in range(2)]
    assert reviewer_api.post(f"/api/v1/actions/{pending[0]}/approve", {}, format="json").status_code == 200
    with CaptureQueriesContext(connection) as queries:
        answer = reviewer_api.post(f"/api/v1/actions/{pending[1]}/approve", {}, format="json")
    assert answer.status_code == 200 and answer.json()["status"] == "approved", answer.content
    sql = [q["sql"] for q in queries]
    # The token with its user and the user's groups, SAVEPOINT (a test's transaction), the action locked with the
    # policy head, the review with the action's UPDATE, the audit events and the outbox message (audit.chain's held
    # writes), their seal, RELEASE: 6. The action has no reviews yet, which its row says (has_reviews), so they are
    # not read: they made 7; a read of the action before the lock, for its preview, 8 (decision.only's preview reads
    # nothing: it is computed from the locked row); the groups on their own 9, the review and the action on their own
    # 11, the head read on its own 12 and the message on its own 13.
    assert len(sql) == 6, [s[:90] for s in sql]
    assert sum('FROM "approvals_actionrequest"' in s for s in sql) == 1
    assert not any('FROM "approvals_review"' in s for s in sql)
    (written,) = [s for s in sql if 'INSERT INTO "approvals_review"' in s]
    assert 'UPDATE "approvals_actionrequest"' in written and "audit_unsealedevent" in written
    heads = [s for s in sql if "approvals_policyversion" in s]
    assert len(heads) == 1 and "FOR UPDATE" in heads[0] and 'FROM "approvals_actionrequest"' in heads[0], heads
    # Only the columns the approval changed (and the JSON ones, which can change in place), not all 47.
    (write,) = _writes_to_actions(queries)
    assert _set_columns(write) == {
        "status",
        "decided_at",
        "finished_at",
        "updated_at",
        "has_reviews",  # by this UPDATE, so the trigger that would mark it (migration 0021) writes nothing
        "params",
        "context",
        "notify_channels",
        "escalate_channels",
    }


def test_an_edited_approval_reads_the_head_once_too(agent_api, reviewer_api):
    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    edited = {"command": "restart", "service": "search"}
    with CaptureQueriesContext(connection) as queries:
        answer = reviewer_api.post(f"/api/v1/actions/{action_id}/approve", {"params": edited}, format="json")
    assert answer.status_code == 200, answer.content
    assert ActionRequest.objects.get(id=action_id).edited_params == edited
    heads = [q["sql"] for q in queries if "approvals_policyversion" in q["sql"]]
    assert len(heads) == 1 and "FOR UPDATE" in heads[0], heads


# --- the preview of a decision: under the lock only when it waits on nothing ----------------------------------------


def _row_lock_seen_by_the_target(target, action: ActionRequest, path: str) -> list[bool]:
    """Whether the action's row was locked when the target answered the preview's read, by another connection's
    ``FOR UPDATE NOWAIT`` on it, one entry per read."""
    seen: list[bool] = []
    settings = connection.settings_dict

    def answer(_request):
        with psycopg.connect(
            host=settings["HOST"],
            port=settings["PORT"],
            user=settings["USER"],
            dbname=settings["NAME"],
            autocommit=True,
        ) as other:
            try:
                other.execute(
                    "SELECT 1 FROM approvals_actionrequest WHERE id = %s FOR UPDATE NOWAIT", [action.id]
                ).fetchall()
                seen.append(False)
            except psycopg.errors.LockNotAvailable:
                seen.append(True)
        return {"name": "Ann", "groups": ["staff"]}

    target.resources[path] = answer
    return seen


def _put(agent, credential, *, approvals: int = 1) -> ActionRequest:
    if approvals > 1:
        policy_store.save_rule({"name": "people", "action_type": "*", "required_approvals": approvals}, actor=CLI)
    params = {"credential": credential.name, "method": "PUT", "path": "/users/7", "json": {"name": "Ann", "x": 1}}
    return propose(agent, "http.request", params=params)


# Committed, so that another connection sees the row (and its lock): decided, an approved PUT would be executed by
# the Celery worker an earlier test may have left running, while the test's database is emptied after it. Two
# approvals wanted, the one approval leaves it pending.
_COMMITTED_AND_PENDING = 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("verdict", ["approve", "reject"])
def test_a_preview_that_reads_the_target_is_read_with_no_lock_held_on_the_action(
    agent, reviewer, target, credential, verdict
):
    action = _put(agent, credential, approvals=_COMMITTED_AND_PENDING)
    locked = _row_lock_seen_by_the_target(target, action, "/users/7")
    if verdict == "approve":
        decided = approve_action(action_id=action.id, reviewer=reviewer, via="api")
    else:
        decided = reject_action(action_id=action.id, reviewer=reviewer, via="api", reason="no")
    assert locked == [False]  # read once, and another writer could have taken the row meanwhile
    assert "staff" in str(decided.reviews.get().evidence["preview"])  # what the target answered


@pytest.mark.django_db(transaction=True)
def test_a_type_that_says_its_preview_waits_on_nothing_is_previewed_under_the_lock(
    agent, reviewer, target, credential, monkeypatch
):
    """What tells the two apart is the type's own word (ActionType.preview_offline): said wrongly, the lock is held
    across the read, which the test above would see."""
    monkeypatch.setattr(HttpRequest, "preview_offline", True)
    action = _put(agent, credential, approvals=_COMMITTED_AND_PENDING)
    locked = _row_lock_seen_by_the_target(target, action, "/users/7")
    approve_action(action_id=action.id, reviewer=reviewer, via="api")
    assert locked == [True]


def test_an_outsiders_approval_of_a_type_that_reads_its_target_reads_nothing_and_is_audited_once(
    agent, outsider, target, credential
):
    action = _put(agent, credential)
    with pytest.raises(NotAllowed):
        approve_action(action_id=action.id, reviewer=outsider, via="api")
    assert target.requests == []
    assert AuditEvent.objects.filter(verb="decision.refused", action_id=action.id).count() == 1
    assert not action.reviews.exists()


def test_a_changed_target_refuses_the_approval_after_a_decided_action_refuses_it(agent, reviewer, target, credential):
    """The fingerprint is checked under the lock, after whether the action can still be decided: a reviewer late to an
    approved action hears who approved it, not that the target changed."""
    action = _put(agent, credential)
    target.resources["/users/7"] = {"name": "Ann", "groups": ["staff"]}
    seen = fingerprint(compute_preview("http.request", action.params))
    target.resources["/users/7"] = {"name": "Ann", "groups": ["staff", "admins"]}
    with pytest.raises(TargetChanged) as changed:
        approve_action(action_id=action.id, reviewer=reviewer, via="api", preview_fingerprint=seen)
    assert "admins" in str(changed.value.extra["preview"])
    assert not action.reviews.exists()

    fresh = fingerprint(compute_preview("http.request", action.params))
    approve_action(action_id=action.id, reviewer=reviewer, via="api", preview_fingerprint=fresh)
    with pytest.raises(NotPending, match="rita approved this"):
        approve_action(action_id=action.id, reviewer=reviewer, via="api", preview_fingerprint=seen)


# --- whether an action has reviews: kept by the database ------------------------------------------------------------


def test_the_first_review_marks_the_action_reviewed_whoever_writes_it(agent, reviewer, second_reviewer):
    """A decision skips reading the reviews of an action whose row says it has none: so the row says so whatever
    wrote the review, the services or anything else (a trigger, migration 0021)."""
    by_service, by_orm, by_sql = (propose(agent) for _ in range(3))
    assert not any(a.has_reviews for a in ActionRequest.objects.filter(id__in=[by_service.id, by_orm.id, by_sql.id]))

    reject_action(action_id=by_service.id, reviewer=reviewer, via="api", reason="no")
    Review.objects.create(action=by_orm, reviewer=reviewer, verdict=Review.Verdict.APPROVE, via="api")
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO approvals_review (action_id, reviewer_id, verdict, via, comment, evidence, override_reason,"
            " created_at) VALUES (%s, %s, 'approve', 'api', '', '{}', '', now())",
            [by_sql.id, second_reviewer.pk],
        )
    for action in (by_service, by_orm, by_sql):
        action.refresh_from_db()
        assert action.has_reviews, action
    assert not propose(agent).has_reviews  # and only those


def _versions_written(table: str) -> int:
    """Rows this transaction inserted plus row versions it updated in ``table``: PostgreSQL's own count of the
    transaction so far (pg_stat_get_xact_*), kept as the statements run, not when statistics are next sent."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_stat_get_xact_tuples_inserted(%s::regclass) + pg_stat_get_xact_tuples_updated(%s::regclass)",
            [table, table],
        )
        return cursor.fetchone()[0]


@pytest.mark.parametrize("decision", ["approve", "reject", "auto-approve"])
def test_a_decision_writes_its_actions_row_once(agent, reviewer, decision):
    """A decision marks its action reviewed with the UPDATE it makes anyway (and an auto-approved proposal with its
    INSERT): the trigger that marks a reviewed action then has nothing to write, where it wrote the row a second time
    in the same statement (a dead row version per decision, and its WAL). The mark is there all the same."""
    if decision == "auto-approve":
        policy_store.save_rule(
            {"name": "auto", "agent": agent.name, "action_type": "decision.only", "effect": "auto_approve"}, actor=CLI
        )
    else:
        action = propose(agent)
    before = _versions_written("approvals_actionrequest")
    if decision == "approve":
        action = approve_action(action_id=action.id, reviewer=reviewer, via="api")
    elif decision == "reject":
        action = reject_action(action_id=action.id, reviewer=reviewer, via="api", reason="no")
    else:
        action = propose(agent)
    assert _versions_written("approvals_actionrequest") - before == 1
    action.refresh_from_db()
    assert action.has_reviews and action.status == {"reject": "rejected"}.get(decision, "approved")


def test_a_save_of_an_instance_read_before_the_first_review_leaves_the_action_reviewed(agent, reviewer):
    """The column is derived from the reviews, so nothing may write it back: an instance read before the review, saved
    whole afterwards, would say "no reviews" of an action that has one, and the next decision would not see them."""
    action = propose(agent)
    stale = ActionRequest.objects.get(id=action.id)
    Review.objects.create(action=action, reviewer=reviewer, verdict=Review.Verdict.APPROVE, via="api")
    stale.summary = "Edited before the review was seen"
    stale.save()
    ActionRequest.objects.filter(id=action.id).update(has_reviews=False)
    action.refresh_from_db()
    assert action.has_reviews and action.summary == "Edited before the review was seen"


def test_a_withdrawn_approval_is_still_read_and_its_reviewer_may_approve_again(agent, reviewer, second_reviewer):
    """An action whose only review was withdrawn still has reviews: the next decision reads them (a withdrawn approval
    does not count, and does not stop its reviewer approving again)."""
    policy_store.save_rule({"name": "two-people", "action_type": "*", "required_approvals": 2}, actor=CLI)
    action = propose(agent)
    approve_action(action_id=action.id, reviewer=reviewer, via="api")
    Review.objects.filter(action=action).update(withdrawn_at=AT)
    with CaptureQueriesContext(connection) as queries:
        approve_action(action_id=action.id, reviewer=reviewer, via="api")
    assert any('FROM "approvals_review"' in q["sql"] for q in queries)
    approved = approve_action(action_id=action.id, reviewer=second_reviewer, via="api")
    assert approved.status == "approved"


@pytest.fixture
def high_risk(agent, target):
    """Two high-risk actions under the rule ``prod``, which at first wants no fresh sign-in."""
    policy_store.save_rule({"name": "prod", "action_type": "*"}, actor=CLI)
    create_credential(
        name="prod-api", kind="http_bearer", secret="t", scope={"base_url": target.url}, actor=CLI, min_risk="high"
    )
    actions = [
        propose(agent, "http.request", params={"credential": "prod-api", "method": "POST", "path": f"/{n}"})
        for n in range(3)
    ]
    assert all(a.risk == "high" and a.policy_rule == "prod" for a in actions)
    return actions


def test_a_rule_changed_between_two_approvals_decides_the_very_next_one(high_risk, reviewer_api):
    first, second, third = high_risk
    assert reviewer_api.post(f"/api/v1/actions/{first.id}/approve", {}, format="json").status_code == 200

    policy_store.save_rule({"name": "prod", "action_type": "*", "fresh_auth_minutes": 5}, actor=CLI)
    refused = reviewer_api.post(f"/api/v1/actions/{second.id}/approve", {}, format="json")
    assert refused.status_code == 403 and "within the last 5 minutes" in refused.json()["detail"], refused.content
    assert not second.reviews.exists()

    policy_store.save_rule({"name": "prod", "action_type": "*", "fresh_auth_minutes": None}, actor=CLI)
    assert reviewer_api.post(f"/api/v1/actions/{second.id}/approve", {}, format="json").status_code == 200
    policy_store.save_rule({"name": "prod", "action_type": "*", "fresh_auth_minutes": 1}, actor=CLI)
    assert reviewer_api.post(f"/api/v1/actions/{third.id}/approve", {}, format="json").status_code == 403


def test_the_locked_read_gives_the_head_as_the_store_reads_it(agent_api):
    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    with transaction.atomic():
        action, head = lock_action_with_policy_head(action_id)
        assert action.id == uuid.UUID(action_id) and head == (0, "")  # no version yet
    policy_store.save_rule({"name": "one", "action_type": "*"}, actor=CLI)
    with transaction.atomic():
        _, head = lock_action_with_policy_head(action_id)
    assert head == policy_store._HEAD.first() and head[0] == policy_store.current_version() > 0
    with pytest.raises(ActionRequest.DoesNotExist), transaction.atomic():
        lock_action_with_policy_head(uuid.uuid4())


# --- a partial UPDATE leaves the row save() leaves -----------------------------------------------------------------


def _locked(action_id) -> ActionRequest:
    """The action as every decision reads it (from_row, which keeps what it read)."""
    return lock_action(action_id)


def _change(action: ActionRequest) -> None:
    action.move_to("approved", at=AT)
    action.summary = "changed"
    action.params["added"] = 1  # in place: the very dict that was read
    action.notify_channels.append("email:x@example.com")
    action.decision_reason = "why"
    action.reviewer_group = None
    action.confidence = 0.5


def test_a_partial_update_leaves_the_row_save_leaves(agent_api):
    original = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    copy = ActionRequest.objects.get(id=original)
    copy.id, copy.idempotency_key = uuid.uuid4(), None
    copy.save(force_insert=True)
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        action = _locked(original)
        _change(action)
        update(action)
    by_orm = ActionRequest.objects.get(id=copy.id)
    _change(by_orm)
    by_orm.save()
    by_update, by_save = (ActionRequest.objects.filter(id=i).values().get() for i in (original, copy.id))
    assert {**by_update, "id": None} == {**by_save, "id": None}
    assert by_update["params"]["added"] == 1 and by_update["reviewer_group_id"] is None
    (write,) = _writes_to_actions(queries)
    assert "summary" in _set_columns(write) and "agent_id" not in _set_columns(write)


def test_a_json_field_changed_in_place_is_written(agent_api):
    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    with transaction.atomic():
        action = _locked(action_id)
        action.params["x"] = 1
        action.context["note"] = ["in", "place"]
        update(action)
    row = ActionRequest.objects.get(id=action_id)
    assert row.params["x"] == 1 and row.context["note"] == ["in", "place"]


def test_a_column_written_meanwhile_by_another_statement_is_not_overwritten(agent_api):
    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    with transaction.atomic():
        action = _locked(action_id)
        ActionRequest.objects.filter(id=action_id).update(summary="theirs", execution_heartbeat_at=AT)
        action.decision_reason = "mine"
        update(action)
        # The instance's record is now what it wrote: a second write in the transaction writes only what changed
        # since, and leaves what another statement wrote in between.
        action.summary = "mine too"
        update(action)
        ActionRequest.objects.filter(id=action_id).update(summary="theirs again")
        action.risk = "high"
        update(action)
    row = ActionRequest.objects.get(id=action_id)
    assert (row.summary, row.execution_heartbeat_at) == ("theirs again", AT)
    assert (row.decision_reason, row.risk) == ("mine", "high")


def test_an_auto_now_field_is_written_and_set_even_when_nothing_else_changed(agent_api, monkeypatch):
    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    before = ActionRequest.objects.get(id=action_id).updated_at
    monkeypatch.setattr(ActionRequest._meta.get_field("updated_at"), "auto_now", True)
    monkeypatch.setattr(prepared, "_columns", {})  # what update knows of the model, asked again
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        action = _locked(action_id)
        update(action)
    (write,) = _writes_to_actions(queries)
    assert "updated_at" in _set_columns(write)
    assert action.updated_at > before and ActionRequest.objects.get(id=action_id).updated_at == action.updated_at


def test_an_instance_with_no_record_of_its_read_is_written_whole(agent_api):
    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    action = ActionRequest.objects.get(id=action_id)  # made by from_db: nothing says what was read
    ActionRequest.objects.filter(id=action_id).update(summary="theirs")
    with CaptureQueriesContext(connection) as queries:
        update(action)
    (write,) = _writes_to_actions(queries)
    assert len(_set_columns(write)) == len(ActionRequest._meta.concrete_fields) - 1  # every column but the key
    assert ActionRequest.objects.get(id=action_id).summary == action.summary  # as save() would have left it


def test_an_instance_given_another_rows_key_writes_that_row_whole(agent_api):
    original = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    other = ActionRequest.objects.get(id=original)
    other.id, other.idempotency_key, other.summary = uuid.uuid4(), None, "the other row's"
    other.save(force_insert=True)
    with transaction.atomic():
        action = _locked(original)
        action.id = other.id  # what was read says nothing of the other row: save() would write it all
        update(action)
    assert ActionRequest.objects.get(id=other.id).summary == ActionRequest.objects.get(id=original).summary


# --- a reviewer's groups, read with the token ---------------------------------------------------------------------


def test_a_reviewer_taken_out_of_the_group_decides_nothing_on_the_next_request(agent_api, reviewer, reviewer_api):
    first, second = (agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"] for _ in range(2))
    assert reviewer_api.post(f"/api/v1/actions/{first}/approve", {}, format="json").status_code == 200
    reviewer.groups.clear()
    refused = reviewer_api.post(f"/api/v1/actions/{second}/approve", {}, format="json")
    assert refused.status_code == 403 and "only members of" in refused.json()["detail"], refused.content
    assert ActionRequest.objects.get(id=second).status == "pending"


@pytest.mark.parametrize("memberships", [0, 1, 3])
def test_the_groups_read_with_the_token_are_the_users_groups(reviewer, memberships):
    from django.contrib.auth.models import Group

    from approvals.api.authentication import authenticate_reviewer_token
    from approvals.models import ReviewerToken
    from approvals.policies.separation_of_duties import user_group_ids

    reviewer.groups.set([Group.objects.create(name=f"team-{i}") for i in range(memberships)])
    _, raw = ReviewerToken.issue(reviewer)
    user, _ = authenticate_reviewer_token(raw)
    with CaptureQueriesContext(connection) as queries:
        ids = user_group_ids(user)
    assert ids == set(reviewer.groups.values_list("id", flat=True)) and len(ids) == memberships
    assert len(queries) == 0  # read with the token, not again
