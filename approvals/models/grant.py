from __future__ import annotations

import uuid

from django.db import connection, models
from django.utils import timezone


class ExecutionGrant(models.Model):
    """Single-use permission to execute exactly the approved parameters once.

    Minted in the approval transaction, redeemed atomically by the worker.
    ``params_digest`` is SHA-256 of the canonical JSON of the approved
    parameters: a change to the parameters after approval fails redemption.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Normally one per action; an idempotent action retried after a crash gets a fresh one per attempt.
    action = models.ForeignKey("approvals.ActionRequest", on_delete=models.CASCADE, related_name="grants")
    credential = models.ForeignKey("approvals.Credential", on_delete=models.PROTECT, null=True, blank=True)
    params_digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    redeemed_at = models.DateTimeField(null=True, blank=True)
    # The recorded dispatch attempts of this grant's execute task: when the newest was handed to the broker and
    # how many there were. A redispatch is decided under a lock on this row (approvals.services.execution).
    dispatched_at = models.DateTimeField(null=True, blank=True)
    dispatches = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"grant {self.id} for {self.action_id}"


# Dispatches of a grant's execute task: counted by the outbox as it hands the task to the broker, read by
# approvals.services.execution.redispatch_lost_executions to ask the broker whether the task is still there.


def execute_task_id(grant_id, dispatch: int) -> str:
    """The Celery task id of a grant's n-th dispatch: known in advance, so the broker can be asked for it."""
    return f"execute-{grant_id}-{dispatch}"


_RECORD_DISPATCH_SQL = (
    "UPDATE {table} SET dispatches = dispatches + 1, dispatched_at = %s WHERE id = %s RETURNING dispatches"
)


def record_dispatch(grant_id) -> str | None:
    """Count one more dispatch of the grant's execute task, now; its task id (None for no such grant).

    Called by the outbox right before it hands the task to the broker: one statement, whatever else runs.
    """
    try:
        grant_uuid = uuid.UUID(str(grant_id))
    except ValueError:
        return None
    pk = ExecutionGrant._meta.pk.get_db_prep_value(grant_uuid, connection)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(
            _RECORD_DISPATCH_SQL.format(table=connection.ops.quote_name(ExecutionGrant._meta.db_table)), [now, pk]
        )
        row = cursor.fetchone()
    return execute_task_id(grant_uuid, row[0]) if row else None
