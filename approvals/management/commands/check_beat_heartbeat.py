"""Exit 0 when Celery beat published its heartbeat recently, 1 otherwise (beat's container healthcheck)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from config.heartbeat import heartbeat_age, heartbeat_path


class Command(BaseCommand):
    help = "Fail unless Celery beat's heartbeat (a file under COUNTERSIGN_VAR_DIR) is at most --max-age seconds old."

    def add_arguments(self, parser):
        parser.add_argument("--max-age", type=float, default=120.0, help="seconds (default 120)")

    def handle(self, *args, max_age: float, **options):
        if max_age <= 0:
            raise CommandError("--max-age must be a positive number of seconds")
        age = heartbeat_age()
        if age is None:
            raise CommandError(f"no beat heartbeat at {heartbeat_path()}: beat has not run here")
        if age > max_age:
            raise CommandError(f"beat's last heartbeat is {age:.0f} s old (more than {max_age:.0f} s): beat is stuck")
        self.stdout.write(f"beat ok: last heartbeat {age:.0f} s ago")
