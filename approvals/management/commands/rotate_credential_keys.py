from django.core.management.base import BaseCommand

from approvals.services.credentials import rotate_all_keys
from approvals.services.mcp_upstreams import rotate_upstream_keys
from audit.chain import Actor


class Command(BaseCommand):
    help = "Re-encrypt every credential and MCP upstream secret with the first key in COUNTERSIGN_CREDENTIAL_KEYS."

    def handle(self, **options):
        actor = Actor("user", "cli", "cli")
        count = rotate_all_keys(actor=actor)
        upstreams = rotate_upstream_keys(actor=actor)
        self.stdout.write(f"re-encrypted {count} credential(s) and {upstreams} MCP upstream(s)")
