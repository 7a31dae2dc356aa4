"""People management: create_reviewer, the one-time set-password link, staff who can use the admin they see.

The side roads: a link used twice, a person who takes another's email or a username differing only in case,
staff reaching the admin for people and groups (making themselves superuser) — refused, and audited where a
change happened.
"""

from __future__ import annotations

import io
import re
import shlex
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from approvals.services.accounts import STAFF_GROUP
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
PEOPLE_VERBS = ("user.created", "user.updated", "user.password_link_issued", "user.password_set")
LINK = re.compile(r"set-password link \(works once\): (http://\S+)")


def run(*args: str, stdin: str = "") -> str:
    out = io.StringIO()
    old, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        call_command(*args, stdout=out, stderr=io.StringIO())
    finally:
        sys.stdin = old
    return out.getvalue()


def audit_text() -> str:
    return str(list(AuditEvent.objects.values_list("verb", "data")))


def test_a_new_reviewer_sets_their_password_once_through_the_printed_link():
    out = run("create_reviewer", "alice", "--email", "alice@example.com")
    alice = User.objects.get(username="alice")
    assert list(alice.groups.values_list("name", flat=True)) == [settings.COUNTERSIGN_DEFAULT_REVIEWER_GROUP]
    assert not alice.has_usable_password() and not alice.is_staff
    link = LINK.search(out).group(1)
    path = link.removeprefix(settings.COUNTERSIGN_BASE_URL)

    browser = Client()
    form_page = browser.get(path, follow=True)
    assert form_page.status_code == 200
    assert b"Set your password" in form_page.content
    assert b"<script>" not in form_page.content  # CSP: no inline script
    done = browser.post(
        form_page.redirect_chain[-1][0], {"new_password1": "a-long-pass-phrase", "new_password2": "a-long-pass-phrase"}
    )
    assert done.status_code == 302 and done["Location"] == reverse("password_set_done")
    assert Client().login(username="alice", password="a-long-pass-phrase")

    # The same link again (someone who saw it over her shoulder): refused, the password stays hers.
    again = Client().get(path, follow=True)
    assert b"This link no longer works" in again.content
    attempt = Client().post(path, {"new_password1": "the-attackers-choice", "new_password2": "the-attackers-choice"})
    assert b"This link no longer works" in attempt.content
    assert Client().login(username="alice", password="a-long-pass-phrase")

    verbs = list(AuditEvent.objects.filter(verb__in=PEOPLE_VERBS).values_list("verb", flat=True))
    assert verbs == ["user.created", "user.password_link_issued", "user.password_set"]
    token = path.rstrip("/").rsplit("/", 1)[1]
    assert token not in audit_text() and "a-long-pass-phrase" not in audit_text()


def test_a_password_from_stdin_logs_in_and_never_reaches_the_audit_log():
    out = run("create_reviewer", "bob", "--email", "bob@example.com", "--password-stdin", stdin="piped-pass-phrase\n")
    assert "set-password link" not in out
    assert Client().login(username="bob", password="piped-pass-phrase")
    assert "piped-pass-phrase" not in audit_text()


def test_updating_groups_and_staff_is_audited_and_a_repeat_changes_nothing():
    run("create_reviewer", "carol", "--email", "carol@example.com")
    out = run("create_reviewer", "carol", "--group", "sre", "--group", "dba", "--staff")
    carol = User.objects.get(username="carol")
    assert set(carol.groups.values_list("name", flat=True)) == {"reviewers", "sre", "dba", STAFF_GROUP}
    assert carol.is_staff and "staff: yes" in out
    event = AuditEvent.objects.filter(verb="user.updated").get()
    assert event.data["joined"] == ["sre", "dba", STAFF_GROUP] and event.data["staff"] is True

    assert "(no change)" in run("create_reviewer", "carol", "--group", "sre")
    assert AuditEvent.objects.filter(verb="user.updated").count() == 1

    run("create_reviewer", "carol", "--remove-group", "dba", "--no-staff")
    carol.refresh_from_db()
    assert set(carol.groups.values_list("name", flat=True)) == {"reviewers", "sre"} and not carol.is_staff


def test_nobody_takes_another_persons_email_or_name_in_another_case(reviewer):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="already has the email"):
        run("create_reviewer", "mallory", "--email", reviewer.email.upper())
    with pytest.raises(CommandError, match="compared in any case"):
        run("create_reviewer", reviewer.username.upper(), "--email", "mallory@example.com")
    assert not User.objects.filter(username__in=["mallory", reviewer.username.upper()]).exists()


def _admin_pages() -> list[str]:
    """Every Countersign admin page the site links to or the admin index lists, plus the add/change forms."""
    pages = [reverse("admin:index")]
    for model in admin.site._registry:
        if model._meta.app_label in ("agents", "approvals"):
            pages.append(reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"))
    return pages


def _check_staff_can_use_the_admin(client: Client, agent) -> None:
    for page in _admin_pages():
        response = client.get(page, follow=True)
        assert response.status_code == 200, page
        assert b"permission to view or edit anything" not in response.content, page
    for page in (
        reverse("admin:agents_agent_add"),
        reverse("admin:agents_agent_change", args=[agent.pk]),
        reverse("admin:approvals_credential_add"),
        reverse("admin:approvals_policyrule_add"),
    ):
        assert client.get(page).status_code == 200, page
    # The policies page's "edit rules in the admin" link, followed.
    policies = client.get(reverse("approvals:policies")).content.decode()
    link = re.search(r'Edit rules in <a href="([^"]+)">the admin</a>', policies).group(1)
    assert client.get(link).status_code == 200
    # Staff do not manage people or groups: no way to make themselves superuser from the admin.
    for page in (reverse("admin:auth_user_changelist"), reverse("admin:auth_group_changelist")):
        assert client.get(page).status_code == 403, page


def test_staff_made_by_create_reviewer_can_use_every_admin_page_they_are_shown(agent):
    run(
        "create_reviewer",
        "stella",
        "--email",
        "stella@example.com",
        "--staff",
        "--password-stdin",
        stdin="st-pass-phrase\n",
    )
    client = Client()
    assert client.login(username="stella", password="st-pass-phrase")
    _check_staff_can_use_the_admin(client, agent)
    stella = User.objects.get(username="stella")
    response = client.post(
        reverse("admin:auth_user_change", args=[stella.pk]), {"username": "stella", "is_superuser": "on"}
    )
    assert response.status_code == 403
    stella.refresh_from_db()
    assert not stella.is_superuser


def test_the_demo_staff_account_can_use_the_admin_it_is_linked_to():
    out = run("seed_demo")
    password = re.search(r"log in\s+reviewer / (\S+)", out).group(1)
    client = Client()
    assert client.login(username="reviewer", password=password)
    from agents.models import Agent

    _check_staff_can_use_the_admin(client, Agent.objects.get(name="demo-agent"))
    # Run again (make demo does, every start): same permissions, nothing doubled.
    run("seed_demo")
    assert Group.objects.get(name=STAFF_GROUP).user_set.count() == 1


def test_staff_permissions_drifted_by_hand_are_put_back():
    run("create_reviewer", "stella", "--email", "stella@example.com", "--staff")
    group = Group.objects.get(name=STAFF_GROUP)
    count = group.permissions.count()
    group.permissions.clear()
    run("create_reviewer", "stella", "--staff")
    assert group.permissions.count() == count


def _doc_commands(path: Path) -> list[list[str]]:
    """The ``manage.py`` lines of a document's first shell block (continuations joined, comments dropped)."""
    text = path.read_text(encoding="utf-8")
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1).replace("\\\n", " ")
    commands = []
    for line in block.splitlines():
        if "manage.py" in line:
            words = shlex.split(line, comments=True)
            commands.append(words[words.index(next(w for w in words if w.endswith("manage.py"))) + 1 :])
    return commands


def test_docs_agents_owner_exists_when_following_the_page_on_a_fresh_install():
    commands = _doc_commands(ROOT / "docs" / "agents.md")
    names = [c[0] for c in commands]
    assert "create_reviewer" in names and "create_agent" in names
    assert names.index("create_reviewer") < names.index("create_agent")
    for command in commands:
        run(*command)
    agent_owner = commands[names.index("create_agent")][commands[names.index("create_agent")].index("--owner") + 1]
    from agents.models import Agent

    assert Agent.objects.get(owner__username=agent_owner)
