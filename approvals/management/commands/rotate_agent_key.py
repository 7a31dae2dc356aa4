from django.core.management.base import BaseCommand, CommandError

from agents.models import Agent
from approvals.services.containment import rotate_key
from audit.chain import Actor


class Command(BaseCommand):
    help = "Issue a new key for an agent and revoke its old ones; prints the new key alone on stdout."

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, name, **options):
        agent = Agent.objects.filter(name=name).first()
        if agent is None:
            raise CommandError(f"no agent named {name!r}")
        _, raw = rotate_key(agent=agent, actor=Actor("user", "cli", "cli"))
        self.stdout.write(raw)
