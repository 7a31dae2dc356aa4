"""Input validation for the API, and the shapes the OpenAPI schema documents."""

from __future__ import annotations

import copy

from django.conf import settings
from rest_framework import serializers

from approvals.models import ActionStatus
from approvals.notify.callbacks import callback_refusal
from audit.canonical import canonical_json

MAX_CONTEXT_BYTES = 64 * 1024


class InputSerializer(serializers.Serializer):
    """A request body's validation, with each instance's fields copied shallowly.

    DRF deep-copies every declared field for each instance (each field made anew, validators and children with it),
    so that an instance may change its own fields: more than half of validating a proposal, on every one
    (docs/BENCHMARKS.md, section 9). These serializers never change a field, so an instance needs only its own
    binding (name, parent); the declaration's validators, messages and children are shared, read-only. Flat
    serializers only: a nested serializer keeps validation state, so it may not be shared between threads.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        nested = [name for name, field in cls._declared_fields.items() if isinstance(field, serializers.BaseSerializer)]
        if nested:
            raise TypeError(f"{cls.__name__}: nested serializers ({', '.join(nested)}) need DRF's deep copy")

    def get_fields(self):
        return {name: copy.copy(field) for name, field in self._declared_fields.items()}


class ProposalInput(InputSerializer):
    action_type = serializers.CharField(max_length=100)
    params = serializers.DictField(child=serializers.JSONField(allow_null=True), allow_empty=True)
    summary = serializers.CharField(max_length=280, trim_whitespace=True)
    context = serializers.DictField(child=serializers.JSONField(allow_null=True), required=False, default=dict)
    on_behalf_of = serializers.CharField(max_length=254, required=False, allow_blank=True, default="")
    idempotency_key = serializers.CharField(max_length=255, required=False, allow_blank=False)
    callback_url = serializers.URLField(max_length=2048, required=False, allow_blank=True, default="")
    expires_in = serializers.IntegerField(required=False, min_value=60)
    # Checked by the service (approvals.services.proposals.trace_field_errors): http(s) only, lengths, 0..1.
    trace_url = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)
    run_id = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)
    confidence = serializers.JSONField(required=False, allow_null=True, default=None)

    def validate_context(self, value):
        if len(canonical_json(value).encode()) > MAX_CONTEXT_BYTES:
            raise serializers.ValidationError("The context is larger than 64 KiB.")
        return value

    def validate_callback_url(self, value):
        refusal = callback_refusal(value) if value else None
        if refusal:
            raise serializers.ValidationError(f"Refused: {refusal}.")
        return value

    def validate_expires_in(self, value):
        if value > settings.COUNTERSIGN_MAX_TTL_SECONDS:
            raise serializers.ValidationError(f"At most {settings.COUNTERSIGN_MAX_TTL_SECONDS} seconds.")
        return value

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class ApproveInput(InputSerializer):
    comment = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    params = serializers.DictField(child=serializers.JSONField(allow_null=True), required=False)
    preview_fingerprint = serializers.CharField(
        max_length=64,
        required=False,
        help_text="The `fingerprint` of the preview you reviewed; if the target changed since, the approval "
        "is refused (409) with the fresh preview.",
    )
    override_reason = serializers.CharField(
        max_length=2000,
        required=False,
        allow_blank=True,
        default="",
        help_text="Required when the preview says execution will fail (`will_fail`): why you approve anyway. "
        "Stored with your review and in the audit log; without it such an approval is refused (400).",
    )


class PreviewOutput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["text", "json", "message", "none", "unavailable"])
    title = serializers.CharField()
    before = serializers.JSONField(allow_null=True)
    after = serializers.JSONField(allow_null=True)
    notes = serializers.ListField(child=serializers.CharField())
    error = serializers.CharField()
    reads_off = serializers.BooleanField(help_text="No diff: the credential does not allow preview reads.")
    will_fail = serializers.BooleanField(
        help_text="Countersign knows from what it read that executing would fail; approving needs `override_reason`."
    )
    failure = serializers.CharField(help_text="Why execution will fail, when `will_fail`; else empty.")
    fingerprint = serializers.CharField()


class RejectInput(InputSerializer):
    reason = serializers.CharField(max_length=2000)


class ResolveInput(serializers.Serializer):
    outcome = serializers.ChoiceField(
        choices=["succeeded", "failed"], help_text="`succeeded`: it took effect; `failed`: it did not happen."
    )
    note = serializers.CharField(max_length=2000, help_text="What you checked on the target, and what you found.")


class ReviewOutput(serializers.Serializer):
    reviewer = serializers.CharField()
    verdict = serializers.ChoiceField(choices=["approve", "reject"])
    via = serializers.ChoiceField(choices=["web", "slack", "api", "policy"])
    comment = serializers.CharField()
    at = serializers.DateTimeField()
    withdrawn_at = serializers.DateTimeField(
        required=False,
        help_text="Only on an approval the reviewer undid within the undo window: it counts for nothing.",
    )


class DecisionOutput(serializers.Serializer):
    outcome = serializers.ChoiceField(choices=["approved", "rejected"])
    reviews = ReviewOutput(many=True)
    edited_params = serializers.DictField(allow_null=True)
    reason = serializers.CharField()


class PolicyOutput(serializers.Serializer):
    rule = serializers.CharField()
    effect = serializers.ChoiceField(choices=["auto_approve", "deny", "require"])
    explanation = serializers.CharField()


class LinksOutput(serializers.Serializer):
    self = serializers.CharField()
    wait = serializers.CharField()
    review = serializers.CharField()


class UncountedApprovalOutput(serializers.Serializer):
    reviewer = serializers.CharField()
    reason = serializers.CharField()


class ActionOutput(serializers.Serializer):
    """Documentation of approvals.selectors.presenters.present_action, which produces it."""

    id = serializers.UUIDField()
    status = serializers.ChoiceField(
        choices=list(ActionStatus.values),
        help_text="`failed`: known not to have taken effect (safe to retry with a new proposal). `unknown`: the "
        "execution was interrupted after it may have reached the target; check the target before retrying "
        "(a reviewer can resolve it to `succeeded` or `failed`, recorded in `result.resolution`).",
    )
    action_type = serializers.CharField()
    params = serializers.DictField()
    summary = serializers.CharField()
    agent = serializers.CharField()
    on_behalf_of = serializers.CharField()
    on_behalf_of_user = serializers.CharField(
        allow_null=True, help_text="The username on_behalf_of was resolved to when proposed; null: nobody known."
    )
    risk = serializers.ChoiceField(
        choices=["low", "medium", "high", "critical"], help_text="The type's risk, raised by its credential's."
    )
    modifies_access = serializers.BooleanField(
        help_text="At the access floor (the type or its credential changes access): two different people, "
        "never the agent's owner or the person it acts for."
    )
    required_approvals = serializers.IntegerField()
    approvals = serializers.IntegerField(help_text="Approvals that count under the rule now in force.")
    approved_by = serializers.ListField(child=serializers.CharField(), help_text="Who approved so far.")
    uncounted_approvals = UncountedApprovalOutput(
        many=True, help_text="Approvals given that do not count under the rule now in force, and why."
    )
    policy = PolicyOutput()
    decision = DecisionOutput(allow_null=True)
    result = serializers.JSONField(allow_null=True)
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    access_expires_at = serializers.DateTimeField(
        allow_null=True,
        required=False,
        help_text="Time-boxed access: when Countersign takes the change back (moved by an extension or an early "
        "end); null when not time-boxed.",
    )
    reverted_at = serializers.DateTimeField(
        allow_null=True, required=False, help_text="When this action's change was taken back (a revert or an undo)."
    )
    reverts = serializers.UUIDField(
        allow_null=True, required=False, help_text="On a revert or an undo: the id of the action it reverses."
    )
    extends = serializers.UUIDField(
        allow_null=True, required=False, help_text="On an extension: the id of the time-boxed grant it extends."
    )
    links = LinksOutput()
    trace_url = serializers.CharField(help_text="Where the agent's run can be inspected (http/https); '' if none.")
    run_id = serializers.CharField(help_text="The agent's run identifier; '' if none.")
    confidence = serializers.FloatField(allow_null=True, help_text="The agent's confidence, 0 to 1; null if none.")


class ActionPageOutput(serializers.Serializer):
    """One page of ``GET /api/v1/actions``, newest first; follow ``next`` (a URL with the cursor) for more."""

    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = ActionOutput(many=True)


class ActionTypeOutput(serializers.Serializer):
    name = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    risk = serializers.ChoiceField(choices=["low", "medium", "high", "critical"])
    modifies_access = serializers.BooleanField()
    params_schema = serializers.DictField()


class ProblemOutput(serializers.Serializer):
    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False)


class SimulateInput(serializers.Serializer):
    agent = serializers.CharField(max_length=64)
    action_type = serializers.CharField(max_length=100)
    params = serializers.DictField(child=serializers.JSONField(allow_null=True), required=False, default=dict)
    on_behalf_of = serializers.CharField(max_length=254, required=False, allow_blank=True, default="")


class SimulationOutput(serializers.Serializer):
    policy_version = serializers.IntegerField()
    rule = serializers.CharField()
    effect = serializers.ChoiceField(choices=["auto_approve", "deny", "require"])
    required_approvals = serializers.IntegerField()
    reviewer_group = serializers.CharField()
    ttl_seconds = serializers.IntegerField()
    notify = serializers.ListField(child=serializers.CharField())
    reminder_after_seconds = serializers.IntegerField(allow_null=True)
    escalate_to = serializers.ListField(child=serializers.CharField())
    floors = serializers.ListField(child=serializers.CharField())
    floor_reasons = serializers.ListField(child=serializers.CharField(), help_text="Why each floor applied.")
    risk = serializers.ChoiceField(choices=["low", "medium", "high", "critical"], help_text="Credential included.")
    modifies_access = serializers.BooleanField()
    on_behalf_of_user = serializers.CharField(allow_null=True, help_text="Whom on_behalf_of names; null: nobody.")
    requester_refusal = serializers.CharField(help_text="Non-empty: the proposal would be refused with 400 for this.")
    web_decision_only = serializers.BooleanField()
    explanation = serializers.CharField()
    reason = serializers.CharField()
    agent_may_propose = serializers.BooleanField()
    capability_refusal = serializers.CharField()
    params_errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))
