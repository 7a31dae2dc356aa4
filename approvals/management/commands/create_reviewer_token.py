from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from approvals.models import ReviewerToken
from audit.chain import Actor, record_event


class Command(BaseCommand):
    help = "Create a personal API token for a reviewer; prints it alone on stdout (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, username, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        with transaction.atomic():
            token, raw = ReviewerToken.issue(user)
            record_event(
                actor=Actor("user", "cli", "cli"),
                verb="reviewer_token.created",
                object_type="user",
                object_id=str(user.pk),
                data={"user": username, "token": f"csr_{token.prefix}_…"},
            )
        self.stdout.write(raw)
