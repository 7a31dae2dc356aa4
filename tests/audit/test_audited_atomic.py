"""A service's transaction appends its audit events together, at its end (audit.chain.audited_atomic).

The chain's lock is then held for one append and the commit; the guarantees stay: the chain is linear and
unbroken under concurrent writers, events keep the order they happened in, and an event never outlives the change
it records.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from audit.chain import Actor, audited_atomic, record_event, verify_log
from audit.models import AuditEvent
from tests.conftest import propose_body

ACTOR = Actor.system("test")


def _event(verb: str) -> AuditEvent:
    return record_event(actor=ACTOR, verb=verb, object_type="t", object_id="1")


@pytest.mark.django_db
def test_events_appear_at_the_end_of_the_block_in_the_order_recorded():
    with audited_atomic():
        first, second = _event("test.first"), _event("test.second")
        assert first.seq is None and not AuditEvent.objects.filter(verb__startswith="test.").exists()
    assert (first.seq, second.seq) == (second.seq - 1, second.seq)
    assert second.prev_hash == first.hash
    assert list(AuditEvent.objects.filter(verb__startswith="test.").order_by("seq").values_list("verb", flat=True)) == [
        "test.first",
        "test.second",
    ]
    assert verify_log().broken is None


@pytest.mark.django_db
def test_a_block_that_fails_leaves_no_event():
    with pytest.raises(RuntimeError), audited_atomic():
        _event("test.lost")
        raise RuntimeError("the change failed")
    assert not AuditEvent.objects.filter(verb="test.lost").exists()


@pytest.mark.django_db
def test_a_nested_savepoint_keeps_the_order_and_takes_its_own_events_when_it_rolls_back():
    with audited_atomic():
        _event("test.before")
        with transaction.atomic():
            _event("test.kept")
        try:
            with transaction.atomic():
                _event("test.rolled-back")
                raise ValueError
        except ValueError:
            pass
        _event("test.after")
    verbs = list(AuditEvent.objects.filter(verb__startswith="test.").order_by("seq").values_list("verb", flat=True))
    assert verbs == ["test.before", "test.kept", "test.after"]
    assert verify_log().broken is None


@pytest.mark.django_db(transaction=True)
def test_concurrent_proposals_and_decisions_keep_one_unbroken_chain(agent_key, reviewer):
    from tests.conftest import token_client

    errors: list[BaseException] = []
    ids: list[str] = []
    lock = threading.Lock()

    def agent_work() -> None:
        try:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {agent_key}")
            for _ in range(8):
                action_id = client.post("/api/v1/actions", propose_body(), format="json").json()["id"]
                with lock:
                    ids.append(action_id)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=agent_work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and len(ids) == 32
    reviewer_api = token_client(reviewer)
    decided = [reviewer_api.post(f"/api/v1/actions/{i}/approve", {}, format="json").status_code for i in ids[:8]]
    assert decided == [200] * 8
    result = verify_log()
    assert result.broken is None and result.checked == AuditEvent.objects.count()
    for action_id in ids[:8]:  # each action's story in the order it happened
        verbs = list(AuditEvent.objects.filter(action_id=action_id).order_by("seq").values_list("verb", flat=True))
        assert verbs.index("action.proposed") < verbs.index("action.reviewed") < verbs.index("action.approved")
