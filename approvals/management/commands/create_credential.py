import sys

from django.core.management.base import BaseCommand, CommandError

from approvals.audit import Actor
from approvals.credentials import create_credential
from approvals.models import Credential


class Command(BaseCommand):
    help = "Store a target-system secret (read from stdin, never from the command line)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--kind", required=True, choices=[k.value for k in Credential.Kind])
        parser.add_argument("--base-url", help="for HTTP kinds: the only base URL the secret may be used under")
        parser.add_argument(
            "--method", action="append", default=[], help="allowed HTTP method (repeatable; default all)"
        )
        parser.add_argument("--header", help="for http_header: the header name carrying the secret")

    def handle(self, name, kind, base_url, method, header, **options):
        if Credential.objects.filter(name=name).exists():
            raise CommandError(f"a credential named {name!r} already exists")
        scope = {}
        if kind.startswith("http_"):
            if not base_url or not base_url.lower().startswith(("http://", "https://")):
                raise CommandError("--base-url http(s)://... is required for HTTP credentials")
            scope["base_url"] = base_url.rstrip("/")
            if method:
                scope["methods"] = sorted({m.upper() for m in method})
            if header:
                scope["header"] = header
        secret = sys.stdin.readline().rstrip("\r\n") if kind != "none" else ""
        if kind != "none" and not secret:
            raise CommandError("no secret on stdin (pipe it in: echo -n $TOKEN | manage.py create_credential ...)")
        create_credential(name=name, kind=kind, secret=secret, scope=scope, actor=Actor("user", "cli", "cli"))
        self.stdout.write(f"stored credential {name} ({kind}) for {scope.get('base_url', '-')}")
