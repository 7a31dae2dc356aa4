import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from agents.models import Agent
from agents.services import create_agent, grant_capability, rotate_key
from approvals.models import Credential
from approvals.services.accounts import save_person
from approvals.services.credentials import create_credential, set_secret, update_settings
from audit.chain import Actor

REVIEWER = "reviewer"
User = get_user_model()
AGENT = "demo-agent"
CREDENTIAL = "countersign-self"


class Command(BaseCommand):
    help = "Create (or refresh) the demo reviewer, agent and credential; prints how to log in and the agent key."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")

    def handle(self, base_url, **options):
        if not base_url.lower().startswith(("http://", "https://")) or "?" in base_url or "#" in base_url:
            raise CommandError(f"--base-url takes http(s)://host[:port], not {base_url!r}")
        actor = Actor("user", "seed_demo", "cli")
        password = secrets.token_urlsafe(12)
        with transaction.atomic():
            # A reviewer who is also staff, with the admin permissions the pages link to (countersign-staff).
            try:
                user = save_person(
                    username=REVIEWER,
                    email=None if User.objects.filter(username=REVIEWER).exists() else "reviewer@example.com",
                    groups=[settings.COUNTERSIGN_DEFAULT_REVIEWER_GROUP],
                    staff=True,
                    password=password,
                    actor=actor,
                ).user
            except ValidationError as exc:
                raise CommandError(f"the demo reviewer: {'; '.join(exc.messages)}") from None
            # The demo target is Countersign's own /healthz: a real HTTP call, no outside service.
            credential = Credential.objects.filter(name=CREDENTIAL).first()
            if credential is None:
                create_credential(
                    name=CREDENTIAL,
                    kind="http_bearer",
                    secret=secrets.token_urlsafe(24),
                    scope={"base_url": base_url.rstrip("/"), "methods": ["GET"]},
                    actor=actor,
                    # The demo's target is Countersign itself: reviewers may see a diff read from it.
                    allow_preview_reads=True,
                )
            else:
                set_secret(credential=credential, secret=secrets.token_urlsafe(24), actor=actor)
                update_settings(credential=credential, actor=actor, allow_preview_reads=True)
            agent = Agent.objects.filter(name=AGENT).first()
            if agent is None:
                _, _, key = create_agent(
                    name=AGENT,
                    owner=user,
                    actor=actor,
                    allow=["decision.only", "http.request"],
                    description="The demo agent created by make demo.",
                )
            else:
                for action_type in ("decision.only", "http.request"):
                    grant_capability(agent=agent, action_type=action_type, actor=actor)
                _, key = rotate_key(agent=agent, actor=actor)
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "  Countersign demo is ready",
                    f"  open       {base_url}/",
                    f"  log in     {REVIEWER} / {password}",
                    f"  agent key  {key}",
                    "",
                    "  propose an action (from another terminal):",
                    f"    export CS_KEY={key}",
                    f'    curl -s -X POST {base_url}/api/v1/actions -H "Authorization: Bearer $CS_KEY" \\',
                    "      -H 'Content-Type: application/json' \\",
                    '      -d \'{"action_type": "http.request", "summary": "Check that Countersign is healthy",',
                    f'           "params": {{"credential": "{CREDENTIAL}", "method": "GET", "path": "/healthz"}}}}\'',
                    "",
                ]
            )
        )
