from __future__ import annotations

from django.db import models
from django.utils import timezone


class PolicyRule(models.Model):
    """One stored rule; approvals.policies.store turns the enabled ones, in order, into policies.Rule."""

    class Effect(models.TextChoices):
        AUTO_APPROVE = "auto_approve", "auto-approve"
        DENY = "deny", "deny"
        REQUIRE = "require", "require approvals"

    name = models.SlugField(max_length=100, unique=True)
    position = models.PositiveIntegerField(default=100, help_text="Rules are tried in ascending position.")
    enabled = models.BooleanField(default=True)
    description = models.CharField(
        max_length=200, blank=True, help_text="What the rule is about, for explanations; generated when empty."
    )
    agent = models.CharField(max_length=100, default="*", help_text="Agent name or shell-style pattern.")
    action_type = models.CharField(max_length=100, default="*", help_text="Action type or pattern (slack.*).")
    risks = models.JSONField(default=list, blank=True, help_text='Empty for any, else e.g. ["high", "critical"].')
    conditions = models.JSONField(
        default=list,
        blank=True,
        help_text='All must hold, e.g. [{"path": "params.channel", "op": "matches", "value": "#prod-*"}].',
    )
    effect = models.CharField(max_length=20, choices=Effect.choices, default=Effect.REQUIRE)
    required_approvals = models.PositiveSmallIntegerField(default=1)
    reviewer_group = models.CharField(max_length=150, blank=True, help_text="Empty: the default reviewers.")
    ttl_seconds = models.PositiveIntegerField(null=True, blank=True)
    notify = models.JSONField(default=list, blank=True, help_text='e.g. ["slack:#sre", "email:sre@example.com"]')
    reminder_after_seconds = models.PositiveIntegerField(null=True, blank=True)
    escalate_to = models.JSONField(default=list, blank=True)
    reason = models.CharField(max_length=500, blank=True, help_text="For deny: returned to the agent.")
    web_decision_only = models.BooleanField(
        default=False, help_text="High and critical actions are decided on the web page only; Slack links to it."
    )
    require_known_requester = models.BooleanField(
        default=False, help_text="Refuse proposals whose on_behalf_of names nobody known (always so at the floor)."
    )
    # Step-up (approvals.policies.rules.Rule.fresh_auth_minutes): high and critical actions need a sign-in at the
    # identity provider this recent to be approved; on the web page only.
    fresh_auth_minutes = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="High and critical: approving needs a sign-in at the identity provider within this many minutes.",
    )
    # Time-boxed access (approvals.action_types.durations): the longest duration this rule allows, and whether a
    # proposal it matches must carry one ("prod-admin membership for at most 8 hours").
    max_duration_seconds = models.PositiveIntegerField(null=True, blank=True)
    require_duration = models.BooleanField(default=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["position", "name"]

    def __str__(self) -> str:
        return self.name


class PolicyVersion(models.Model):
    """Every change to the rules makes a new version holding the whole rule set as it then stood."""

    number = models.PositiveIntegerField(primary_key=True)
    created_at = models.DateTimeField(default=timezone.now)
    author = models.CharField(max_length=150)
    comment = models.CharField(max_length=500, blank=True)
    rules = models.JSONField()
    digest = models.CharField(max_length=64)

    class Meta:
        ordering = ["-number"]

    def __str__(self) -> str:
        return f"policy v{self.number}"


class ExecutionSwitch(models.Model):
    """The one row (pk=1) holding the global "pause executions" switch.

    While paused, approvals are still recorded but no new execution starts; resuming dispatches what waited.
    """

    paused = models.BooleanField(default=False)
    reason = models.CharField(max_length=500, blank=True)
    changed_by = models.CharField(max_length=150, blank=True)
    changed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return "executions paused" if self.paused else "executions running"
