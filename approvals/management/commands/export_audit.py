import json

from django.core.management.base import BaseCommand

from approvals.audit import event_body, iter_events


class Command(BaseCommand):
    help = "Write the audit log as JSON lines (one event per line, with its hashes) to stdout."

    def add_arguments(self, parser):
        parser.add_argument("--since", type=int, default=0, metavar="SEQ", help="only events after this sequence")

    def handle(self, since, **options):
        for event in iter_events(after=since):
            line = {**event_body(event), "prev_hash": event.prev_hash, "hash": event.hash}
            self.stdout.write(json.dumps(line, sort_keys=True, separators=(",", ":")))
