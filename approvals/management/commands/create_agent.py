from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from agents.models import Agent
from agents.services import create_agent
from audit.chain import Actor
from catalog import registry


class Command(BaseCommand):
    help = (
        "Create an agent with its own identity; prints its key (shown once) alone on stdout, and its webhook secret "
        "(shown once) on stderr, or as stdout's second line with --show-webhook-secret."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--owner", required=True, help="username of the accountable human")
        parser.add_argument(
            "--allow",
            action="append",
            default=[],
            metavar="ACTION_TYPE",
            help="action type it may propose (repeatable)",
        )
        parser.add_argument("--description", default="")
        parser.add_argument(
            "--show-webhook-secret",
            action="store_true",
            help="print the webhook secret on stdout, on the line after the key (default: on stderr)",
        )

    def handle(self, name, owner, allow, description, **options):
        User = get_user_model()
        try:
            owner_user = User.objects.get(username=owner)
        except User.DoesNotExist:
            raise CommandError(f"no user named {owner!r}") from None
        if Agent.objects.filter(name=name).exists():
            raise CommandError(f"an agent named {name!r} already exists")
        unknown = [t for t in allow if registry.get(t) is None]
        if unknown:
            raise CommandError(f"unknown action type(s): {', '.join(unknown)}")
        try:
            agent, _, raw = create_agent(
                name=name, owner=owner_user, actor=Actor("user", "cli", "cli"), allow=allow, description=description
            )
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from None
        self.stdout.write(raw)
        # The secret that signs this agent's webhooks (verify_webhook in the SDK); shown now and never again.
        if options.get("show_webhook_secret"):
            self.stdout.write(agent.webhook_secret)
        else:
            self.stderr.write(f"webhook secret (shown once): {agent.webhook_secret}")
