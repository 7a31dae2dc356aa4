from django.core.management.base import BaseCommand, CommandError

from audit.checkpoints import CheckpointError, make_checkpoint


class Command(BaseCommand):
    help = (
        "Print a signed checkpoint of the audit chain's head as one line of JSON; keep it outside the database "
        "and check it later with `verify_audit --from-checkpoint FILE`."
    )

    def handle(self, **options):
        try:
            checkpoint = make_checkpoint()
        except CheckpointError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(checkpoint.to_json())
