from django.core.management.base import BaseCommand, CommandError

from agents.models import Agent
from approvals.errors import ServiceError
from approvals.services.containment import freeze_agent, unfreeze_agent
from audit.chain import Actor


class Command(BaseCommand):
    help = (
        "Freeze an agent in one step: its keys stop working, its pending actions are cancelled and its approved "
        "executions that have not started are stopped (audited). --unfreeze gives its keys back."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--reason", default="", help="why (required to freeze; audited and shown to reviewers)")
        parser.add_argument("--unfreeze", action="store_true")

    def handle(self, name, reason, unfreeze, **options):
        agent = Agent.objects.filter(name=name).first()
        if agent is None:
            raise CommandError(f"no agent named {name!r}")
        actor = Actor("user", "cli", "cli")
        if unfreeze:
            if not unfreeze_agent(agent, actor):
                raise CommandError(f"agent {name} is not frozen")
            self.stdout.write(f"unfroze {name}: its keys work again")
            return
        try:
            done = freeze_agent(agent, reason, actor)
        except ServiceError as exc:
            raise CommandError(f"{exc.detail} (--reason)") from None
        self.stdout.write(
            f"froze {name}: keys suspended, {done['cancelled']} pending action(s) cancelled, "
            f"{done['stopped']} execution(s) stopped"
        )
