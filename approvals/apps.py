from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from approvals.action_types import BUILTIN_TYPES
        from approvals.web import auth_audit  # noqa: F401  (log-ins and log-outs into the audit log)
        from catalog import registry

        registry.load_configured_types(BUILTIN_TYPES)
