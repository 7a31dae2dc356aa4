from django.contrib import admin

from approvals.models import ActionRequest, AuditEvent, Credential, OutboxMessage, Review


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


@admin.register(Credential)
class CredentialAdmin(ReadOnlyAdmin):
    list_display = ("name", "kind", "scope", "updated_at")
    exclude = ("secret_encrypted",)
