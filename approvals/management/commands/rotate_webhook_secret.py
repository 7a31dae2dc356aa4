from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from agents.models import Agent
from agents.services import WEBHOOK_SECRET_OVERLAP, rotate_webhook_secret
from audit.chain import Actor

DEFAULT_OVERLAP_HOURS = WEBHOOK_SECRET_OVERLAP.total_seconds() / 3600


class Command(BaseCommand):
    help = (
        "Give an agent a new webhook secret; prints it (shown once) alone on stdout. Webhooks are signed with the "
        f"old secret too for --overlap-hours (default {DEFAULT_OVERLAP_HOURS:g}; 0: the old secret stops at once)."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--overlap-hours", type=float, default=DEFAULT_OVERLAP_HOURS, metavar="HOURS")

    def handle(self, name, overlap_hours, **options):
        agent = Agent.objects.filter(name=name).first()
        if agent is None:
            raise CommandError(f"no agent named {name!r}")
        if not 0 <= overlap_hours <= 24 * 30:
            raise CommandError("--overlap-hours must be between 0 and 720")
        secret = rotate_webhook_secret(
            agent=agent, actor=Actor("user", "cli", "cli"), overlap=timedelta(hours=overlap_hours)
        )
        self.stdout.write(secret)
