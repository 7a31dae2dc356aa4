"""What made an API request cheap (issue 21, docs/BENCHMARKS.md) keeps every guarantee it had.

Prepared statements (config/prepared.py) read the same rows the ORM reads; the API's first page and one-action read
answer exactly what the general selectors answer; the orjson renderer writes DRF's bytes; the rate limiter's batches
never let a key past its budget across processes; the API's own middleware chain still carries request ids, CSRF for
sessions and the 503 for a lost database.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.db.models.signals import post_init
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from agents import ratelimit
from agents.models import AgentKey
from agents.services import create_agent
from approvals.api.renderers import APIJSONRenderer
from approvals.models import ActionRequest, OutboxMessage
from approvals.outbox import dispatcher as outbox
from approvals.policies import store as policy_store
from approvals.selectors import actions as selectors
from approvals.selectors.presenters import present_action
from audit.chain import Actor
from audit.models import AuditEvent
from config import prepared
from config.prepared import PreparedInstances, PreparedQuery, from_row, insert, update
from tests.api.test_api import assert_problem
from tests.conftest import CLI, propose_body, token_client
from tests.factories import propose
from tests.support.asgi import http_scope, send_request
from tests.support.plans import analyzed_plan, rows_read

STAFF = Actor("user", "ada", "admin")


# --- the renderer -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"a": 1, "b": [1, 2.5, None, True], "c": {"d": "é ü 名前 \U0001f600"}},
        {"line": "ends\u2028here\u2029and there", "quote": 'say "hi"\n\t\\'},
        {"at": datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC), "naive": datetime(2026, 1, 1, 12, 0)},
        {"money": Decimal("12.50"), "id": uuid.UUID(int=7), "period": timedelta(seconds=90)},
        {1: "int key", "nested": [{"x": []}, {}]},
        {"deep": [{"x": {2: "an int key far down", True: "and a bool"}}], "sep": "a\u2028b"},
        {"dash": "an em dash \u2014 and \u201cquotes\u201d, lead byte E2 but no separator"},
        {"big": 2**70, "line": "\u2029"},
        [],
        "plain",
    ],
)
def test_the_api_writes_the_bytes_drf_wrote(data):
    assert APIJSONRenderer().render(data) == JSONRenderer().render(data)


def test_pretty_printing_on_request_is_drfs_own():
    data = {"a": [1, 2]}
    media = "application/json; indent=2"
    assert APIJSONRenderer().render(data, media) == JSONRenderer().render(data, media)


# --- prepared statements ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_prepared_query_reads_what_the_orm_reads_with_each_calls_values(owner, reviewer, second_reviewer):
    others = Group.objects.create(name="others")
    second_reviewer.groups.add(others)
    query = PreparedQuery(
        lambda user_id: type(owner).groups.through.objects.filter(user_id=user_id).values_list("group_id"),
        user_id=type(owner)._meta.pk,
    )
    for user in (owner, reviewer, second_reviewer):
        expected = sorted(user.groups.values_list("id", flat=True))
        assert sorted(group_id for (group_id,) in query.rows(user_id=user.pk)) == expected


@pytest.mark.django_db
def test_prepared_rows_are_converted_as_the_orm_converts_them(agent_api):
    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    instances = PreparedInstances(
        ActionRequest,
        lambda action_id: ActionRequest.objects.filter(id=action_id),
        related=("agent", "reviewer_group"),
        action_id=ActionRequest._meta.pk,
    )
    prepared = instances.first(action_id=action_id)
    orm = ActionRequest.objects.select_related("agent", "reviewer_group").get(id=action_id)
    for field in ActionRequest._meta.concrete_fields:
        assert getattr(prepared, field.attname) == getattr(orm, field.attname), field.name
    assert isinstance(prepared.created_at, datetime) and prepared.created_at.tzinfo is not None
    assert isinstance(prepared.params, dict)
    assert prepared.agent.name == orm.agent.name and prepared.reviewer_group.name == orm.reviewer_group.name
    assert instances.first(action_id=uuid.uuid4()) is None


# --- request bodies: fields copied shallowly (approvals.api.serializers.InputSerializer) ----------------------------

BODIES = [
    propose_body(),
    {**propose_body(), "context": {"reasoning": "x" * 70_000}},
    {**propose_body(), "summary": "   "},
    {**propose_body(), "expires_in": 10},
    {**propose_body(), "callback_url": "ftp://example.com/"},
    {**propose_body(), "params": ["not", "an", "object"]},
    {**propose_body(), "surprise": 1},
    {"summary": "no type"},
    ["not a body"],
    {**propose_body(), "on_behalf_of": "a" * 300, "idempotency_key": ""},
]


def _answers(serializer_class, bodies):
    answers = []
    for body in bodies:
        serializer = serializer_class(data=body)
        answers.append((serializer.is_valid(), dict(serializer.errors), dict(serializer.validated_data or {})))
    return answers


def test_shallow_copied_fields_validate_exactly_as_drfs_deep_copies(monkeypatch):
    from rest_framework import serializers

    from approvals.api.serializers import ProposalInput

    ours = _answers(ProposalInput, BODIES)
    monkeypatch.setattr(ProposalInput, "get_fields", serializers.Serializer.get_fields)
    assert ours == _answers(ProposalInput, BODIES)
    assert [valid for valid, _, _ in ours] == [True] + [False] * (len(BODIES) - 1)


def test_each_instance_has_its_own_binding_and_threads_their_own_answers():
    from concurrent.futures import ThreadPoolExecutor

    from approvals.api.serializers import ProposalInput

    one, two = ProposalInput(data=BODIES[0]), ProposalInput(data=BODIES[2])
    for name in ProposalInput._declared_fields:
        assert one.fields[name] is not two.fields[name] and one.fields[name].parent is one, name
        assert ProposalInput._declared_fields[name].parent is None  # the declaration itself is never bound
    expected = _answers(ProposalInput, BODIES)
    with ThreadPoolExecutor(8) as pool:
        rounds = list(pool.map(lambda _: _answers(ProposalInput, BODIES), range(64)))
    assert all(answers == expected for answers in rounds)


def test_a_nested_serializer_is_refused_by_the_shallow_copy():
    from rest_framework import serializers

    from approvals.api.serializers import InputSerializer

    with pytest.raises(TypeError, match="nested serializers"):
        type("Nested", (InputSerializer,), {"inner": serializers.Serializer()})


TIMES = [
    "2026-12-06 10:13:08.123456+00",
    "1999-12-31 23:59:59.999999-08",
    "2024-02-29 00:00:00+05:30",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
    "2026-03-29 01:30:00.5+01",
]


@pytest.mark.django_db
def test_times_load_through_psycopgs_compiled_loader_exactly_as_djangos_own(settings):
    """config/postgresql: the loader Django registers (pure Python) replaced by psycopg's compiled one, only where the
    two agree: every value equal and in the same zone object, UTC."""
    from django.db.backends.postgresql.psycopg_any import BaseTzLoader
    from psycopg import postgres, pq

    from config.postgresql.base import COMPILED_TIMESTAMPTZ_LOADER

    assert settings.DATABASES["default"]["ENGINE"] == "config.postgresql"
    oid = postgres.types["timestamptz"].oid
    with connection.cursor() as cursor:
        # The compiled class itself, on the cursor as on the connection (no per-cursor loader: no copied adapters map).
        assert cursor.cursor.adapters.get_loader(oid, pq.Format.TEXT) is COMPILED_TIMESTAMPTZ_LOADER
        assert COMPILED_TIMESTAMPTZ_LOADER.__module__.startswith("psycopg_binary")
        cursor.execute("SELECT " + ", ".join(["%s::timestamptz"] * len(TIMES)), TIMES)
        loaded = cursor.fetchone()
        djangos = type("Djangos", (BaseTzLoader,), {"timezone": UTC})(oid, cursor.cursor)
    for text, value in zip(TIMES, loaded, strict=True):
        expected = djangos.load(text.encode())
        assert value == expected and value.tzinfo is UTC and expected.tzinfo is UTC, text
        assert value.isoformat() == expected.isoformat(), text


@pytest.mark.django_db(transaction=True)
def test_times_load_in_utc_on_server_side_cursors_and_on_the_agents_shortcut():
    """A named cursor (``iterator()``) is made by the backend's own create_cursor too; the shortcut's async connections
    (approvals.api.loop_connections) take Django's parameters, the compiled loader with them."""
    from psycopg import postgres, pq

    from approvals.api.loop_connections import _connection_kwargs
    from config.postgresql.base import COMPILED_TIMESTAMPTZ_LOADER

    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::timestamptz", [TIMES[0]])
        expected = cursor.fetchone()[0]
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.execute("SELECT %s::timestamptz", [TIMES[0]])
        assert cursor.fetchone()[0] == expected and expected.tzinfo is UTC
    oid = postgres.types["timestamptz"].oid
    assert _connection_kwargs()["context"].get_loader(oid, pq.Format.TEXT) is COMPILED_TIMESTAMPTZ_LOADER


@pytest.mark.django_db(transaction=True)
def test_naive_times_still_load_naive_when_time_zones_are_off(settings):
    """A setting that makes Django's values differ from psycopg's (USE_TZ off) gives Django's loader back, per cursor."""
    settings.USE_TZ = False
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::timestamptz", [TIMES[0]])
        assert cursor.fetchone()[0] == datetime(2026, 12, 6, 10, 13, 8, 123456)  # naive, in the session's zone


@pytest.mark.django_db
def test_a_long_statement_is_converted_to_placeholders_once_and_still_binds_each_calls_values():
    """config/postgresql: psycopg keeps its conversion of a statement's %s only up to 4,096 bytes and 50 parameters;
    a proposal's statement of writes is longer (audit.chain's held writes). Kept here, for any number."""
    from config.postgresql.base import _converted

    width = 120  # parameters: past psycopg's 50, and the text past its 4,096 bytes
    sql = "SELECT " + ", ".join(f"%s::int AS column_with_a_long_name_{i}" for i in range(width))
    assert len(sql) > 4096
    answers = []
    for first in (1, 1000):
        before = _converted.cache_info()
        with connection.cursor() as cursor:
            cursor.execute(sql, list(range(first, first + width)))
            answers.append(cursor.fetchone())
        after = _converted.cache_info()
        converted_now = after.misses - before.misses
    assert converted_now == 0 and after.hits > before.hits  # the second run found the first's conversion
    assert answers == [tuple(range(1, 1 + width)), tuple(range(1000, 1000 + width))]


@pytest.mark.django_db(transaction=True)
def test_a_repeated_proposal_converts_nothing_and_runs_prepared_statements(agent_api, monkeypatch):
    from psycopg import _queries

    from config.postgresql.base import _converted

    for _ in range(6):  # past DB_PREPARE_THRESHOLD (5) on this connection
        assert agent_api.post("/api/v1/actions", propose_body(), format="json").status_code == 201
    before, converted_by_psycopg = _converted.cache_info(), []
    uncached = _queries._query2pg_nocache  # what psycopg runs for a statement past its own cache's limits
    monkeypatch.setattr(_queries, "_query2pg_nocache", lambda *a: converted_by_psycopg.append(a[0]) or uncached(*a))
    assert agent_api.post("/api/v1/actions", propose_body(), format="json").status_code == 201
    assert _converted.cache_info().misses == before.misses and not converted_by_psycopg
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    # The writes' one statement (the action, its events, its push) and the key's read are prepared on the connection.
    assert [p for p in prepared if "approvals_actionrequest" in p and "audit_unsealedevent" in p], prepared
    assert [p for p in prepared if 'FROM "agents_agentkey"' in p], prepared


@pytest.mark.django_db
def test_a_parameter_that_never_reaches_the_sql_is_refused():
    # A value used only in Python would be frozen at its stand-in: preparing such a query is refused outright.
    query = PreparedQuery(
        lambda status: ActionRequest.objects.all().values_list("id"), status=ActionRequest._meta.get_field("status")
    )
    with pytest.raises(ValueError, match="does not reach"):
        query.rows(status="pending")


@pytest.mark.django_db
def test_a_prepared_insert_and_update_write_the_row_save_writes(agent_api):
    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    original = ActionRequest.objects.get(id=action_id)
    copies = []
    for write in (lambda row: row.save(force_insert=True), insert):
        row = ActionRequest.objects.get(id=action_id)
        row.id, row.idempotency_key = uuid.uuid4(), None
        write(row)
        copies.append(row.id)
    by_save, by_insert = (ActionRequest.objects.filter(id=i).values().get() for i in copies)
    assert {**by_save, "id": None} == {**by_insert, "id": None}
    message = insert(OutboxMessage(kind=OutboxMessage.Kind.PUSH, payload={"a": 1}, action_id=original.id))
    assert message.id is not None and OutboxMessage.objects.get(id=message.id).payload == {"a": 1}

    original.summary, original.params = "changed", {"command": "other"}
    update(original)
    assert ActionRequest.objects.filter(id=action_id).values("summary", "params").get() == {
        "summary": "changed",
        "params": {"command": "other"},
    }
    partial = ActionRequest.objects.only("id", "summary").get(id=action_id)
    partial.summary = "only this"
    update(partial)  # a partly read row writes what was read, as save() does
    assert ActionRequest.objects.get(id=action_id).params == {"command": "other"}


@pytest.mark.django_db
def test_an_instance_made_from_a_row_is_the_one_from_db_makes(agent_api, monkeypatch):
    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    names = ("id", "agent_id", "params", "status", "created_at")  # in the model's order, as from_db takes them
    values = ActionRequest.objects.filter(id=action_id).values_list(*names).get()
    made, by_django = from_row(ActionRequest, names, values), ActionRequest.from_db("default", names, values)
    assert type(made) is ActionRequest and vars(made).keys() - {"_state"} == vars(by_django).keys() - {"_state"}
    assert all(getattr(made, name) == getattr(by_django, name) for name in names)
    assert (made._state.adding, made._state.db) == (False, "default")
    assert made.get_deferred_fields() == by_django.get_deferred_fields()
    assert made.summary == by_django.summary  # a field not read loads on first use, as a deferred field does
    assert made.agent.pk == made.agent_id

    # A model whose instances someone watches being made (an init signal) is made by from_db, signal and all.
    made_by_init = []
    receiver = lambda sender, instance, **kwargs: made_by_init.append(instance)  # noqa: E731
    post_init.connect(receiver, sender=ActionRequest)
    monkeypatch.setattr(prepared, "_plainly", {})
    try:
        made = from_row(ActionRequest, names, values)
    finally:
        post_init.disconnect(receiver, sender=ActionRequest)
    assert made_by_init == [made]


# --- the API's reads answer what the general selectors answer ------------------------------------------------------


def _policy_effects(reviewer_api, agent_api):
    """One action of each kind: pending, auto-approved, denied, approved by a reviewer, rejected."""
    policy_store.save_rule(
        {
            "name": "auto",
            "effect": "auto_approve",
            "action_type": "decision.only",
            "conditions": [{"path": "params.command", "op": "equals", "value": "ok"}],
        },
        actor=STAFF,
    )
    policy_store.save_rule(
        {
            "name": "deny",
            "effect": "deny",
            "action_type": "decision.only",
            "conditions": [{"path": "params.command", "op": "equals", "value": "no"}],
            "reason": "No.",
        },
        actor=STAFF,
    )
    ids = [
        agent_api.post("/api/v1/actions", propose_body(params={"command": c}), format="json").json()["id"]
        for c in ("wait", "ok", "no", "approve", "reject")
    ]
    assert reviewer_api.post(f"/api/v1/actions/{ids[3]}/approve", {}, format="json").status_code == 200
    assert reviewer_api.post(f"/api/v1/actions/{ids[4]}/reject", {"reason": "no"}, format="json").status_code == 200
    return ids


@pytest.mark.django_db
def test_one_action_read_by_the_api_is_what_the_selectors_present(agent, agent_api, reviewer, reviewer_api):
    for action_id in _policy_effects(reviewer_api, agent_api):
        for principal, client in ((agent, agent_api), (reviewer, reviewer_api)):
            general = selectors.get_action_for(principal, action_id)
            if general is None:  # not theirs to read (a denied action has no reviewer group)
                assert selectors.read_action_for(principal, action_id) is None
                assert_problem(client.get(f"/api/v1/actions/{action_id}"), 404)
                continue
            expected = present_action(general)
            assert client.get(f"/api/v1/actions/{action_id}").json() == expected
            assert present_action(selectors.read_action_for(principal, action_id)) == expected


@pytest.mark.django_db
def test_the_first_page_is_what_the_general_page_holds(agent, agent_api, reviewer, reviewer_api, outsider):
    _policy_effects(reviewer_api, agent_api)
    outsider_api = token_client(outsider)
    for principal, client in ((agent, agent_api), (reviewer, reviewer_api), (outsider, outsider_api)):
        for status in (None, "pending", "rejected"):
            expected_qs = selectors.actions_for(principal).order_by("-created_at", "-id")
            if status:
                expected_qs = expected_qs.filter(status=status)
            expected = [present_action(a) for a in expected_qs[:2]]
            query = "?limit=2" + (f"&status={status}" if status else "")
            page = client.get(f"/api/v1/actions{query}").json()
            assert page["results"] == expected
            assert page["previous"] is None
            assert (page["next"] is not None) == (expected_qs.count() > 2)
            if page["next"]:  # the cursor it hands out leads on through the general path
                following = client.get(page["next"]).json()["results"]
                assert following == [present_action(a) for a in expected_qs[2:4]]


@pytest.mark.django_db
def test_a_reviewers_first_page_reads_reviews_only_when_a_row_has_some(agent_api, reviewer_api):
    """A reviewer's queue of new proposals has no reviews: its rows say so (has_reviews), and none are read. Once one
    of them is reviewed, the next page reads them and shows the review."""
    ids = [agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"] for _ in range(3)]
    reviewer_api.get("/api/v1/actions?status=pending")
    with CaptureQueriesContext(connection) as queries:
        page = reviewer_api.get("/api/v1/actions?status=pending").json()["results"]
    assert [a["id"] for a in page] == ids[::-1]
    assert not any('"approvals_review"' in q["sql"] for q in queries), [q["sql"][:80] for q in queries]

    assert reviewer_api.post(f"/api/v1/actions/{ids[0]}/approve", {}, format="json").status_code == 200
    with CaptureQueriesContext(connection) as queries:
        page = reviewer_api.get("/api/v1/actions").json()["results"]
    assert any('FROM "approvals_review"' in q["sql"] for q in queries)
    assert [(a["id"], a["approvals"]) for a in page] == [(ids[2], 0), (ids[1], 0), (ids[0], 1)]


@pytest.mark.django_db
def test_a_proposal_decided_by_policy_is_written_once_in_its_decided_state(agent, agent_api, reviewer_api):
    _policy_effects(reviewer_api, agent_api)  # the rules: "ok" auto-approved, "no" denied
    for command, status in (("ok", "approved"), ("no", "rejected")):
        with CaptureQueriesContext(connection) as queries:
            answer = agent_api.post("/api/v1/actions", propose_body(params={"command": command}), format="json")
        assert answer.status_code == 201 and answer.json()["status"] == status
        # Inserted once (with the events, audit.chain's held writes), never updated.
        sql = " ".join(q["sql"] for q in queries)
        assert sql.count('INSERT INTO "approvals_actionrequest"') == 1
        assert 'UPDATE "approvals_actionrequest"' not in sql
        # The row is what the answer said, and what the general read presents; the audit log still says it was
        # proposed, then decided.
        assert present_action(selectors.get_action_for(agent, answer.json()["id"])) == answer.json()
        events = AuditEvent.objects.filter(action_id=answer.json()["id"]).order_by("seq")
        verbs = list(events.values_list("verb", flat=True))
        assert verbs[:2] == ["action.proposed", f"action.{status}"]


@pytest.mark.django_db
def test_a_read_is_three_statements_and_loads_nothing_on_first_use(agent_api, reviewer_api):
    action_id = _policy_effects(reviewer_api, agent_api)[3]  # approved: a decision and a review to present
    agent_api.get(f"/api/v1/actions/{action_id}")  # the key's last use is recorded at most every 30 s
    with CaptureQueriesContext(connection) as queries:
        assert agent_api.get(f"/api/v1/actions/{action_id}").status_code == 200
    # The key and agent, the action, its reviews: a field present_action reads that API_FIELDS does not load would
    # add one more here.
    assert len(queries) == 3, [q["sql"][:80] for q in queries]


@pytest.mark.django_db
def test_a_pending_action_is_read_in_two_statements_and_a_review_is_seen_at_once(agent_api, reviewer_api):
    """The read says whether the action has reviews; a pending action (what an agent polls) has none, so its
    reviews are not read. The first review is then seen on the very next read."""
    action_id = _policy_effects(reviewer_api, agent_api)[0]  # pending, no review
    agent_api.get(f"/api/v1/actions/{action_id}")
    with CaptureQueriesContext(connection) as queries:
        pending = agent_api.get(f"/api/v1/actions/{action_id}").json()
    assert len(queries) == 2, [q["sql"][:80] for q in queries]
    assert pending["status"] == "pending" and pending["approved_by"] == [] and pending["approvals"] == 0

    assert reviewer_api.post(f"/api/v1/actions/{action_id}/approve", {}, format="json").status_code == 200
    approved = agent_api.get(f"/api/v1/actions/{action_id}").json()
    assert approved["status"] == "approved" and approved["approvals"] == 1 and len(approved["approved_by"]) == 1


# --- revocation and freezing still bite on the very next request ---------------------------------------------------


@pytest.mark.django_db
def test_a_proposal_reads_its_grant_and_the_policy_head_in_one_statement_fresh_each_time(agent, agent_api):
    """approvals.services.proposals: the capability and the policy head in one statement; a grant revoked, narrowed or
    given back and a policy changed a moment ago decide the very next proposal."""
    from agents.services import grant_capability, revoke_capability

    with CaptureQueriesContext(connection) as queries:
        assert agent_api.post("/api/v1/actions", propose_body(), format="json").status_code == 201
    reads = [q["sql"] for q in queries if "approvals_policyversion" in q["sql"] or "agents_capability" in q["sql"]]
    assert len(reads) == 1 and "agents_capability" in reads[0] and "approvals_policyversion" in reads[0], reads

    revoke_capability(agent=agent, action_type="decision.only", actor=CLI)
    refused = agent_api.post("/api/v1/actions", propose_body(summary="After the revocation"), format="json")
    assert_problem(refused, 403)
    assert "not granted the capability decision.only" in refused.json()["detail"]
    assert AuditEvent.objects.filter(verb="action.refused", data__reason__icontains="not granted").exists()

    grant_capability(agent=agent, action_type="decision.only", actor=CLI, constraints={"service": ["search"]})
    narrowed = agent_api.post("/api/v1/actions", propose_body(params={"service": "billing"}), format="json")
    assert_problem(narrowed, 403)
    assert "service in [search]" in narrowed.json()["detail"]
    assert (
        agent_api.post("/api/v1/actions", propose_body(params={"service": "search"}), format="json").status_code == 201
    )

    policy_store.save_rule(
        {"name": "freeze", "position": 1, "effect": "deny", "reason": "Change freeze."}, actor=STAFF, comment="freeze"
    )
    denied = agent_api.post("/api/v1/actions", propose_body(params={"service": "search"}), format="json")
    assert denied.status_code == 201 and denied.json()["status"] == "rejected", denied.content
    assert denied.json()["policy"]["rule"] == "freeze"
    policy_store.delete_rule("freeze", actor=STAFF, comment="thaw")
    thawed = agent_api.post("/api/v1/actions", propose_body(params={"service": "search"}), format="json")
    assert thawed.json()["status"] == "pending" and thawed.json()["policy"]["rule"] != "freeze"


def _group_of(answer) -> Group:
    assert answer.status_code == 201, answer.content
    return ActionRequest.objects.select_related("reviewer_group").get(pk=answer.json()["id"]).reviewer_group


@pytest.mark.django_db
def test_a_proposal_finds_its_rules_reviewer_group_in_the_statement_of_its_grant(agent, agent_api):
    """approvals.services.proposals: the groups the rules name are looked up by name with the grant and the policy
    head, no statement of their own. By name, fresh: a group renamed and its name given to another, a group deleted
    and a rule naming a group no rule named before each route the very next proposal to the group of that name."""
    policy_store.save_rule(
        {"name": "ops", "position": 1, "action_type": "decision.only", "reviewer_group": "ops"}, actor=STAFF
    )
    first = _group_of(agent_api.post("/api/v1/actions", propose_body(), format="json"))
    assert first.name == "ops"  # not there before: made

    def group_reads(answer_of):
        with CaptureQueriesContext(connection) as queries:
            group = _group_of(answer_of())
        return group, [q["sql"] for q in queries if '"auth_group"' in q["sql"]]

    group, reads = group_reads(lambda: agent_api.post("/api/v1/actions", propose_body(), format="json"))
    assert group == first
    assert len(reads) == 2 and "agents_capability" in reads[0], reads  # the proposal's one read, then _group_of's

    Group.objects.filter(pk=first.pk).update(name="ops-retired")
    successor = Group.objects.create(name="ops")
    assert _group_of(agent_api.post("/api/v1/actions", propose_body(), format="json")) == successor
    Group.objects.filter(pk=successor.pk).update(name="ops-retired-too")
    Group.objects.create(name="ops").delete()  # made and deleted before any action named it
    remade = _group_of(agent_api.post("/api/v1/actions", propose_body(), format="json"))
    assert remade.name == "ops" and remade.pk not in (first.pk, successor.pk)

    # More groups than the statement looks up: the rest are each looked up on their own, to the same effect.
    for n in range(1, 7):
        policy_store.save_rule(
            {
                "name": f"shift-{n}",
                "position": 0,
                "action_type": "decision.only",
                "reviewer_group": f"shift-{n}",
                "conditions": [{"path": "params.command", "op": "equals", "value": f"shift-{n}"}],
            },
            actor=STAFF,
        )
    for n in (*range(1, 7), *range(6, 0, -1)):
        answer = agent_api.post("/api/v1/actions", propose_body(params={"command": f"shift-{n}"}), format="json")
        assert _group_of(answer).name == f"shift-{n}"
    assert _group_of(agent_api.post("/api/v1/actions", propose_body(), format="json")) == remade


@pytest.mark.django_db
def test_a_revoked_key_is_refused_on_the_next_request_and_audited(agent, agent_api):
    assert agent_api.get("/api/v1/actions").status_code == 200
    AgentKey.objects.filter(agent=agent).update(revoked_at=datetime.now(UTC))
    assert_problem(agent_api.get("/api/v1/actions"), 401)


@pytest.mark.django_db
def test_a_frozen_agent_is_refused_on_the_next_request(agent, agent_api):
    assert agent_api.get("/api/v1/actions").status_code == 200
    type(agent).objects.filter(id=agent.id).update(frozen_at=datetime.now(UTC), frozen_reason="incident")
    assert_problem(agent_api.get("/api/v1/actions"), 401)


# --- rate limits counted in batches --------------------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(COUNTERSIGN_AGENT_RATES={"requests": "100/hour", "proposals": "100/hour"})
def test_a_budget_holds_across_processes_that_count_in_batches(monkeypatch):
    # Three web processes, each with its own batches (ratelimit._held), one Redis: together they never let the key
    # past its budget, and they stop it at most a batch early per other process.
    processes = [{}, {}, {}]
    admitted = 0
    key = f"k{uuid.uuid4().hex[:12]}"
    for turn in range(200):
        monkeypatch.setattr(ratelimit, "_held", processes[turn % 3])
        if ratelimit.hit(key, "requests") is None:
            admitted += 1
    batch = ratelimit.batch_size(ratelimit.rate_for("requests"))
    assert 100 - 2 * (batch - 1) <= admitted <= 100


@pytest.mark.django_db
@override_settings(COUNTERSIGN_AGENT_RATES={"requests": "5/hour", "proposals": "5/hour"})
def test_a_small_budget_is_counted_one_by_one():
    assert ratelimit.batch_size(ratelimit.rate_for("requests")) == 1
    key = f"k{uuid.uuid4().hex[:12]}"
    results = [ratelimit.hit(key, "requests") for _ in range(6)]
    assert results[:5] == [None] * 5 and results[5] is not None and 1 <= results[5] <= 3600


@pytest.mark.django_db
def test_a_flood_past_the_budget_is_refused_through_the_api(owner):
    _, _, raw = create_agent(name="flood-bot", owner=owner, actor=CLI, allow=["decision.only"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    with override_settings(COUNTERSIGN_AGENT_RATES={"requests": "40/hour", "proposals": "40/hour"}):
        statuses = [client.get("/api/v1/actions").status_code for _ in range(45)]
    assert statuses.count(200) == 40 and statuses[40:] == [429] * 5


# --- the outbox message its writer claims ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_push_whose_writer_died_is_delivered_by_the_sweep_after_its_short_lease(monkeypatch):
    # What enqueue writes for a push: claimed by its writer from birth. The writer died before delivering.
    written = timezone_now()
    message = OutboxMessage.objects.create(
        kind=OutboxMessage.Kind.PUSH,
        payload={"action_id": "0" * 32, "status": "pending", "approvals": 0, "reviewer_group_id": None},
        created_at=written - timedelta(seconds=30),
        claimed_until=written + outbox.WRITER_LEASE,
    )
    assert outbox.sweep() == 0  # still the writer's
    monkeypatch.setattr(outbox.timezone, "now", lambda: written + outbox.WRITER_LEASE + timedelta(seconds=1))
    assert outbox.sweep() == 1
    message.refresh_from_db()
    assert message.delivered_at is not None


def timezone_now():
    from django.utils import timezone

    return timezone.now()


# --- the API's own middleware chain ---------------------------------------------------------------------------------


def _asgi(method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes = b""):
    from config.asgi import application

    sent = [("host", "localhost"), *(headers or {}).items()]
    if body:
        sent += [("content-type", "application/json"), ("content-length", str(len(body)))]
    answer = asyncio.run(send_request(application, http_scope(method, path, headers=sent), body))
    return {**answer, "headers": dict(answer["headers"])}


@pytest.mark.django_db(transaction=True)
@override_settings(ALLOWED_HOSTS=["localhost", "testserver"], SECURE_SSL_REDIRECT=False)
def test_the_api_chain_keeps_request_ids_and_leaves_page_headers_to_pages(agent_key):
    api = _asgi("GET", "/api/v1/actions", headers={"Authorization": f"Bearer {agent_key}", "X-Request-ID": "abc-123"})
    assert api["status"] == 200 and api["headers"]["x-request-id"] == "abc-123"
    assert "content-security-policy" not in api["headers"]
    page = _asgi("GET", "/accounts/login/")
    assert page["status"] == 200 and "content-security-policy" in page["headers"]


def _session_cookie(user, **values) -> dict[str, str]:
    from django.conf import settings
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = settings.AUTHENTICATION_BACKENDS[0]
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.update(values)
    session.save()
    return {"Cookie": f"{settings.SESSION_COOKIE_NAME}={session.session_key}"}


@pytest.mark.django_db(transaction=True)
@override_settings(ALLOWED_HOSTS=["localhost", "testserver"], SECURE_SSL_REDIRECT=False)
def test_a_session_on_the_api_chain_still_needs_csrf(agent_api, reviewer):
    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    cookie = _session_cookie(reviewer)
    read = _asgi("GET", f"/api/v1/actions/{action_id}", headers=cookie)
    assert read["status"] == 200  # the session authenticates on the API's chain
    approve = _asgi("POST", f"/api/v1/actions/{action_id}/approve", headers=cookie, body=b"{}")
    assert approve["status"] == 403 and "CSRF" in approve["body"].decode()
    assert ActionRequest.objects.get(id=action_id).status == "pending"


@pytest.mark.django_db(transaction=True)
@override_settings(ALLOWED_HOSTS=["localhost", "testserver"], SECURE_SSL_REDIRECT=False)
def test_a_session_past_its_age_reads_nothing_on_the_api_chain_and_is_audited(agent_api, reviewer):
    # The directory's word reaches someone who never signs out through the session's age (approvals/sso): on the
    # API's own chain too, not only on the pages.
    import time

    from approvals.sso.session import LOGGED_IN_AT
    from audit.models import AuditEvent

    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    with override_settings(COUNTERSIGN_SESSION_MAX_AGE_SECONDS=60):
        cookie = _session_cookie(reviewer, **{LOGGED_IN_AT: time.time() - 120})
        read = _asgi("GET", f"/api/v1/actions/{action_id}", headers=cookie)
    assert read["status"] in (401, 403)
    assert AuditEvent.objects.filter(verb="user.session_expired", actor=reviewer.username).exists()


@pytest.mark.django_db
def test_the_agents_first_page_reads_its_key_once_not_with_every_row(agent, agent_key, agent_api):
    """selectors.actions._page_and_key: the key's row first, then the page newest first, each without the other's
    columns (the key's secret, times and agent on every row were a quarter of a page's CPU)."""
    from agents.keys import parse_key
    from approvals.selectors import actions as selectors_module

    made = [agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"] for _ in range(3)]
    page, _ = selectors_module._first_page_queries("agent key", False, 50)
    key_row, *rows = page.rows(principal=parse_key(agent_key).public_id)
    width = selectors_module._ACTION_ROW_WIDTH
    assert all(value is None for value in key_row[: width + 1]) and key_row[width + 1 :].count(None) < 5
    assert [str(row[0]) for row in rows] == made[::-1]
    assert all(value is None for row in rows for value in row[width + 1 :])


@pytest.mark.django_db
@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="a PostgreSQL plan")
def test_an_agents_first_page_reads_its_page_not_its_whole_history(agent, agent_key):
    """An agent's list costs the same whatever its history: its first page reads the page's rows from the index in
    the API's order (migration approvals 0022), where PostgreSQL read and sorted every action the agent ever made."""
    from agents.keys import parse_key
    from bench.api_cost import copy_pending

    copy_pending(str(propose(agent).id), 600)  # a history: copies of one proposal, each a microsecond older
    page, _ = selectors._first_page_queries("agent key", False, 50)
    public_id = parse_key(agent_key).public_id
    sql, params = page.statement(principal=public_id)
    assert rows_read(analyzed_plan(sql, params)) <= 51  # the page and one more, to know whether more follow
    _key, *rows = page.rows(principal=public_id)
    newest = ActionRequest.objects.filter(agent=agent).order_by("-created_at", "-id").values_list("id", flat=True)
    assert [row[0] for row in rows] == list(newest[:51])
