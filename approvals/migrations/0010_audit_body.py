"""Each audit event stores the exact text it was hashed over; appending takes the lock and reads the head at once.

``body`` is ``canonical_json(event_body(event))``, the text in ``hash = sha256(prev_hash + body)``, exactly as
it was hashed. ``verify_audit`` then hashes what is stored instead of rebuilding and re-encoding every event
(docs/BENCHMARKS.md, "Audit"), and checks separately that the columns say what the body says. The formula is
unchanged, so existing chains and signed checkpoints still verify.

Existing rows are backfilled by rebuilding the body from their columns, exactly as the verifier did until now
(the function is frozen here: later changes to ``approvals.audit`` must not change what this migration wrote).
A row already tampered with gets a body that does not match its hash, so it is still reported. The table is
append-only (0005): the backfill uses the maintenance switch that migration provides for its owner, set for
this transaction only (``set_config(..., true)``); a role that does not own the table cannot run it, as
intended (run migrations as the owner).

``body`` is then NOT NULL. A missing body cannot be verified, so no writer may append one (a writer that
forgot it fails at once instead of leaving a row the verifier reports as a break); the verifier still
reports a NULL body as a break, because whoever can drop the constraint could also clear the column.

It runs in one transaction, holding the table's lock from the ADD COLUMN on: appends wait for it (about 50 s
per 300k events on the benchmark machine), so no event without a body can be written meanwhile.

On PostgreSQL, also ``countersign_audit_lock_head(lock_id)``: the chain lock and the head in one round trip
(approvals/audit.py, ``record_event``).
"""

import json

from django.db import migrations, models

BATCH = 5000

# VOLATILE (the default, said out loud): in READ COMMITTED each statement of a volatile function takes a new
# snapshot, so the SELECT, which starts after pg_advisory_xact_lock returned, sees what the previous holder
# of the lock committed (tests/audit/test_audit.py checks this against a single statement, which would not).
INSTALL_HEAD = """
CREATE OR REPLACE FUNCTION countersign_audit_lock_head(
    lock_id bigint, OUT seq bigint, OUT hash varchar, OUT at_us bigint
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_id);
    SELECT e.seq, e.hash, (extract(epoch FROM e.at) * 1000000)::bigint
      INTO seq, hash, at_us
      FROM approvals_auditevent e ORDER BY e.seq DESC LIMIT 1;
END;
$$;
"""
UNINSTALL_HEAD = "DROP FUNCTION IF EXISTS countersign_audit_lock_head(bigint);"

# approvals.canonical and approvals.audit.event_body as of this migration.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
FIELDS = (
    "seq",
    "at",
    "actor_type",
    "actor",
    "via",
    "verb",
    "object_type",
    "object_id",
    "action_id",
    "agent_name",
    "data",
    "request_id",
)


def body_of(seq, at, actor_type, actor, via, verb, object_type, object_id, action_id, agent_name, data, request_id):
    body = {
        "seq": seq,
        "at": at.isoformat(),
        "actor_type": actor_type,
        "actor": actor,
        "via": via,
        "verb": verb,
        "object_type": object_type,
        "object_id": object_id,
        "action_id": str(action_id) if action_id else None,
        "agent_name": agent_name,
        "data": data,
    }
    if request_id:
        body["request_id"] = request_id
    return _ENCODER.encode(body)


def backfill_bodies(apps, schema_editor):
    AuditEvent = apps.get_model("approvals", "AuditEvent")
    connection = schema_editor.connection
    alias = connection.alias
    postgres = connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        if postgres:
            # The append-only trigger lets the table's owner through with this switch on: for this transaction
            # only, and back to what it was once the bodies are in.
            cursor.execute("SELECT coalesce(current_setting('countersign.audit_maintenance', true), '')")
            switch = cursor.fetchone()[0]
            cursor.execute("SELECT set_config('countersign.audit_maintenance', 'on', true)")
        last = 0
        while True:
            rows = list(
                AuditEvent.objects.using(alias)
                .filter(seq__gt=last, body__isnull=True)
                .order_by("seq")
                .values_list(*FIELDS)[:BATCH]
            )
            if not rows:
                break
            seqs = [row[0] for row in rows]
            bodies = [body_of(*row) for row in rows]
            if postgres:
                cursor.execute(
                    "UPDATE approvals_auditevent AS e SET body = v.body "
                    "FROM unnest(%s::bigint[], %s::text[]) AS v(seq, body) WHERE e.seq = v.seq",
                    [seqs, bodies],
                )
            else:
                cursor.executemany(
                    "UPDATE approvals_auditevent SET body = %s WHERE seq = %s", list(zip(bodies, seqs, strict=True))
                )
            last = seqs[-1]
        if postgres:
            cursor.execute("SELECT set_config('countersign.audit_maintenance', %s, true)", [switch])


def install_head_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(INSTALL_HEAD, params=None)


def remove_head_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UNINSTALL_HEAD, params=None)


class Migration(migrations.Migration):
    dependencies = [("approvals", "0009_bench_indexes")]

    operations = [
        migrations.AddField(model_name="auditevent", name="body", field=models.TextField(null=True)),
        migrations.RunPython(backfill_bodies, migrations.RunPython.noop, elidable=False),
        migrations.AlterField(model_name="auditevent", name="body", field=models.TextField()),
        migrations.RunPython(install_head_function, remove_head_function, elidable=False),
    ]
