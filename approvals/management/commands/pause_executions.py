from django.core.management.base import BaseCommand, CommandError

from approvals.errors import ServiceError
from approvals.services.containment import pause_executions, resume_executions
from audit.chain import Actor


class Command(BaseCommand):
    help = (
        "Hold every new execution (approvals are still recorded; approved actions wait) until --resume, which "
        "dispatches what waited. Audited and shown to every reviewer."
    )

    def add_arguments(self, parser):
        parser.add_argument("--reason", default="", help="why (required to pause)")
        parser.add_argument("--resume", action="store_true")

    def handle(self, reason, resume, **options):
        actor = Actor("user", "cli", "cli")
        if resume:
            dispatched = resume_executions(actor)
            self.stdout.write(f"executions resumed; {dispatched} held execution(s) dispatched")
            return
        try:
            pause_executions(reason, actor)
        except ServiceError as exc:
            raise CommandError(f"{exc.detail} (--reason)") from None
        self.stdout.write("executions paused")
