"""The audit log moved from the approvals app to the audit app (approvals 0016, audit 0001) without touching the
database: an installation that upgrades keeps its events, its chain and the admin permissions it granted."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from audit.chain import Actor, record_event, verify_log
from audit.models import AuditEvent

BEFORE = [("approvals", "0015_in_flight_index"), ("audit", None)]


def record(verb: str) -> None:
    with transaction.atomic():
        record_event(actor=Actor.system("cli"), verb=verb, object_type="test", object_id=verb)


def migrate_to(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


@pytest.fixture
def upgraded_install(transactional_db):
    """An installation as it stood before the move: its audit log in approvals, a group granted view_auditevent."""
    record("install.before_upgrade")
    migrate_to(BEFORE)
    old_type, _ = ContentType.objects.get_or_create(app_label="approvals", model="auditevent")
    ContentType.objects.filter(app_label="audit").delete()
    permission, _ = Permission.objects.get_or_create(
        content_type=old_type, codename="view_auditevent", defaults={"name": "Can view audit event"}
    )
    auditors = Group.objects.create(name="auditors")
    auditors.permissions.add(permission)
    yield auditors
    call_command("migrate", verbosity=0)


def test_upgrading_keeps_the_events_the_chain_and_the_permissions(upgraded_install):
    auditors = upgraded_install
    migrate_to(MigrationExecutor(connection).loader.graph.leaf_nodes())

    assert AuditEvent.objects.filter(verb="install.before_upgrade").exists()
    assert verify_log().broken is None
    record("install.after_upgrade")
    assert verify_log().broken is None
    # The permission granted before the upgrade is the audit app's now, still held by the group.
    held = list(auditors.permissions.values_list("content_type__app_label", "codename"))
    assert held == [("audit", "view_auditevent")]
    assert not ContentType.objects.filter(app_label="approvals", model="auditevent").exists()


def test_the_append_only_trigger_still_guards_the_table_after_the_move(upgraded_install):
    migrate_to(MigrationExecutor(connection).loader.graph.leaf_nodes())
    if connection.vendor != "postgresql":
        pytest.skip("the trigger is PostgreSQL's")
    event = AuditEvent.objects.first()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            # The test settings switch maintenance on for pytest-django's flushes; production never does.
            cursor.execute("SET LOCAL countersign.audit_maintenance = 'off'")
        AuditEvent.objects.filter(seq=event.seq).update(actor="mallory")
