import uuid

from django.core.management.base import BaseCommand, CommandError

from approvals.errors import ServiceError
from approvals.services.access import end_access
from audit.chain import Actor


class Command(BaseCommand):
    help = (
        "End a time-boxed access grant now: Countersign starts its revert at once (audited as ended early by the "
        "operator), exactly as when its time runs out."
    )

    def add_arguments(self, parser):
        parser.add_argument("action_id", help="the id of the action that granted the access")
        parser.add_argument("--reason", default="", help="why (audited)")

    def handle(self, action_id, reason, **options):
        try:
            parsed = uuid.UUID(action_id)
        except ValueError:
            raise CommandError(f"{action_id!r} is not an action id") from None
        try:
            lease = end_access(parsed, actor=Actor("user", "cli", "cli"), reason=reason)
        except ServiceError as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(f"ended access of {parsed}: revert {lease.revert_action_id} queued")
