"""Indexes for the reviewer's desk (approvals/desk.py, approvals/dashboard.py).

Keyset pages for each sort of the queue (newest/oldest, risk, expiry) with the
primary key as the last key, per status and across statuses, for staff and per
reviewer group; the agent, action type and on-behalf-of filters; decisions over
time for the dashboard.

On PostgreSQL, also a trigram index for the free-text search over summaries
(``summary__icontains`` compiles to ``UPPER(summary::text) LIKE UPPER(%s)``,
which is what it indexes). It needs the pg_trgm extension: created here when
the role may (it is a trusted extension from PostgreSQL 13), otherwise
skipped with a notice, and the search still works, unindexed. SQLite has no
such index: the embedded default searches by scanning, which is fine at its
size. The trigram index is not part of the model state (it is
vendor-specific), so it lives in RunPython.
"""

import logging

from django.db import DatabaseError, migrations, models, transaction
from django.db.models.functions import Upper

log = logging.getLogger(__name__)

TRGM_INDEX = "action_desk_summary_trgm"


def create_trigram_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            schema_editor.execute(
                f"CREATE INDEX IF NOT EXISTS {TRGM_INDEX} ON approvals_actionrequest "
                "USING gin ((UPPER(summary::text)) gin_trgm_ops)"
            )
    except DatabaseError as exc:
        log.warning("pg_trgm unavailable (%s); the queue's search will work without an index", exc)


def drop_trigram_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {TRGM_INDEX}")


RISK_RANK = models.Case(
    models.When(risk="low", then=models.Value(0)),
    models.When(risk="medium", then=models.Value(1)),
    models.When(risk="high", then=models.Value(2)),
    models.When(risk="critical", then=models.Value(3)),
    default=models.Value(0),
    output_field=models.IntegerField(),
)


class Migration(migrations.Migration):
    dependencies = [("approvals", "0006_slack")]

    operations = [
        migrations.AddIndex(
            model_name="actionrequest",
            index=models.Index(fields=["status", "created_at", "id"], name="action_desk_created"),
        ),
        migrations.AddIndex(
            model_name="actionrequest",
            index=models.Index(
                fields=["reviewer_group", "status", "created_at", "id"], name="action_desk_group_created"
            ),
        ),
        migrations.AddIndex(
            model_name="actionrequest",
            index=models.Index(fields=["created_at", "id"], name="action_desk_all_created"),
        ),
        migrations.AddIndex(
            model_name="actionrequest",
            index=models.Index(fields=["reviewer_group", "created_at", "id"], name="action_desk_group_all_created"),
        ),
        migrations.AddIndex(
            model_name="actionrequest",
            index=models.Index(fields=["status", "expires_at", "id"], name="action_desk_expires"),
        ),
        migrations.AddIndex(
            model_name="actionrequest",
            index=models.Index(
                models.F("status"),
                models.OrderBy(RISK_RANK, descending=True),
                models.F("created_at"),
                models.F("id"),
                name="action_desk_risk",
            ),
        ),
        migrations.AddIndex(
            model_name="actionrequest",
            index=models.Index(
                models.OrderBy(RISK_RANK, descending=True),
                models.F("created_at"),
                models.F("id"),
                name="action_desk_all_risk",
            ),
        ),
        migrations.AddIndex(
            model_name="actionrequest",
            index=models.Index(
                fields=["action_type", "status", "reviewer_group", "created_at", "id"], name="action_desk_type"
            ),
        ),
        migrations.AddIndex(
            model_name="actionrequest",
            index=models.Index(
                fields=["agent", "status", "reviewer_group", "created_at", "id"], name="action_desk_agent"
            ),
        ),
        migrations.AddIndex(
            model_name="actionrequest",
            index=models.Index(
                Upper("on_behalf_of"), models.F("created_at"), models.F("id"), name="action_desk_on_behalf_of"
            ),
        ),
        migrations.AddIndex(
            model_name="actionrequest",
            index=models.Index(
                fields=["decided_at"],
                name="action_desk_decided",
                condition=models.Q(decided_at__isnull=False),
                # The dashboard reads nothing else: its scans of the window stay in the index (PostgreSQL).
                include=[
                    "reviewer_group",
                    "status",
                    "policy_effect",
                    "created_at",
                    "finished_at",
                    "agent",
                    "action_type",
                ],
            ),
        ),
        migrations.RunPython(create_trigram_index, drop_trigram_index, elidable=False),
    ]
