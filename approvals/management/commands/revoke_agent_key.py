from django.core.management.base import BaseCommand, CommandError

from agents.models import AgentKey
from approvals.services.containment import revoke_key  # cancels pending actions when it was the last key
from audit.chain import Actor


class Command(BaseCommand):
    help = "Revoke an agent key by its public id (the part after cs_), or its full key."

    def add_arguments(self, parser):
        parser.add_argument("key_id")

    def handle(self, key_id, **options):
        public_id = key_id.split("_")[1] if key_id.startswith("cs_") and key_id.count("_") >= 1 else key_id
        key = AgentKey.objects.filter(public_id=public_id).select_related("agent").first()
        if key is None:
            raise CommandError(f"no agent key with id {public_id!r}")
        revoke_key(key=key, actor=Actor("user", "cli", "cli"))
        self.stdout.write(f"revoked {key.prefix}… of agent {key.agent.name}")
