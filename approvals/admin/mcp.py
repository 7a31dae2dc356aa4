"""Staff's page for the gateway's MCP upstreams (registered from approvals/admin/__init__.py).

The environment and headers are write-only, like a credential's secret: never rendered back, only their names
shown; leaving both empty keeps what is stored. Every change goes through approvals.services.mcp_upstreams
(audited). Saving lists the upstream's tools again; so does the "List tools again" action.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html_join

from approvals.action_types.mcp_client import UpstreamError
from approvals.errors import InvalidInput
from approvals.models import McpUpstream
from approvals.models.mcp import check_secret_maps
from approvals.services.mcp_upstreams import (
    SETTINGS,
    create_upstream,
    refresh_tools,
    set_upstream_secrets,
    update_upstream,
)
from audit.chain import Actor


class WriteOnlyJson(forms.CharField):
    """A JSON object typed in and never shown again (the widget renders empty)."""

    widget = forms.Textarea(attrs={"rows": 3, "autocomplete": "off", "spellcheck": "false"})

    def prepare_value(self, value):
        return ""

    def to_python(self, value):
        value = super().to_python(value)
        if not value.strip():
            return None
        try:
            parsed = json.loads(value)
        except ValueError:
            raise forms.ValidationError('A JSON object, e.g. {"NAME": "value"}.') from None
        if not isinstance(parsed, dict):
            raise forms.ValidationError('A JSON object, e.g. {"NAME": "value"}.')
        return parsed


class McpUpstreamForm(forms.ModelForm):
    env = WriteOnlyJson(
        required=False,
        strip=False,
        help_text='stdio: environment variables for the command, {"NAME": "value"}. Write-only: leave env and '
        "headers empty to keep what is stored; filling either replaces both.",
    )
    headers = WriteOnlyJson(
        required=False,
        strip=False,
        help_text='http: headers sent to the upstream, {"Authorization": "Bearer …"}. Write-only, as env.',
    )
    args = forms.JSONField(required=False, initial=list, help_text='stdio: ["--repository", "/srv/repo"].')

    class Meta:
        model = McpUpstream
        fields = ("name", *SETTINGS)

    def clean_args(self):
        return self.cleaned_data.get("args") or []

    def clean(self):
        data = super().clean()
        env, headers = data.get("env"), data.get("headers")
        if env is not None or headers is not None:
            for field, messages_ in check_secret_maps(env or {}, headers or {}).items():
                self.add_error(field, messages_)
        return data


@admin.register(McpUpstream)
class McpUpstreamAdmin(admin.ModelAdmin):
    form = McpUpstreamForm
    list_display = ("name", "transport", "enabled", "trust_annotations", "tool_count", "tools_refreshed_at")
    list_filter = ("transport", "enabled", "trust_annotations")
    readonly_fields = ("stored_secrets", "tool_names", "tools_refreshed_at", "created_at", "updated_at")
    actions = ["list_tools_again"]

    def get_readonly_fields(self, request, obj=None):
        # Renaming would silently retarget approved calls and capabilities that name it.
        return (*self.readonly_fields, "name") if obj else self.readonly_fields

    def get_fields(self, request, obj=None):
        editable = (*SETTINGS[:5], "env", "headers", *SETTINGS[5:])
        if obj is None:
            return ("name", *editable)
        return (*editable, *self.readonly_fields)

    @admin.display(description="stored environment and headers")
    def stored_secrets(self, obj):
        names = obj.secret_names or {}
        env, headers = names.get("env") or [], names.get("headers") or []
        if not env and not headers:
            return "—"
        return f"env: {', '.join(env) or '—'}; headers: {', '.join(headers) or '—'} (values stored encrypted)"

    @admin.display(description="tools")
    def tool_count(self, obj):
        return len(obj.tools or [])

    @admin.display(description="tools as last listed")
    def tool_names(self, obj):
        tools = obj.tools or []
        if not tools:
            return "—"
        return format_html_join(
            "",
            "<div><code>{}.{}</code> {}</div>",
            ((obj.name, t["name"], (t.get("description") or "")[:200]) for t in tools),
        )

    def has_delete_permission(self, request, obj=None):
        return False  # actions and the audit log name it; disable it instead

    def save_model(self, request, obj, form, change):
        actor = Actor.user(request.user, "admin")
        data = form.cleaned_data
        try:
            if not change:
                created = create_upstream(
                    name=obj.name,
                    actor=actor,
                    env=data.get("env") or {},
                    headers=data.get("headers") or {},
                    **{field: data[field] for field in SETTINGS},
                )
                obj.pk = created.pk
                obj._state.adding = False
            else:
                changed = {field: data[field] for field in SETTINGS if field in form.changed_data}
                if changed:
                    update_upstream(upstream=obj, actor=actor, **changed)
                if data.get("env") is not None or data.get("headers") is not None:
                    set_upstream_secrets(
                        upstream=obj, actor=actor, env=data.get("env") or {}, headers=data.get("headers") or {}
                    )
        except InvalidInput as exc:
            self.message_user(request, f"Not saved: {exc}", messages.ERROR)
            return
        self._refresh(request, McpUpstream.objects.get(pk=obj.pk))

    def _refresh(self, request, upstream: McpUpstream) -> None:
        if not upstream.enabled:
            return
        try:
            refreshed = refresh_tools(upstream=upstream, actor=Actor.user(request.user, "admin"))
        except UpstreamError as exc:
            self.message_user(request, f"{upstream.name}: tools not listed: {exc}", messages.WARNING)
            return
        self.message_user(request, f"{upstream.name}: {len(refreshed.tools)} tools listed.", messages.SUCCESS)

    @admin.action(description="List tools again")
    def list_tools_again(self, request, queryset):
        for upstream in queryset:
            self._refresh(request, upstream)
