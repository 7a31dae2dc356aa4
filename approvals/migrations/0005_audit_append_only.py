"""The audit table becomes append-only on PostgreSQL.

A statement-level trigger refuses UPDATE, DELETE and TRUNCATE on
``approvals_auditevent``. The one exception is a maintenance switch: a session
that sets ``countersign.audit_maintenance = 'on'`` *and* whose role owns the
table (or is a superuser) may change rows. Such a role could run
``ALTER TABLE ... DISABLE TRIGGER`` anyway, so the switch grants nothing new;
it exists so the test suite can reset tables (pytest-django flushes with
TRUNCATE) without DDL. Production connections never set it. Anyone who can
bypass the trigger is still caught by the hash chain and the signed
checkpoints (``verify_audit --from-checkpoint``).

SQLite (the embedded default) has no such trigger: the chain is its guard.

Also: ``request_id`` on each event (hashed when set) and an index for the
audit page's agent filter (keyset on seq).
"""

from django.db import migrations, models

FUNCTION = "countersign_audit_append_only"
TRIGGER = "approvals_auditevent_append_only"

INSTALL = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('countersign.audit_maintenance', true), '') = 'on'
       AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER') THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit events are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'The audit log is hash-chained and only ever appended to (docs/ARCHITECTURE.md, Audit).';
END;
$$;
DROP TRIGGER IF EXISTS {TRIGGER} ON approvals_auditevent;
CREATE TRIGGER {TRIGGER}
    BEFORE UPDATE OR DELETE OR TRUNCATE ON approvals_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}();
"""

UNINSTALL = f"""
DROP TRIGGER IF EXISTS {TRIGGER} ON approvals_auditevent;
DROP FUNCTION IF EXISTS {FUNCTION}();
"""


def install_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(INSTALL, params=None)


def remove_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UNINSTALL, params=None)


class Migration(migrations.Migration):
    dependencies = [("approvals", "0004_notifications")]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="request_id",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["agent_name", "seq"], name="audit_agent_seq"),
        ),
        migrations.RunPython(install_trigger, remove_trigger, elidable=False),
    ]
