import argparse
import sys

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from approvals.services import accounts
from audit.chain import Actor


class Command(BaseCommand):
    help = (
        "Create a person or update them (audited): email, reviewer groups, staff. The password is read from "
        "stdin with --password-stdin; otherwise a new person gets a one-time set-password link."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--email", help="their address (required for a new person; one person per address)")
        parser.add_argument(
            "--group",
            action="append",
            default=[],
            metavar="GROUP",
            help="a reviewer group to join, made if missing (repeatable; default "
            f"{settings.COUNTERSIGN_DEFAULT_REVIEWER_GROUP!r} unless --no-group or --remove-group is given)",
        )
        parser.add_argument("--remove-group", action="append", default=[], metavar="GROUP", help="leave a group")
        parser.add_argument(
            "--no-group", action="store_true", help="join no group (e.g. a person who only owns agents)"
        )
        parser.add_argument(
            "--staff",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="staff open the admin for agents, keys, credentials, policies, Slack identities and the execution "
            "switch (the countersign-staff group); --no-staff takes that away",
        )
        parser.add_argument(
            "--password-stdin", action="store_true", help="read the password from the first line of stdin"
        )
        parser.add_argument(
            "--password-link",
            action="store_true",
            help="print a one-time set-password link (the default for a new person without --password-stdin)",
        )
        parser.add_argument("--base-url", default="", help=f"for the link (default {settings.COUNTERSIGN_BASE_URL})")

    def handle(self, username, email, group, remove_group, no_group, staff, password_stdin, password_link, **options):
        if no_group and group:
            raise CommandError("--no-group and --group contradict each other")
        if password_stdin and password_link:
            raise CommandError("--password-stdin and --password-link contradict each other")
        base_url = options["base_url"].strip()
        if base_url and not base_url.lower().startswith(("http://", "https://")):
            raise CommandError(f"--base-url takes http(s)://host, not {base_url!r}")
        password = None
        if password_stdin:
            if sys.stdin is None or sys.stdin.isatty():
                raise CommandError('--password-stdin reads a piped password (printf %s "$PW" | manage.py ...)')
            password = sys.stdin.readline().rstrip("\r\n")
            if not password:
                raise CommandError("no password on stdin")
        if not group and not no_group and not remove_group:
            group = [settings.COUNTERSIGN_DEFAULT_REVIEWER_GROUP]  # create_reviewer makes a reviewer
        actor = Actor("user", "cli", "cli")
        try:
            done = accounts.save_person(
                username=username,
                email=email,
                groups=group,
                remove_groups=remove_group,
                staff=staff,
                password=password,
                actor=actor,
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        user = done.user
        groups = sorted(user.groups.values_list("name", flat=True))
        self.stdout.write(
            f"{'created' if done.created else 'updated'} {user.get_username()} <{user.email}>; "
            f"groups: {', '.join(groups) or '-'}; staff: {'yes' if user.is_staff else 'no'}"
            + ("" if done.changes or done.created else " (no change)")
        )
        if password_link or (password is None and not user.has_usable_password()):
            link = accounts.password_link(user, actor=actor, base_url=base_url or None)
            self.stdout.write(f"set-password link (works once): {link}")
