from django.core.management.base import BaseCommand

from approvals.services.credentials import rotate_all_keys
from audit.chain import Actor


class Command(BaseCommand):
    help = "Re-encrypt every credential with the first key in COUNTERSIGN_CREDENTIAL_KEYS."

    def handle(self, **options):
        count = rotate_all_keys(actor=Actor("user", "cli", "cli"))
        self.stdout.write(f"re-encrypted {count} credential(s)")
