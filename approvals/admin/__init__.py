"""Staff's admin pages. The agents' pages (Agent, keys, capabilities) are in approvals/admin/agents.py, registered
from here: what reduces an agent's reach cancels actions (approvals.services.containment), so they belong to the
app that depends on both, and agents/ never imports approvals/ for them."""

from django import forms
from django.contrib import admin
from django.shortcuts import redirect

from approvals.admin import agents as _agents_admin  # noqa: F401 - registers the agents' admin pages
from approvals.admin import mcp as _mcp_admin  # noqa: F401 - registers the MCP upstreams' admin page
from approvals.models import (
    ActionRequest,
    Credential,
    ExecutionSwitch,
    OutboxMessage,
    PolicyRule,
    PolicyVersion,
    Review,
    SlackIdentity,
    WebhookDelivery,
)
from approvals.models.credential import RESULT_PARTS, default_result_visibility
from approvals.policies.rules import PolicyError
from approvals.policies.store import FIELDS, delete_rule, rule_from_row, save_rule
from approvals.services import containment
from approvals.services.credentials import SETTINGS as CREDENTIAL_SETTINGS
from approvals.services.credentials import create_credential, set_secret, update_scope, update_settings
from approvals.slack.users import link as link_slack_user
from approvals.slack.users import unlink as unlink_slack_user
from audit.chain import Actor
from audit.models import AuditEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReviewInline(admin.TabularInline):
    model = Review
    extra = 0
    can_delete = False
    readonly_fields = ("reviewer", "verdict", "via", "comment", "created_at")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(ActionRequest)
class ActionRequestAdmin(ReadOnlyAdmin):
    list_display = ("summary", "agent", "action_type", "status", "risk", "created_at")
    list_filter = ("status", "risk", "action_type")
    search_fields = ("summary", "on_behalf_of")
    inlines = [ReviewInline]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("seq", "at", "actor", "via", "verb", "object_type", "object_id")
    list_filter = ("verb", "actor_type", "via")


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "action_id", "created_at", "attempts", "delivered_at", "last_error")
    list_filter = ("kind",)


class CredentialForm(forms.ModelForm):
    """The secret is write-only: it is never rendered back, not even masked characters of it."""

    secret = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave empty to keep the stored secret.",
    )
    scope = forms.JSONField(help_text='For HTTP kinds: {"base_url": "https://…", "methods": ["GET"]}.')
    result_visibility = forms.MultipleChoiceField(
        choices=[(part, part) for part in RESULT_PARTS],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        initial=default_result_visibility,
        label="Results show",
        help_text="What results may show the agent and reviewers (the request headers Countersign sent never show).",
    )

    class Meta:
        model = Credential
        fields = ("name", "kind", "scope", "access_control", "min_risk", "allow_preview_reads", "result_visibility")

    def clean(self):
        data = super().clean()
        if not self.instance.pk and data.get("kind") != Credential.Kind.NONE and not data.get("secret"):
            self.add_error("secret", "A new credential needs its secret.")
        return data


@admin.register(Credential)
class CredentialAdmin(admin.ModelAdmin):
    form = CredentialForm
    list_display = (
        *("name", "kind", "scope", "stored_secret"),
        *("access_control", "min_risk", "allow_preview_reads", "result_visibility", "updated_at"),
    )
    list_filter = ("kind", "access_control", "allow_preview_reads")
    readonly_fields = ("stored_secret", "created_at", "updated_at")

    def get_readonly_fields(self, request, obj=None):
        # Renaming or re-kinding would silently retarget approved actions' grants.
        return (*self.readonly_fields, "name", "kind") if obj else self.readonly_fields

    def get_fields(self, request, obj=None):
        editable = ("scope", "secret", *CREDENTIAL_SETTINGS)
        editable = editable if obj else ("name", "kind", *editable)
        return (*editable, "stored_secret", "created_at", "updated_at") if obj else editable

    @admin.display(description="secret")
    def stored_secret(self, obj):
        return "•••••••• (stored encrypted)" if obj and obj.secret_encrypted else "—"

    def has_delete_permission(self, request, obj=None):
        return False  # grants and audit events refer to it; change its secret or scope instead

    def save_model(self, request, obj, form, change):
        actor = Actor.user(request.user, "admin")
        secret = form.cleaned_data.get("secret") or ""
        if not change:
            created = create_credential(
                name=obj.name,
                kind=obj.kind,
                secret=secret,
                scope=form.cleaned_data["scope"],
                actor=actor,
                **{field: form.cleaned_data[field] for field in CREDENTIAL_SETTINGS},
            )
            obj.pk = created.pk
            obj._state.adding = False
            return
        if "scope" in form.changed_data:
            update_scope(credential=obj, scope=form.cleaned_data["scope"], actor=actor)
        changed = {f: form.cleaned_data[f] for f in CREDENTIAL_SETTINGS if f in form.changed_data}
        if changed:
            update_settings(credential=obj, actor=actor, **changed)
        if secret:
            set_secret(credential=obj, secret=secret, actor=actor)


class PolicyRuleForm(forms.ModelForm):
    class Meta:
        model = PolicyRule
        fields = FIELDS

    def clean(self):
        data = super().clean()
        try:
            rule_from_row({f: data.get(f) for f in FIELDS})
        except (PolicyError, TypeError, KeyError) as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


@admin.register(PolicyRule)
class PolicyRuleAdmin(admin.ModelAdmin):
    """Staff edit rules here; each save is a new, audited policy version (approvals.policies.store)."""

    form = PolicyRuleForm
    list_display = ("position", "name", "enabled", "agent", "action_type", "effect", "required_approvals", "updated_at")
    list_display_links = ("name",)
    list_filter = ("enabled", "effect")
    ordering = ("position", "name")

    def get_readonly_fields(self, request, obj=None):
        return ("name",) if obj else ()

    def save_model(self, request, obj, form, change):
        data = {f: form.cleaned_data.get(f, getattr(obj, f)) for f in FIELDS}
        saved = save_rule(data, actor=Actor.user(request.user, "admin"))
        obj.pk = saved.pk
        obj._state.adding = False

    def delete_model(self, request, obj):
        delete_rule(obj.name, actor=Actor.user(request.user, "admin"))

    def delete_queryset(self, request, queryset):
        for rule in queryset:
            delete_rule(rule.name, actor=Actor.user(request.user, "admin"))


@admin.register(PolicyVersion)
class PolicyVersionAdmin(ReadOnlyAdmin):
    list_display = ("number", "created_at", "author", "comment")


@admin.register(SlackIdentity)
class SlackIdentityAdmin(admin.ModelAdmin):
    """Which Countersign reviewer a Slack user decides as (before any link by email); every change is audited."""

    list_display = ("slack_user_id", "user", "note", "created_at")
    search_fields = ("slack_user_id", "user__username", "user__email")
    fields = ("slack_user_id", "user", "note")

    def get_readonly_fields(self, request, obj=None):
        return ("slack_user_id",) if obj else ()

    def save_model(self, request, obj, form, change):
        saved = link_slack_user(
            slack_user_id=obj.slack_user_id, user=obj.user, note=obj.note, actor=Actor.user(request.user, "admin")
        )
        obj.pk = saved.pk
        obj._state.adding = False

    def delete_model(self, request, obj):
        unlink_slack_user(identity=obj, actor=Actor.user(request.user, "admin"))

    def delete_queryset(self, request, queryset):
        for identity in queryset.select_related("user"):
            unlink_slack_user(identity=identity, actor=Actor.user(request.user, "admin"))


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("at", "action", "event", "delivery", "attempt", "status_code", "error", "duration_ms")
    list_filter = ("event", "status_code")
    search_fields = ("url", "error")
    list_select_related = ("action",)


class ExecutionSwitchForm(forms.ModelForm):
    class Meta:
        model = ExecutionSwitch
        fields = ("paused", "reason")
        help_texts = {
            "paused": "While paused, approvals are still recorded but no execution starts; resuming dispatches what "
            "waited, each at most once.",
            "reason": "Required to pause: audited and shown to every reviewer.",
        }

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("paused") and not (cleaned.get("reason") or "").strip():
            self.add_error("reason", "Say why executions are paused.")
        return cleaned


@admin.register(ExecutionSwitch)
class ExecutionSwitchAdmin(admin.ModelAdmin):
    """The one switch (pk=1): pausing and resuming go through approvals.services.containment (audited)."""

    form = ExecutionSwitchForm
    list_display = ("__str__", "reason", "changed_by", "changed_at")
    readonly_fields = ("changed_by", "changed_at")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        ExecutionSwitch.objects.get_or_create(pk=1)
        return redirect("admin:approvals_executionswitch_change", 1)

    def save_model(self, request, obj, form, change):
        actor = Actor.user(request.user, "admin")
        if obj.paused:
            containment.pause_executions(obj.reason, actor)
        else:
            containment.resume_executions(actor)
        obj.refresh_from_db()
