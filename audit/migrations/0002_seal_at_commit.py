"""Events are linked into the chain by their transaction's commit (PostgreSQL).

Until now a writer took the chain's lock, read the head, hashed its events in Python and inserted them, and held
the lock until its commit: every statement and every wait for the GIL between the lock and the commit was a wait for
every other writer of the log (docs/BENCHMARKS.md, sections 9 and 10). Now a writer inserts its events into
``audit_unsealedevent``, with no seq and no hash; a constraint trigger deferred to the commit
(``countersign_audit_seal``) takes the lock, reads the head, links each event on after it (seq, time, body, hash: the
same formula as before, ``hash = sha256(prev_hash || body)``, so existing chains and signed checkpoints still verify)
and deletes the unsealed row. The lock is held from that trigger to the end of the commit, and no Python code runs
in between.

What an event's body says is Python's ``canonical_json(event_body(event))``, as before: Python writes it with its
time and seq left as markers (\\x01, \\x02: canonical JSON escapes every control character, so neither can occur
in it otherwise), and the trigger fills them in, the time written as Python's ``datetime.isoformat()`` writes a
UTC time (microseconds only when there are any). tests/audit/test_seal_at_commit.py checks the two agree.

A transaction that must see its own events' seqs (a block nested in a longer transaction, the test suite's) seals
them at once by calling the same function, and keeps the lock to its end, as before.

The table is UNLOGGED: a row lives only inside the transaction that wrote it (it is sealed and deleted by that
transaction's commit, or rolled back with it), so nothing in it needs to survive a crash.
"""

from django.db import migrations, models

LOCK_ID = 74145990603877  # audit.chain._CHAIN_LOCK_ID (0x436F756E7465), the lock every writer of the chain takes

# VOLATILE: each statement takes a new snapshot (READ COMMITTED), so the head read after the lock is granted sees
# what the previous holder committed (migration approvals 0010, tests/audit/test_audit.py).
INSTALL = f"""
ALTER TABLE audit_unsealedevent SET UNLOGGED;

CREATE OR REPLACE FUNCTION countersign_audit_seal(ids bigint[])
RETURNS TABLE (sealed_id bigint, sealed_seq bigint, sealed_at timestamptz, sealed_prev_hash varchar,
               sealed_hash varchar, sealed_body text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    p audit_unsealedevent%ROWTYPE;
    locked boolean := false;
    head_seq bigint;
    head_hash varchar;
    head_at timestamptz;
    utc timestamp;
BEGIN
    FOR p IN WITH taken AS (DELETE FROM audit_unsealedevent u WHERE u.id = ANY(ids) RETURNING u.*)
             SELECT * FROM taken ORDER BY taken.id
    LOOP
        IF NOT locked THEN
            PERFORM pg_advisory_xact_lock({LOCK_ID});
            SELECT e.seq, e.hash, e.at INTO head_seq, head_hash, head_at
              FROM approvals_auditevent e ORDER BY e.seq DESC LIMIT 1;
            head_seq := coalesce(head_seq, 0);
            head_hash := coalesce(head_hash, repeat('0', 64));
            locked := true;
        END IF;
        sealed_id := p.id;
        sealed_seq := head_seq + 1;
        sealed_at := greatest(p.at, head_at);  -- time never runs backwards along the chain
        utc := sealed_at AT TIME ZONE 'UTC';
        sealed_body := replace(replace(p.body,
            chr(1), '"' || to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS')
                    || CASE WHEN to_char(utc, 'US') = '000000' THEN '' ELSE '.' || to_char(utc, 'US') END
                    || '+00:00"'),
            chr(2), sealed_seq::text);
        sealed_prev_hash := head_hash;
        sealed_hash := encode(sha256(convert_to(head_hash || sealed_body, 'UTF8')), 'hex');
        INSERT INTO approvals_auditevent (seq, at, actor_type, actor, via, verb, object_type, object_id, action_id,
                                          agent_name, data, request_id, body, prev_hash, hash)
        VALUES (sealed_seq, sealed_at, p.actor_type, p.actor, p.via, p.verb, p.object_type, p.object_id,
                p.action_id, p.agent_name, p.data, p.request_id, sealed_body, sealed_prev_hash, sealed_hash);
        head_seq := sealed_seq;
        head_hash := sealed_hash;
        head_at := sealed_at;
        RETURN NEXT;
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION countersign_audit_seal_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM * FROM countersign_audit_seal(ARRAY[NEW.id]);  -- nothing to do if it was sealed already
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER audit_unsealedevent_seal_at_commit
    AFTER INSERT ON audit_unsealedevent DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION countersign_audit_seal_at_commit();
"""

UNINSTALL = """
DROP TRIGGER IF EXISTS audit_unsealedevent_seal_at_commit ON audit_unsealedevent;
DROP FUNCTION IF EXISTS countersign_audit_seal_at_commit();
DROP FUNCTION IF EXISTS countersign_audit_seal(bigint[]);
"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(INSTALL, params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UNINSTALL, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="UnsealedEvent",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("at", models.DateTimeField()),
                ("actor_type", models.CharField(max_length=16)),
                ("actor", models.CharField(max_length=150)),
                ("via", models.CharField(blank=True, max_length=16)),
                ("verb", models.CharField(max_length=64)),
                ("object_type", models.CharField(max_length=32)),
                ("object_id", models.CharField(max_length=64)),
                ("action_id", models.UUIDField(blank=True, null=True)),
                ("agent_name", models.CharField(blank=True, max_length=64)),
                ("data", models.JSONField(default=dict)),
                ("request_id", models.CharField(blank=True, default="", max_length=64)),
                ("body", models.TextField()),
            ],
            options={"db_table": "audit_unsealedevent"},
        ),
        migrations.RunPython(install, uninstall, elidable=False),
    ]
