"""Every management command answers bad input with one line ("CommandError: …", exit 1), never a traceback.

The table has a row per command (a new command without one fails test_every_command_has_a_row); each row is
bad input an operator could type: unknown names, bad flag values, invalid YAML, values the models refuse.
Nothing is written by a refused command.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from approvals.models import Credential, PolicyRule
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def _files(tmp: Path) -> dict[str, str]:
    files = {
        "broken.yaml": "rules: [\n",
        "list.yaml": "- a\n",
        "text-where-a-name-goes.yaml": "rules:\n- {name: x, reviewer_group: {a: 1}}\n",
        "bad-effect.yaml": "rules:\n- {name: x, effect: zap}\n",
        "not-utf8.yaml": "",
        "checkpoint.json": '{"seq": "abc"}\n',
    }
    for name, text in files.items():
        (tmp / name).write_text(text, encoding="utf-8")
    (tmp / "not-utf8.yaml").write_bytes(b"\xff\xfe rules")
    return {name: str(tmp / name) for name in files}


# (command, args, stdin, what the message must say). ``{f:NAME}`` is a file from _files; ``helper-bot`` is the
# agent and ``rita`` a reviewer (tests/conftest.py).
CASES: list[tuple[str, list[str], str, str]] = [
    ("create_agent", ["x", "--owner", "nobody"], "", "no user named 'nobody'"),
    ("create_agent", ["bad name!", "--owner", "rita"], "", "slug"),
    ("create_agent", ["x", "--owner", "rita", "--allow", "no.such"], "", "unknown action type"),
    ("create_agent", ["helper-bot", "--owner", "rita"], "", "already exists"),
    ("grant_capability", ["nobody", "decision.only"], "", "no agent named"),
    ("grant_capability", ["helper-bot", "no.such"], "", "No action type named"),
    ("grant_capability", ["helper-bot", "http.request", "--only", "path"], "", "PARAM=PATTERN"),
    ("grant_capability", ["helper-bot", "http.request", "--only", "pth=/x/*"], "", "has no parameter pth"),
    ("grant_capability", ["helper-bot", "email.send", "--revoke"], "", "has no capability"),
    ("revoke_agent_key", ["cs_0000_nope"], "", "no agent key"),
    ("rotate_agent_key", ["nobody"], "", "no agent named"),
    ("rotate_webhook_secret", ["nobody"], "", "no agent named"),
    ("rotate_webhook_secret", ["helper-bot", "--overlap-hours", "-1"], "", "overlap-hours"),
    ("rotate_webhook_secret", ["helper-bot", "--overlap-hours", "soon"], "", "invalid float"),
    ("audit_checkpoint", ["extra"], "", "unrecognized arguments"),
    ("check_beat_heartbeat", ["--max-age", "0"], "", "positive"),
    ("create_credential", ["idp", "--kind", "scim_bearer"], "s\n", "--base-url"),
    ("create_credential", ["x", "--kind", "http_bearer", "--base-url", "https://a?b"], "s\n", "base_url"),
    (
        "create_credential",
        ["x", "--kind", "http_bearer", "--base-url", "https://a", "--method", "FETCH"],
        "s\n",
        "methods",
    ),
    ("create_credential", ["bad name", "--kind", "http_bearer", "--base-url", "https://a"], "s\n", "slug"),
    ("create_credential", ["x", "--kind", "http_basic", "--base-url", "https://a"], "no-colon\n", "user:password"),
    ("create_credential", ["x", "--kind", "slack_bot", "--base-url", "https://a"], "xoxb\n", "not slack_bot"),
    ("create_credential", ["x", "--kind", "magic"], "s\n", "invalid choice"),
    (
        "create_credential",
        ["x", "--kind", "http_bearer", "--base-url", "https://a", "--show", "cookies"],
        "s\n",
        "--show",
    ),
    (
        "create_credential",
        ["x", "--kind", "http_bearer", "--base-url", "https://a", "--min-risk", "huge"],
        "s\n",
        "invalid choice",
    ),
    ("create_reviewer", ["bad name", "--email", "x@example.com"], "", "not a valid username"),
    ("create_reviewer", ["newbie"], "", "--email"),
    ("create_reviewer", ["newbie", "--email", "not-an-address"], "", "not an email address"),
    ("create_reviewer", ["newbie", "--email", "RITA@example.com"], "", "rita already has the email"),
    ("create_reviewer", ["Rita", "--email", "r2@example.com"], "", "compared in any case"),
    ("create_reviewer", ["rita", "--group", "sre", "--remove-group", "sre"], "", "both joining and leaving"),
    ("create_reviewer", ["rita", "--group", "sre", "--no-group"], "", "contradict"),
    ("create_reviewer", ["rita", "--group", "countersign-staff"], "", "--staff"),
    ("create_reviewer", ["rita", "--password-stdin"], "123\n", "too short"),
    ("create_reviewer", ["rita", "--password-stdin"], "\n", "no password"),
    ("create_reviewer", ["rita", "--base-url", "ftp://x", "--password-link"], "", "--base-url"),
    ("create_reviewer_token", ["nobody"], "", "no user named"),
    ("export_audit", ["--action", "not-a-uuid"], "", "invalid filter value"),
    ("export_audit", ["--since-time", "yesterday"], "", "invalid filter value"),
    ("export_audit", ["--since", "abc"], "", "invalid int"),
    ("export_policies", ["extra"], "", "unrecognized arguments"),
    ("end_access", ["nope"], "", "not an action id"),
    ("end_access", ["00000000-0000-0000-0000-000000000000"], "", "No such action"),
    ("freeze_agent", ["nobody", "--reason", "x"], "", "no agent named"),
    ("freeze_agent", ["helper-bot"], "", "--reason"),
    ("freeze_agent", ["helper-bot", "--unfreeze"], "", "not frozen"),
    ("import_policies", ["/no/such/file.yaml"], "", "cannot read"),
    ("import_policies", ["{f:broken.yaml}"], "", "not valid YAML at line 2"),
    ("import_policies", ["{f:list.yaml}"], "", "one key, `rules`"),
    ("import_policies", ["{f:text-where-a-name-goes.yaml}"], "", "reviewer_group is text"),
    ("import_policies", ["{f:bad-effect.yaml}", "--dry-run"], "", "effect must be one of"),
    ("import_policies", ["{f:not-utf8.yaml}"], "", "not UTF-8"),
    ("pause_executions", [], "", "--reason"),
    ("rotate_credential_keys", ["extra"], "", "unrecognized arguments"),
    ("seed_demo", ["--base-url", "localhost:8000"], "", "--base-url"),
    ("verify_audit", ["--from-checkpoint", "/no/such/file"], "", "cannot read"),
    ("verify_audit", ["--from-checkpoint", "{f:checkpoint.json}"], "", "no audit checkpoint"),
]


def _args(args: list[str], files: dict[str, str]) -> list[str]:
    return [files[a[3:-1]] if a.startswith("{f:") else a for a in args]


def _call(command: str, args: list[str], stdin: str) -> None:
    old, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        call_command(command, *args, stdout=io.StringIO(), stderr=io.StringIO())
    finally:
        sys.stdin = old


def test_every_command_has_a_row():
    commands = {
        path.stem
        for app in ("agents", "approvals")
        for path in (ROOT / app / "management" / "commands").glob("*.py")
        if path.stem != "__init__"
    }
    assert commands - {case[0] for case in CASES} == set()


@pytest.mark.parametrize(
    ("command", "args", "stdin", "message"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_bad_input_is_one_clear_error_and_writes_nothing(
    command, args, stdin, message, tmp_path, agent, reviewer, outsider
):
    files = _files(tmp_path)
    events, credentials, rules = AuditEvent.objects.count(), Credential.objects.count(), PolicyRule.objects.count()
    with pytest.raises(CommandError) as refused:
        _call(command, _args(args, files), stdin)
    text = str(refused.value)
    assert message in text
    assert "\n" not in text.strip(), text
    assert (AuditEvent.objects.count(), Credential.objects.count(), PolicyRule.objects.count()) == (
        events,
        credentials,
        rules,
    )


# From a shell, as an operator runs them: exit 1, "CommandError: …" on stderr, no traceback. (The subprocess
# sees the test database's schema, not this test's rows: these inputs are bad whatever the data.)
SHELL_CASES = [
    ("create_credential", ["idp", "--kind", "scim_bearer", "--base-url", "https://idp.example.com/scim/v2?x"], "t\n"),
    ("create_credential", ["x", "--kind", "http_bearer", "--base-url", "https://a", "--method", "FETCH"], "s\n"),
    ("import_policies", ["{f:broken.yaml}"], ""),
    ("import_policies", ["{f:not-utf8.yaml}"], ""),
    ("create_reviewer", ["bad name", "--email", "x@example.com"], ""),
    ("create_agent", ["x", "--owner", "nobody"], ""),
]


@pytest.mark.parametrize(("command", "args", "stdin"), SHELL_CASES, ids=[c[0] for c in SHELL_CASES])
def test_from_a_shell_it_is_one_line_and_exit_code_1(command, args, stdin, stack_env, tmp_path):
    files = _files(tmp_path)
    done = subprocess.run(
        [sys.executable, "manage.py", command, *_args(args, files)],
        cwd=ROOT,
        env=stack_env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("CommandError: "), done.stderr


def test_scim_credential_from_the_command_line_is_stored_with_its_base_url():
    _call(
        "create_credential", ["idp", "--kind", "scim_bearer", "--base-url", "https://idp.example.com/scim/v2/"], "t\n"
    )
    assert Credential.objects.get(name="idp").scope == {"base_url": "https://idp.example.com/scim/v2"}
