from django.core.management.base import BaseCommand

from approvals.policies.store import current_version, to_yaml


class Command(BaseCommand):
    help = "Print the policy rules as YAML (the file import_policies reads), for review in git."

    def handle(self, **options):
        self.stdout.write(f"# Countersign policy, version {current_version()}\n" + to_yaml(), ending="")
