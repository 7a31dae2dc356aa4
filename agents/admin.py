from django.contrib import admin

from agents.models import Agent, AgentKey, Capability


class CapabilityInline(admin.TabularInline):
    model = Capability
    extra = 0


class AgentKeyInline(admin.TabularInline):
    model = AgentKey
    extra = 0
    fields = ("prefix", "created_at", "expires_at", "revoked_at", "last_used_at")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False  # keys are issued by rotate_agent_key, which shows the secret once


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "is_active", "created_at")
    search_fields = ("name", "description")
    inlines = [CapabilityInline, AgentKeyInline]
