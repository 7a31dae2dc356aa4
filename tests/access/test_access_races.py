"""Sweeps that run together (two beats after a restart, a late one and a prompt one) start one revert."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from approvals import services
from approvals.models import AccessLease, ActionRequest, ActionStatus, Review
from approvals.services import access
from audit.models import AuditEvent
from tests import factories
from tests.conftest import CLI

pytestmark = pytest.mark.django_db(transaction=True)


def test_concurrent_sweeps_and_an_early_end_start_one_revert(scim_agent, reviewer, second_reviewer, clock):
    agent = scim_agent
    original = factories.propose(
        agent,
        "scim.group_membership",
        {"credential": "idp", "group": "prod-admin", "add": ["alice"], "duration": "PT2M"},
        summary="alice needs prod-admin",
        on_behalf_of="olivia",
    )
    for person in (reviewer, second_reviewer):
        services.approve_action(action_id=original.id, reviewer=person, via=Review.Via.API)
    assert factories.executed(original.id).status == ActionStatus.SUCCEEDED
    clock.advance(minutes=3)

    start = threading.Barrier(4)
    started: list[int] = []

    def sweep():
        try:
            start.wait()
            started.append(access.revert_due())
        finally:
            connection.close()

    def end_early():
        try:
            start.wait()
            try:
                access.end_access(original.id, actor=CLI)
                started.append(1)
            except Exception:
                started.append(0)
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(3)] + [threading.Thread(target=end_early)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(started) == 1
    assert ActionRequest.objects.filter(reverts=original).count() == 1
    assert AuditEvent.objects.filter(action_id=original.id, verb="access.revert_started").count() == 1
    assert AccessLease.objects.get(action=original).attempts == 1
    # The revert runs here or on the session's worker, once; settled before the test's tables are cleared.
    revert = factories.executed(ActionRequest.objects.get(reverts=original).id)
    assert revert.status == ActionStatus.SUCCEEDED, revert.status
