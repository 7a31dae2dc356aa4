import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from approvals.models import Credential
from approvals.models.credential import RESULT_PARTS, RISKS
from approvals.services.credentials import create_credential
from audit.chain import Actor


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
        parser.add_argument(
            "--show",
            default="status,body",
            help="what results may show the agent and reviewers: a comma-separated subset of "
            f"{','.join(RESULT_PARTS)} (default status,body; the request headers Countersign sent never show)",
        )
        parser.add_argument(
            "--allow-preview-reads",
            action="store_true",
            help="let Countersign read the live target with this credential to show reviewers a diff (default off)",
        )
        parser.add_argument(
            "--access-control",
            action="store_true",
            help="using this credential changes who has access: every action using it gets the access floor",
        )
        parser.add_argument("--min-risk", choices=RISKS, default="", help="every action using it is at least this risk")

    def handle(self, name, kind, base_url, method, header, **options):
        if Credential.objects.filter(name=name).exists():
            raise CommandError(f"a credential named {name!r} already exists")
        scope = {}
        if kind.startswith("http_") or kind == Credential.Kind.SCIM_BEARER:
            # SCIM too: the executor may only reach the identity provider's SCIM base.
            if not base_url or not base_url.lower().startswith(("http://", "https://")):
                raise CommandError(f"--base-url http(s)://... is required for {kind} credentials")
            scope["base_url"] = base_url.rstrip("/")
        elif base_url or method or header:
            raise CommandError(f"--base-url, --method and --header are for HTTP and SCIM credentials, not {kind}")
        if kind.startswith("http_"):
            if method:
                scope["methods"] = sorted({m.upper() for m in method})
            if header:
                scope["header"] = header
        elif method or header:
            raise CommandError(f"--method and --header are for HTTP credentials, not {kind}")
        secret = sys.stdin.readline().rstrip("\r\n") if kind != "none" else ""
        if kind != "none" and not secret:
            raise CommandError("no secret on stdin (pipe it in: echo -n $TOKEN | manage.py create_credential ...)")
        show = [part.strip() for part in options["show"].split(",") if part.strip()]
        unknown = sorted(set(show) - set(RESULT_PARTS))
        if unknown:
            raise CommandError(f"--show takes {','.join(RESULT_PARTS)}, not {','.join(unknown)}")
        if kind == Credential.Kind.HTTP_BASIC and ":" not in secret:
            raise CommandError("an http_basic secret is user:password")
        try:
            self._create(name, kind, secret, scope, show, options)
        except ValidationError as exc:
            problems = exc.message_dict if hasattr(exc, "error_dict") else {"credential": exc.messages}
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in problems.items())) from None
        self.stdout.write(
            f"stored credential {name} ({kind}) for {scope.get('base_url', '-')}; "
            f"results show {','.join(show) or '-'}; preview reads {'on' if options['allow_preview_reads'] else 'off'}"
            + ("; access control" if options["access_control"] else "")
            + (f"; at least {options['min_risk']} risk" if options["min_risk"] else "")
        )

    @staticmethod
    def _create(name, kind, secret, scope, show, options) -> None:
        create_credential(
            name=name,
            kind=kind,
            secret=secret,
            scope=scope,
            actor=Actor("user", "cli", "cli"),
            access_control=options["access_control"],
            min_risk=options["min_risk"] or "",
            allow_preview_reads=options["allow_preview_reads"],
            result_visibility=list(dict.fromkeys(show)),
        )
