from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from approvals.policies.rules import PolicyError
from approvals.policies.store import from_yaml, plan_replace, replace_rules
from audit.chain import Actor


class Command(BaseCommand):
    help = "Make the stored policy rules exactly those in a YAML file (see export_policies)."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--dry-run", action="store_true", help="show what would change; change nothing")
        parser.add_argument("--comment", default="", help="why, recorded with the new version")

    def handle(self, file, dry_run, comment, **options):
        try:
            rules = from_yaml(Path(file).read_text(encoding="utf-8"))
            if dry_run:
                _, plan = plan_replace(rules)
            else:
                plan = replace_rules(rules, actor=Actor("user", "cli", "cli"), comment=comment or f"imported {file}")
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise CommandError(f"cannot read {file}: not UTF-8 text") from None
        except PolicyError as exc:
            raise CommandError(f"{file}: {exc}") from None
        if plan.empty:
            self.stdout.write("no changes")
            return
        self.stdout.write("\n".join(["would change:" if dry_run else "changed:", *plan.lines()]))
