"""Staff manage agents, their keys and capabilities here; every change goes through audited services.

Registered by approvals/admin/__init__.py (Django discovers only modules named ``admin``): it lives in approvals/, not
agents/, because it calls approvals' containment service, and agents/ must not depend on approvals/.

What reduces an agent's reach (disable, revoke a key, revoke or narrow a capability, freeze) goes through
approvals.services.containment, which also cancels the actions that lost their ground; the rest through
agents.services.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path

from agents.models import Agent, AgentKey, Capability, validate_constraints
from agents.services import WEBHOOK_SECRET_OVERLAP, create_agent, rotate_webhook_secret, set_key_expiry
from approvals.errors import ServiceError
from approvals.services import containment
from approvals.services.containment import (
    grant_capability,
    revoke_all_keys,
    revoke_capability,
    revoke_key,
    rotate_key,
    update_agent,
)
from audit.chain import Actor
from catalog import registry


def admin_actor(request) -> Actor:
    return Actor.user(request.user, "admin")


def key_issued_response(request, agent: Agent, raw_key: str, webhook_secret: str = "") -> TemplateResponse:
    """The only time a key is shown: rendered straight into the response, never stored in a message or session.

    A new agent's webhook secret is shown with its first key, the same way.
    """
    response = TemplateResponse(
        request,
        "admin/agents/key_issued.html",
        {
            **admin.site.each_context(request),
            "title": f"New key for {agent.name}",
            "agent": agent,
            "key": raw_key,
            "webhook_secret": webhook_secret,
        },
    )
    response["Cache-Control"] = "no-store"
    return response


def webhook_secret_issued_response(request, agent: Agent, secret: str) -> TemplateResponse:
    """The only time a rotated webhook secret is shown (as for keys: straight into a no-store response)."""
    response = TemplateResponse(
        request,
        "admin/agents/webhook_secret_issued.html",
        {
            **admin.site.each_context(request),
            "title": f"New webhook secret for {agent.name}",
            "agent": agent,
            "secret": secret,
            "overlap_hours": f"{WEBHOOK_SECRET_OVERLAP.total_seconds() / 3600:g}",
        },
    )
    response["Cache-Control"] = "no-store"
    return response


class CapabilityForm(forms.ModelForm):
    action_type = forms.ChoiceField(choices=())
    constraints = forms.JSONField(
        required=False,
        initial=dict,
        help_text='Parameter → allowed patterns, e.g. {"method": ["GET"], "path": ["/tickets/*"]}. Empty: any.',
    )

    class Meta:
        model = Capability
        fields = ("action_type", "constraints")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["action_type"].choices = [(t.name, f"{t.name} — {t.title}") for t in registry.all_types()]

    def clean_constraints(self):
        value = self.cleaned_data.get("constraints") or {}
        if isinstance(value, str):
            value = json.loads(value)
        return validate_constraints(value)


class CapabilityInline(admin.TabularInline):
    model = Capability
    form = CapabilityForm
    extra = 0


class AgentKeyInline(admin.TabularInline):
    model = AgentKey
    extra = 0
    fields = ("prefix", "created_at", "expires_at", "revoked_at", "last_used_at")
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False  # a key is issued by the "rotate key" action, which shows it once


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "is_active", "frozen", "capability_list", "last_used", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name", "description", "owner__username")
    inlines = [CapabilityInline, AgentKeyInline]
    actions = ["rotate_keys", "revoke_all_keys", "freeze_agents", "unfreeze_agents"]
    change_form_template = "admin/agents/agent/change_form.html"

    def get_readonly_fields(self, request, obj=None):
        return ("name", "frozen_at", "frozen_reason") if obj else ("frozen_at", "frozen_reason")

    @admin.display(description="frozen", boolean=True)
    def frozen(self, obj):
        return obj.frozen_at is not None

    def get_urls(self):
        freeze = path(
            "<path:object_id>/freeze/", self.admin_site.admin_view(self.freeze_view), name="agents_agent_freeze"
        )
        rotate_secret = path(
            "<path:object_id>/rotate-webhook-secret/",
            self.admin_site.admin_view(self.rotate_webhook_secret_view),
            name="agents_agent_rotate_webhook_secret",
        )
        return [freeze, rotate_secret, *super().get_urls()]

    def rotate_webhook_secret_view(self, request, object_id):
        """The change page's "Rotate webhook secret" button (a POST): the new secret is shown once."""
        agent = get_object_or_404(Agent, pk=object_id)
        if not self.has_change_permission(request, agent):
            raise PermissionDenied
        if request.method != "POST":
            return redirect("admin:agents_agent_change", agent.pk)
        secret = rotate_webhook_secret(agent=agent, actor=admin_actor(request))
        return webhook_secret_issued_response(request, agent, secret)

    def freeze_view(self, request, object_id):
        """The change page's Freeze / Unfreeze button: one agent, a reason, one step."""
        agent = get_object_or_404(Agent, pk=object_id)
        if not self.has_change_permission(request, agent):
            raise PermissionDenied
        if request.method == "POST":
            if request.POST.get("unfreeze") and agent.frozen_at is not None:
                containment.unfreeze_agent(agent, admin_actor(request))
                self.message_user(request, f"{agent.name} is unfrozen: its keys work again.", messages.SUCCESS)
                return redirect("admin:agents_agent_change", agent.pk)
            done = self._freeze(request, [agent], request.POST.get("reason", ""))
            if done:
                return redirect("admin:agents_agent_change", agent.pk)
        return self._freeze_page(request, [agent])

    def _freeze(self, request, agents, reason: str) -> bool:
        try:
            for agent in agents:
                done = containment.freeze_agent(agent, reason, admin_actor(request))
                self.message_user(
                    request,
                    f"{agent.name} is frozen: keys suspended, {done['cancelled']} pending action(s) cancelled, "
                    f"{done['stopped']} execution(s) stopped.",
                    messages.SUCCESS,
                )
        except ServiceError as exc:
            self.message_user(request, exc.detail, messages.ERROR)
            return False
        return True

    def _freeze_page(self, request, agents) -> TemplateResponse:
        return TemplateResponse(
            request,
            "admin/agents/freeze.html",
            {
                **self.admin_site.each_context(request),
                "title": "Freeze " + ", ".join(a.name for a in agents),
                "agents": agents,
                "opts": self.model._meta,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            },
        )

    @admin.display(description="capabilities")
    def capability_list(self, obj):
        return ", ".join(c.action_type for c in obj.capabilities.all()) or "—"

    @admin.display(description="key last used")
    def last_used(self, obj):
        times = [k.last_used_at for k in obj.keys.all() if k.last_used_at]
        return max(times) if times else "never"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("owner").prefetch_related("capabilities", "keys")

    def has_delete_permission(self, request, obj=None):
        return False  # the audit trail names agents; deactivate instead

    def save_model(self, request, obj, form, change):
        actor = admin_actor(request)
        if change:
            fields = {f: form.cleaned_data[f] for f in ("owner", "description", "is_active") if f in form.changed_data}
            update_agent(agent=obj, actor=actor, **fields)
            obj.refresh_from_db()
            return
        agent, _, raw = create_agent(name=obj.name, owner=obj.owner, description=obj.description, actor=actor, allow=())
        if not obj.is_active:
            update_agent(agent=agent, actor=actor, is_active=False)
        obj.pk = agent.pk
        obj._state.adding = False
        request._countersign_new_key = raw
        request._countersign_webhook_secret = agent.webhook_secret

    def save_formset(self, request, form, formset, change):
        if formset.model is not Capability:
            return super().save_formset(request, form, formset, change)
        actor = admin_actor(request)
        agent = form.instance
        # Read by the admin's change message.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for inline_form in formset.forms:
            if not inline_form.has_changed() and not formset._should_delete_form(inline_form):
                continue
            old_type = inline_form.initial.get("action_type") if inline_form.instance.pk else None
            if formset._should_delete_form(inline_form):
                if old_type:
                    revoke_capability(agent=agent, action_type=old_type, actor=actor)
                    formset.deleted_objects.append(inline_form.instance)
                continue
            data = inline_form.cleaned_data
            if old_type and old_type != data["action_type"]:
                revoke_capability(agent=agent, action_type=old_type, actor=actor)
            capability = grant_capability(
                agent=agent, action_type=data["action_type"], constraints=data.get("constraints") or {}, actor=actor
            )
            if old_type:
                formset.changed_objects.append((capability, inline_form.changed_data))
            else:
                formset.new_objects.append(capability)

    def response_add(self, request, obj, post_url_continue=None):
        raw = getattr(request, "_countersign_new_key", None)
        if raw:
            return key_issued_response(request, obj, raw, getattr(request, "_countersign_webhook_secret", ""))
        return super().response_add(request, obj, post_url_continue)

    @admin.action(description="Rotate key (issue a new one, shown once; revoke the old)")
    def rotate_keys(self, request, queryset):
        agents = list(queryset)
        if len(agents) != 1:
            self.message_user(request, "Rotate one agent at a time: its new key is shown once.", messages.ERROR)
            return None
        agent = agents[0]
        _, raw = rotate_key(agent=agent, actor=admin_actor(request))
        return key_issued_response(request, agent, raw)

    @admin.action(description="Revoke all keys (pending actions are cancelled)")
    def revoke_all_keys(self, request, queryset):
        count = sum(revoke_all_keys(agent=agent, actor=admin_actor(request)) for agent in queryset)
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)

    @admin.action(description="Freeze (suspend keys, cancel pending actions, stop executions)")
    def freeze_agents(self, request, queryset):
        agents = list(queryset)
        if request.POST.get("apply") and self._freeze(request, agents, request.POST.get("reason", "")):
            return None
        return self._freeze_page(request, agents)

    @admin.action(description="Unfreeze")
    def unfreeze_agents(self, request, queryset):
        count = sum(containment.unfreeze_agent(agent, admin_actor(request)) for agent in queryset)
        self.message_user(request, f"Unfroze {count} agent(s).", messages.SUCCESS)


class AgentKeyForm(forms.ModelForm):
    class Meta:
        model = AgentKey
        fields = ("expires_at",)


@admin.register(AgentKey)
class AgentKeyAdmin(admin.ModelAdmin):
    form = AgentKeyForm
    list_display = ("__str__", "agent", "created_at", "expires_at", "revoked_at", "last_used_at")
    list_filter = ("revoked_at",)
    search_fields = ("public_id", "agent__name")
    readonly_fields = ("prefix", "agent", "created_at", "revoked_at", "last_used_at")
    fields = ("prefix", "agent", "created_at", "expires_at", "revoked_at", "last_used_at")
    actions = ["revoke_selected"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if "expires_at" in form.changed_data:
            set_key_expiry(key=obj, expires_at=form.cleaned_data["expires_at"], actor=admin_actor(request))

    @admin.action(description="Revoke selected keys")
    def revoke_selected(self, request, queryset):
        for key in queryset.filter(revoked_at__isnull=True):
            revoke_key(key=key, actor=admin_actor(request))
        self.message_user(request, "Revoked.", messages.SUCCESS)
