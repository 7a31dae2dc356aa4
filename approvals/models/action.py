from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models.functions import Upper
from django.utils import timezone

from catalog.risk import RISK_ORDER, Risk


class ActionStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    EXECUTING = "executing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Interrupted after it may have reached the target: nobody knows whether it took effect. Terminal for the
    # agent (check the target before retrying); a reviewer who checked resolves it to succeeded or failed.
    UNKNOWN = "unknown"


# The state machine. Only approvals.services moves an action along it, and
# ActionRequest.move_to refuses any edge not listed here.
TRANSITIONS: dict[str, frozenset[str]] = {
    ActionStatus.PENDING: frozenset(
        {ActionStatus.APPROVED, ActionStatus.REJECTED, ActionStatus.EXPIRED, ActionStatus.CANCELLED}
    ),
    # approved -> pending: only the undo of an approval, within its window and before execution was dispatched
    # (approvals.services.undo.withdraw_approval).
    ActionStatus.APPROVED: frozenset({ActionStatus.EXECUTING, ActionStatus.FAILED, ActionStatus.PENDING}),
    # executing -> approved: only the stuck sweep, re-queueing an idempotent action after a crash.
    ActionStatus.EXECUTING: frozenset(
        {ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.UNKNOWN, ActionStatus.APPROVED}
    ),
    # unknown -> succeeded / failed: only a reviewer or staff who checked the target (resolve_unknown_outcome).
    ActionStatus.UNKNOWN: frozenset({ActionStatus.SUCCEEDED, ActionStatus.FAILED}),
}
DECIDED = frozenset(
    {
        ActionStatus.APPROVED,
        ActionStatus.REJECTED,
        ActionStatus.EXECUTING,
        ActionStatus.SUCCEEDED,
        ActionStatus.FAILED,
        ActionStatus.UNKNOWN,
    }
)
TERMINAL = frozenset(
    {
        ActionStatus.REJECTED,
        ActionStatus.EXPIRED,
        ActionStatus.CANCELLED,
        ActionStatus.SUCCEEDED,
        ActionStatus.FAILED,
        ActionStatus.UNKNOWN,
    }
)


class InvalidTransition(Exception):
    pass


# The risk's rank as SQL, for sorting the queue by risk (approvals.selectors.desk). The same expression is
# indexed below ("action_desk_risk"): a query uses that index only if it sorts by exactly this.
RISK_RANK = models.Case(
    *(models.When(risk=risk.value, then=models.Value(rank)) for risk, rank in RISK_ORDER.items()),
    default=models.Value(0),
    output_field=models.IntegerField(),
)


class ActionRequest(models.Model):
    """A proposal by an agent, and everything that happened to it since."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey("agents.Agent", on_delete=models.PROTECT, related_name="actions")
    action_type = models.CharField(max_length=100)
    params = models.JSONField()
    edited_params = models.JSONField(null=True, blank=True)
    summary = models.CharField(max_length=280)
    context = models.JSONField(default=dict, blank=True)
    on_behalf_of = models.CharField(max_length=254, blank=True)
    # The person on_behalf_of names, resolved when proposed (approvals.policies.people); None when it named nobody
    # known.
    on_behalf_of_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Where the agent's run can be looked at, and how sure it says it is (docs/API.md: optional, shown first).
    trace_url = models.URLField(max_length=2000, blank=True)
    run_id = models.CharField(max_length=200, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    # A soft lock: the reviewer working on it, for others to see (never a refusal).
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    # NULL, not "", so the unique constraint ignores proposals without a key.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    request_digest = models.CharField(max_length=64)
    callback_url = models.URLField(max_length=2048, blank=True)

    status = models.CharField(max_length=16, choices=ActionStatus.choices, default=ActionStatus.PENDING)
    risk = models.CharField(max_length=16, choices=Risk.choices)
    # At the access floor: the type changes access or its credential does (two humans, separation of duties).
    modifies_access = models.BooleanField(default=False)
    # The policy requires the web page (diff, log-in) to decide: Slack shows a link instead of buttons.
    web_decision_only = models.BooleanField(default=False)
    required_approvals = models.PositiveSmallIntegerField(default=1)
    reviewer_group = models.ForeignKey(Group, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    policy_rule = models.CharField(max_length=100)
    policy_effect = models.CharField(max_length=20)
    policy_explanation = models.CharField(max_length=500)
    policy_version = models.PositiveIntegerField(null=True, blank=True)
    # Where the policy said to notify, and when to remind (and whom to escalate to) while pending.
    notify_channels = models.JSONField(default=list, blank=True)
    escalate_channels = models.JSONField(default=list, blank=True)
    remind_at = models.DateTimeField(null=True, blank=True)
    reminded_at = models.DateTimeField(null=True, blank=True)

    decision_reason = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True)

    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    execution_started_at = models.DateTimeField(null=True, blank=True)
    execution_attempts = models.PositiveSmallIntegerField(default=0)
    # Renewed by the worker while the executor runs (approvals.services.execution): a stale beat, not a fixed
    # window, tells the sweep that the execution was interrupted.
    execution_heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Time-boxed access (approvals.services.access): when the access this action granted ends (moved by an
    # extension or an early end; null: not time-boxed), and when the change was taken back.
    access_expires_at = models.DateTimeField(null=True, blank=True)
    reverted_at = models.DateTimeField(null=True, blank=True)
    # On a revert or an undo: the action it reverses, and why ("expired", "ended_early", "undo").
    reverts = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="reversals")
    revert_reason = models.CharField(max_length=20, blank=True)
    # On an extension: the time-boxed grant it extends.
    extends = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="extensions")
    # What the target looked like before execution, as the type recorded it (file.write: the previous content),
    # for its reverse. Never shown to the agent.
    state_before = models.JSONField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)
    # The sequence number of the newest webhook event of this action (approvals.services.transitions.publish):
    # the agent orders events by it, and a redelivery carries the same number.
    webhook_sequence = models.PositiveIntegerField(default=0, editable=False)
    # Whether a review of it was ever written: set by the database itself as the first one is (a trigger, migration
    # 0021), whoever writes it, and never unset (a save() of an instance read before that review writes it back false).
    # A decision reads it with the action's row lock, which gives the row as the last writer committed it, so a
    # decision that finds it false skips reading the reviews, and so do the API's reads.
    has_reviews = models.BooleanField(default=False, db_default=False, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="action_idempotency_per_agent",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=[s.value for s in ActionStatus]), name="action_status_valid"
            ),
        ]
        indexes = [
            # An agent's newest first, in the API's order to the last key: its first page reads that page's rows
            # only, however long its history (with created_at alone, PostgreSQL read and sorted all of it).
            models.Index(fields=["agent", "-created_at", "-id"], name="action_agent_newest"),
            models.Index(fields=["status", "-created_at"], name="action_status_created"),
            models.Index(fields=["status", "expires_at"], name="action_status_expires"),
            # The reviewer's desk (approvals.selectors.desk, approvals.selectors.dashboard; migration 0007_desk):
            # keyset pages
            # per sort, with the primary key as the last key; filters; decisions over time.
            models.Index(fields=["status", "created_at", "id"], name="action_desk_created"),
            models.Index(fields=["reviewer_group", "status", "created_at", "id"], name="action_desk_group_created"),
            models.Index(fields=["created_at", "id"], name="action_desk_all_created"),
            models.Index(fields=["reviewer_group", "created_at", "id"], name="action_desk_group_all_created"),
            models.Index(fields=["status", "expires_at", "id"], name="action_desk_expires"),
            # The queue's default sort (expiring soonest) across every status, a group's and staff's: without them
            # PostgreSQL read and sorted the whole history for a page (migration 0023_desk_expiry_all_statuses).
            models.Index(fields=["reviewer_group", "expires_at", "id"], name="action_desk_group_all_expires"),
            models.Index(fields=["expires_at", "id"], name="action_desk_all_expires"),
            models.Index(
                models.F("status"),
                models.OrderBy(RISK_RANK, descending=True),
                models.F("created_at"),
                models.F("id"),
                name="action_desk_risk",
            ),
            models.Index(
                models.OrderBy(RISK_RANK, descending=True),
                models.F("created_at"),
                models.F("id"),
                name="action_desk_all_risk",
            ),
            models.Index(
                fields=["action_type", "status", "reviewer_group", "created_at", "id"], name="action_desk_type"
            ),
            models.Index(fields=["agent", "status", "reviewer_group", "created_at", "id"], name="action_desk_agent"),
            models.Index(
                Upper("on_behalf_of"), models.F("created_at"), models.F("id"), name="action_desk_on_behalf_of"
            ),
            models.Index(
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
            # The queue's risk facet across statuses counts "risk = X" (per group): without it a rare risk is
            # counted by reading the whole table (migration 0009_bench_indexes, docs/BENCHMARKS.md).
            models.Index(fields=["risk", "reviewer_group"], name="action_risk_group"),
            # Actions in flight (pending, approved and not yet run, executing) and their oldest, for /metrics
            # (approvals.ops.metrics): finished actions, including approved decision.only ones, are not in it.
            models.Index(
                fields=["status"],
                name="action_in_flight",
                condition=models.Q(finished_at__isnull=True),
                include=["created_at", "decided_at", "execution_started_at"],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action_type} {self.id} ({self.status})"

    @property
    def effective_params(self) -> dict:
        """The parameters that will run: the reviewer's edits if any."""
        return self.edited_params if self.edited_params is not None else self.params

    @property
    def is_pending(self) -> bool:
        return self.status == ActionStatus.PENDING

    # The action's whole set of reviews when this process wrote them all (a proposal just created: none, or the
    # policy's approval), so that presenting it needs no read-back (approvals.selectors.presenters); None: read them.
    held_reviews: list[Review] | None = None

    def hold_reviews(self, reviews: list[Review]) -> None:
        """Hold ``reviews`` as this action's whole set: for an action created in this process, whose only reviews
        are the ones its creation wrote."""
        self.held_reviews = list(reviews)

    def move_to(self, status: str, *, at=None) -> str:
        """Change status in memory after checking the edge; returns the old status."""
        allowed = TRANSITIONS.get(self.status, frozenset())
        if status not in allowed:
            raise InvalidTransition(f"{self.status} -> {status} is not a valid transition")
        at = at or timezone.now()
        before = self.status
        self.status = status
        self.updated_at = at
        if before == ActionStatus.PENDING:
            self.decided_at = at
        if status == ActionStatus.EXECUTING:
            self.execution_started_at = at
            self.execution_attempts += 1
        if status in TERMINAL:
            self.finished_at = at
        return before


class Review(models.Model):
    """One verdict on an action, by a human or by a policy."""

    class Verdict(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"

    class Via(models.TextChoices):
        WEB = "web"
        SLACK = "slack"
        API = "api"
        POLICY = "policy"

    action = models.ForeignKey(ActionRequest, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True)
    verdict = models.CharField(max_length=10, choices=Verdict.choices)
    via = models.CharField(max_length=10, choices=Via.choices)
    comment = models.TextField(blank=True)
    edited_params = models.JSONField(null=True, blank=True)
    # What the reviewer was shown when deciding (the preview, its diff, its fingerprint): the evidence history shows.
    evidence = models.JSONField(default=dict, blank=True)
    # Why the reviewer approved although the preview said execution would fail (typed, required then).
    override_reason = models.TextField(blank=True)
    # An approval taken back within the undo window, before execution was dispatched.
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # The same human never counts twice toward one action.
            # A withdrawn approval (undo) does not stop its reviewer deciding again.
            models.UniqueConstraint(
                fields=["action", "reviewer"],
                condition=models.Q(reviewer__isnull=False, withdrawn_at__isnull=True),
                name="review_once_per_reviewer",
            )
        ]

    def __str__(self) -> str:
        return f"{self.verdict} by {self.reviewer or 'policy'}"
