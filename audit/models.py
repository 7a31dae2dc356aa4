from __future__ import annotations

from django.db import models


class AuditEvent(models.Model):
    """One link of the append-only, hash-chained audit log.

    Written only by audit.chain.record_event; ``hash`` covers
    ``prev_hash`` and the canonical JSON of every other field (``body``, stored
    as hashed), so changing, removing, inserting or reordering a row breaks the
    chain at that row, and the verifier checks that the columns agree with it.
    """

    seq = models.BigAutoField(primary_key=True)
    at = models.DateTimeField()
    actor_type = models.CharField(max_length=16)  # user | agent | system | policy
    actor = models.CharField(max_length=150)
    via = models.CharField(max_length=16, blank=True)  # web | api | slack | policy | worker | cli | beat
    verb = models.CharField(max_length=64)
    object_type = models.CharField(max_length=32)
    object_id = models.CharField(max_length=64)
    action_id = models.UUIDField(null=True, blank=True, db_index=True)
    agent_name = models.CharField(max_length=64, blank=True)
    data = models.JSONField(default=dict)
    # The request (web) or task (worker) that wrote it; the same id is on the log lines. Hashed when set.
    request_id = models.CharField(max_length=64, blank=True, default="")
    # canonical_json(event_body(event)): the exact text hashed, ``hash = sha256(prev_hash + body)``. The columns
    # above say the same thing in queryable form; verify_audit checks both (migration 0010).
    body = models.TextField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        db_table = "approvals_auditevent"  # the table the app had before the audit log moved here (migration 0016)
        ordering = ["seq"]
        indexes = [
            models.Index(fields=["verb", "seq"], name="audit_verb_seq"),
            models.Index(fields=["actor", "seq"], name="audit_actor_seq"),
            models.Index(fields=["at"], name="audit_at"),
            models.Index(fields=["agent_name", "seq"], name="audit_agent_seq"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.verb} {self.object_type}:{self.object_id}"


class RefusalTally(models.Model):
    """Refusals of one kind by one actor in one minute (audit.chain.record_refusal).

    The first refusal of a minute is written to the audit log; later ones only raise ``count``, and the
    count is written as one ``refusals.counted`` event once the minute is over, so a flood of refused
    attempts cannot fill the log. Rows are deleted once reported.
    """

    key = models.CharField(max_length=64)  # sha256 of (verb, actor type, actor, via, kind)
    minute = models.DateTimeField()
    count = models.PositiveIntegerField(default=1)
    verb = models.CharField(max_length=64)
    actor_type = models.CharField(max_length=16)
    actor = models.CharField(max_length=150)
    via = models.CharField(max_length=16, blank=True)
    kind = models.CharField(max_length=200, blank=True)
    agent_name = models.CharField(max_length=64, blank=True)

    class Meta:
        db_table = "approvals_refusaltally"
        constraints = [models.UniqueConstraint(fields=["key", "minute"], name="refusal_tally_one_per_minute")]
        indexes = [models.Index(fields=["minute"], name="refusal_tally_minute")]

    def __str__(self) -> str:
        return f"{self.verb} by {self.actor} at {self.minute:%H:%M}: {self.count}"


class UnsealedEvent(models.Model):
    """An audit event written by a transaction that has not committed yet (PostgreSQL only).

    The transaction that records an event writes it here, without seq or hashes. Its commit moves it into the chain
    (``AuditEvent``): a trigger deferred to the commit takes the chain's lock, links the event on after the head and
    deletes this row, so the lock is held only by the commit itself, never while Python code runs (audit.chain,
    migration 0002). Nothing is ever here once its transaction has ended: the table is UNLOGGED.
    """

    at = models.DateTimeField()  # the writer's clock; the chain takes the head's time if that is later
    actor_type = models.CharField(max_length=16)
    actor = models.CharField(max_length=150)
    via = models.CharField(max_length=16, blank=True)
    verb = models.CharField(max_length=64)
    object_type = models.CharField(max_length=32)
    object_id = models.CharField(max_length=64)
    action_id = models.UUIDField(null=True, blank=True)
    agent_name = models.CharField(max_length=64, blank=True)
    data = models.JSONField(default=dict)
    request_id = models.CharField(max_length=64, blank=True, default="")
    # The event's canonical JSON with its time and seq left as the markers \x01 and \x02 (audit.chain.body_template).
    body = models.TextField()

    class Meta:
        db_table = "audit_unsealedevent"

    def __str__(self) -> str:
        return f"unsealed {self.verb} {self.object_type}:{self.object_id}"
