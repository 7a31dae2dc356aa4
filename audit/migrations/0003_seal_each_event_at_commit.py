"""The commit links each event into the chain by itself, without a set-returning call per event (PostgreSQL).

Migration 0002's trigger sealed each event at the commit by calling ``countersign_audit_seal(ARRAY[id])``: a
set-returning function whose rows were gathered and thrown away, and whose ``DELETE ... WHERE id = ANY(ids)`` PostgreSQL
planned anew on every call (a plan for an array of unknown length costs more than one made for a one-element array, so
the plan cache never settled on one). That made 40% of the database's time for an approval (docs/BENCHMARKS.md, section
9). Now one function links one event, ``countersign_audit_link(event)``: the lock, the head, the event's seq, time, body
and hash (the same formula, so chains and signed checkpoints still verify), and its row in the chain. The trigger
deletes its own row by its key and links it; ``countersign_audit_seal(ids)``, which a block nested in a longer
transaction calls to see its events' seqs at once, links each of its rows the same way.
"""

import importlib

from django.db import migrations

LOCK_ID = 74145990603877  # audit.chain._CHAIN_LOCK_ID, as in migration 0002

# VOLATILE: each statement takes a new snapshot, so the head read after the lock is granted sees what the previous
# holder committed, and what this transaction linked a moment ago (migration 0002). Taking the lock again in the same
# transaction only counts it once more.
INSTALL = f"""
CREATE OR REPLACE FUNCTION countersign_audit_link(
    p audit_unsealedevent,
    OUT sealed_id bigint, OUT sealed_seq bigint, OUT sealed_at timestamptz, OUT sealed_prev_hash varchar,
    OUT sealed_hash varchar, OUT sealed_body text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    head_seq bigint;
    head_hash varchar;
    head_at timestamptz;
    utc timestamp;
BEGIN
    PERFORM pg_advisory_xact_lock({LOCK_ID});
    SELECT e.seq, e.hash, e.at INTO head_seq, head_hash, head_at FROM approvals_auditevent e ORDER BY e.seq DESC LIMIT 1;
    sealed_id := p.id;
    sealed_seq := coalesce(head_seq, 0) + 1;
    sealed_at := greatest(p.at, head_at);  -- time never runs backwards along the chain
    utc := sealed_at AT TIME ZONE 'UTC';
    sealed_body := replace(replace(p.body,
        chr(1), '"' || to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS')
                || CASE WHEN to_char(utc, 'US') = '000000' THEN '' ELSE '.' || to_char(utc, 'US') END
                || '+00:00"'),
        chr(2), sealed_seq::text);
    sealed_prev_hash := coalesce(head_hash, repeat('0', 64));
    sealed_hash := encode(sha256(convert_to(sealed_prev_hash || sealed_body, 'UTF8')), 'hex');
    INSERT INTO approvals_auditevent (seq, at, actor_type, actor, via, verb, object_type, object_id, action_id,
                                      agent_name, data, request_id, body, prev_hash, hash)
    VALUES (sealed_seq, sealed_at, p.actor_type, p.actor, p.via, p.verb, p.object_type, p.object_id,
            p.action_id, p.agent_name, p.data, p.request_id, sealed_body, sealed_prev_hash, sealed_hash);
END;
$$;

CREATE OR REPLACE FUNCTION countersign_audit_seal(ids bigint[])
RETURNS TABLE (sealed_id bigint, sealed_seq bigint, sealed_at timestamptz, sealed_prev_hash varchar,
               sealed_hash varchar, sealed_body text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    p audit_unsealedevent%ROWTYPE;
BEGIN
    FOR p IN WITH taken AS (DELETE FROM audit_unsealedevent u WHERE u.id = ANY(ids) RETURNING u.*)
             SELECT * FROM taken ORDER BY taken.id
    LOOP
        SELECT * INTO sealed_id, sealed_seq, sealed_at, sealed_prev_hash, sealed_hash, sealed_body
          FROM countersign_audit_link(p);
        RETURN NEXT;
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION countersign_audit_seal_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM audit_unsealedevent WHERE id = NEW.id;
    IF FOUND THEN  -- else sealed already, by a block that sealed its events at once
        PERFORM countersign_audit_link(NEW);
    END IF;
    RETURN NULL;
END;
$$;
"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(INSTALL, params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        previous = importlib.import_module("audit.migrations.0002_seal_at_commit")
        schema_editor.execute(previous.UNINSTALL, params=None)
        schema_editor.execute(previous.INSTALL, params=None)
        schema_editor.execute("DROP FUNCTION IF EXISTS countersign_audit_link(audit_unsealedevent)", params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_seal_at_commit")]

    operations = [migrations.RunPython(install, uninstall, elidable=False)]
