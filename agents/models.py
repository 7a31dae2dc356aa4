from __future__ import annotations

import re
import secrets
import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from catalog import registry


def _webhook_secret() -> str:
    return secrets.token_hex(32)


new_webhook_secret = _webhook_secret  # the name migration 0001 refers to stays


# A capability's constraints (agents.capabilities says what they mean): at most this many patterns each.
MAX_PATTERNS = 100
# A capability for the gateway's MCP tools: mcp.<server pattern>.<tool pattern> (no space, no dot in the server).
MCP_CAPABILITY_RE = re.compile(r"mcp\.[a-z0-9_*?\[\]!-]+\.[A-Za-z0-9_.*?\[\]!-]+")


def validate_constraints(constraints: Any) -> dict[str, list[str]]:
    """A capability's constraints, checked for shape; raises ValidationError naming what is wrong."""
    if constraints in (None, ""):
        return {}
    if not isinstance(constraints, dict):
        raise ValidationError("Constraints are an object mapping a parameter name to a list of patterns.")
    for name, patterns in constraints.items():
        if not isinstance(name, str) or not name:
            raise ValidationError("Constraint names are parameter names.")
        if (
            not isinstance(patterns, list)
            or not patterns
            or len(patterns) > MAX_PATTERNS
            or not all(isinstance(p, str) and p for p in patterns)
        ):
            raise ValidationError(f"Constraint {name!r} needs a list of 1 to {MAX_PATTERNS} non-empty patterns.")
    return constraints


class Agent(models.Model):
    """A service identity. It may only propose; its owner answers for it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.SlugField(max_length=64, unique=True)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_agents")
    is_active = models.BooleanField(default=True)
    # Frozen by staff (the kill switch): keys suspended, pending actions cancelled, executions stopped.
    frozen_at = models.DateTimeField(null=True, blank=True)
    frozen_reason = models.CharField(max_length=500, blank=True)
    # Shared with the agent to sign its webhooks; shown once (create_agent, rotate_webhook_secret, the admin).
    webhook_secret = models.CharField(max_length=64, default=_webhook_secret, editable=False)
    # After a rotation, webhooks are signed with the old secret too until this time, so that the agent can
    # switch over without rejecting a delivery (the header then carries two v1 signatures).
    previous_webhook_secret = models.CharField(max_length=64, blank=True, editable=False)
    previous_webhook_secret_until = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    # An authenticated agent is DRF's request.user on agent endpoints.
    is_authenticated = True
    is_anonymous = False
    is_staff = False

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AgentKeyQuerySet(models.QuerySet):
    def usable(self) -> AgentKeyQuerySet:
        now = timezone.now()
        # A frozen agent's keys are suspended, not revoked: unfreezing gives them back.
        return self.filter(revoked_at__isnull=True, agent__is_active=True, agent__frozen_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class AgentKey(models.Model):
    """One credential of an agent. The secret itself is never stored."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="keys")
    public_id = models.CharField(max_length=32, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = AgentKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"cs_{self.public_id}_…"

    @property
    def prefix(self) -> str:
        return f"cs_{self.public_id}_"

    def is_usable(self, at=None) -> bool:
        return self.refusal(at) is None

    def refusal(self, at=None) -> str | None:
        """Why this key does not authenticate now, or None when it does."""
        at = at or timezone.now()
        if self.revoked_at is not None:
            return "key revoked"
        if not self.agent.is_active:
            return "agent disabled"
        if self.agent.frozen_at is not None:
            return "agent frozen"
        if self.expires_at is not None and self.expires_at <= at:
            return "key expired"
        return None


class Capability(models.Model):
    """An action type an agent may propose, with optional parameter constraints."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="capabilities")
    action_type = models.CharField(max_length=100)
    constraints = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "action_type"], name="capability_unique_per_agent")]
        ordering = ["action_type"]

    def __str__(self) -> str:
        return f"{self.agent.name}: {self.action_type}"

    def clean(self) -> None:
        if self.action_type.startswith("mcp."):
            # Tools of the gateway's MCP upstreams: mcp.<server>.<tool> patterns, constraints on the tool's
            # arguments (agents.capabilities). mcp.tool_call itself is never granted: "mcp.*.*" says "every tool".
            if self.action_type == "mcp.tool_call" or not MCP_CAPABILITY_RE.fullmatch(self.action_type):
                raise ValidationError(
                    {"action_type": "MCP tools are granted as mcp.<server>.<tool>, patterns allowed (mcp.git.*)."}
                )
            try:
                validate_constraints(self.constraints)
            except ValidationError as exc:
                raise ValidationError({"constraints": exc.messages}) from None
            return
        action_type = registry.get(self.action_type)
        if action_type is None:
            raise ValidationError({"action_type": f"No action type named {self.action_type!r}."})
        try:
            validate_constraints(self.constraints)
        except ValidationError as exc:
            raise ValidationError({"constraints": exc.messages}) from None
        schema = action_type.params_schema
        if schema.get("additionalProperties") is False:
            # A constrained parameter must be present: naming one the type lacks would refuse every proposal.
            known = schema.get("properties", {})
            unknown = sorted(set(self.constraints or {}) - set(known))
            if unknown:
                raise ValidationError(
                    {
                        "constraints": f"{self.action_type} has no parameter {', '.join(unknown)} "
                        f"(its parameters: {', '.join(known)})."
                    }
                )
