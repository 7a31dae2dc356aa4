from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from agents.models import Agent
from approvals.services.containment import grant_capability, revoke_capability  # cancels what lost its ground
from audit.chain import Actor


class Command(BaseCommand):
    help = (
        "Let an agent propose an action type, optionally only with some parameter values "
        "(--only path=/tickets/* --only method=GET); --revoke takes the capability away."
    )

    def add_arguments(self, parser):
        parser.add_argument("agent")
        parser.add_argument("action_type")
        parser.add_argument(
            "--only",
            action="append",
            default=[],
            metavar="PARAM=PATTERN",
            help="allow only values of PARAM matching PATTERN (shell-style; repeatable)",
        )
        parser.add_argument("--revoke", action="store_true")

    def handle(self, agent, action_type, only, revoke, **options):
        found = Agent.objects.filter(name=agent).first()
        if found is None:
            raise CommandError(f"no agent named {agent!r}")
        actor = Actor("user", "cli", "cli")
        if revoke:
            if not revoke_capability(agent=found, action_type=action_type, actor=actor):
                raise CommandError(f"agent {agent} has no capability {action_type}")
            self.stdout.write(f"revoked {action_type} from {agent}")
            return
        constraints: dict[str, list[str]] = {}
        for item in only:
            param, sep, pattern = item.partition("=")
            if not sep or not param or not pattern:
                raise CommandError(f"--only takes PARAM=PATTERN, not {item!r}")
            constraints.setdefault(param, []).append(pattern)
        try:
            capability = grant_capability(agent=found, action_type=action_type, actor=actor, constraints=constraints)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(f"granted {action_type} to {agent} {capability.constraints or '(no constraints)'}")
