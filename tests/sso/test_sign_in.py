"""Signing in through the company's provider: who you are (the provider's subject) and what the directory lets
you decide (its groups, at every sign-in); refusals audited. The provider is real (tests/support/oidc_provider)."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from approvals.models import OidcIdentity
from approvals.policies.separation_of_duties import review_refusal
from approvals.services.accounts import save_person
from approvals.sso import session as sso_session
from audit.models import AuditEvent
from tests.factories import CLI, propose
from tests.sso.conftest import PROVIDER_NAME

pytestmark = pytest.mark.django_db

User = get_user_model()


def events(verb: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(verb=verb).order_by("seq"))


def signed_in_user(client):
    response = client.get("/")
    return response.wsgi_request.user if response.status_code == 200 else None


def test_a_reviewer_signs_in_through_the_provider_and_gets_the_directory_groups(directory_browser, sso):
    subject = sso.person(
        "rita", password="pw-rita", email="rita@example.com", email_verified=True, groups=["approvers", "unmapped"]
    )
    response = directory_browser.sign_in("rita", "pw-rita", next_path="/history")
    assert directory_browser.password_asked
    assert response.status_code == 302 and response["Location"] == "/history"

    rita = User.objects.get(username="rita")
    assert signed_in_user(directory_browser.client) == rita
    assert set(rita.groups.values_list("name", flat=True)) == {"reviewers"}  # "unmapped" is not Countersign's
    assert not rita.has_usable_password()  # signs in through the provider only
    identity = OidcIdentity.objects.get(user=rita)
    assert (identity.issuer, identity.subject, identity.email_verified) == (sso.issuer, subject, True)
    assert identity.groups == ["approvers", "unmapped"]

    created, signed = events("user.created")[-1], events("user.sso_signed_in")[-1]
    assert (created.actor, created.via, created.data["subject"]) == ("directory", "sso", subject)
    assert signed.actor == "rita" and signed.data["joined"] == ["reviewers"]
    assert signed.data["provider_groups"] == ["approvers", "unmapped"]
    assert events("user.updated")[-1].data["joined"] == ["reviewers"]
    assert events("user.logged_in")[-1].actor == "rita"


def test_the_log_in_page_offers_the_provider(client, sso):
    page = client.get("/accounts/login/").content.decode()
    assert f"Sign in with {PROVIDER_NAME}" in page
    assert 'name="password"' in page  # password log-in is on by default


def test_a_group_removed_at_the_provider_takes_the_right_to_decide_away_at_the_next_sign_in(
    directory_browser, sso, agent
):
    sso.person("rita", password="pw-rita", email="rita@example.com", email_verified=True, groups=["approvers"])
    directory_browser.sign_in("rita", "pw-rita")
    rita = User.objects.get(username="rita")
    action = propose(agent)
    assert review_refusal(rita, action) is None
    assert directory_browser.client.get(f"/actions/{action.id}").status_code == 200

    sso.person("rita", groups=[])  # the directory takes her out of the approvers
    directory_browser.client.logout()
    directory_browser.sign_in("rita", "pw-rita")

    rita = User.objects.get(username="rita")
    assert not rita.groups.filter(name="reviewers").exists()
    assert review_refusal(rita, action) is not None
    # The page, and the decision, are no longer hers.
    assert directory_browser.client.get(f"/actions/{action.id}").status_code == 404
    assert directory_browser.client.post(f"/actions/{action.id}/approve", {"comment": "ok"}).status_code == 404
    assert action.reviews.count() == 0
    assert events("user.updated")[-1].data["left"] == ["reviewers"]
    assert events("user.sso_signed_in")[-1].data["left"] == ["reviewers"]


def test_groups_the_map_does_not_name_stay_as_staff_set_them_and_staff_follows_the_directory(directory_browser, sso):
    sso.person("pat", password="pw-pat", email="pat@example.com", email_verified=True, groups=["platform-admins"])
    directory_browser.sign_in("pat", "pw-pat")
    pat = User.objects.get(username="pat")
    assert pat.is_staff and {"reviewers", "countersign-staff"} <= set(pat.groups.values_list("name", flat=True))

    save_person(username="pat", actor=CLI, groups=["auditors"])  # a group staff keep by hand
    sso.person("pat", groups=["sre-oncall"])
    directory_browser.client.logout()
    directory_browser.sign_in("pat", "pw-pat")
    pat.refresh_from_db()
    assert not pat.is_staff
    assert set(pat.groups.values_list("name", flat=True)) == {"auditors", "sre"}


def test_an_unverified_email_never_takes_over_an_existing_account(directory_browser, sso, reviewers_group):
    alice = save_person(username="alice", actor=CLI, email="alice@example.com", groups=["reviewers"]).user
    # Someone at the provider with alice's address, unverified, and her username.
    sso.person("alice", password="pw-x", email="alice@example.com", email_verified=False, groups=[])
    directory_browser.sign_in("alice", "pw-x")

    newcomer = signed_in_user(directory_browser.client)
    assert newcomer is not None and newcomer.pk != alice.pk
    assert newcomer.username == "alice-2" and newcomer.email == ""
    assert not OidcIdentity.objects.filter(user=alice).exists()
    assert alice.groups.filter(name="reviewers").exists() and not newcomer.groups.exists()


def test_a_verified_email_links_an_existing_account_once_and_the_subject_keeps_it(
    client, directory_browser, sso, reviewers_group
):
    bob = save_person(username="bob", actor=CLI, email="bob@example.com", groups=["reviewers"]).user
    sso.person("bob", password="pw-bob", email="bob@example.com", email_verified=True, groups=["approvers"])
    directory_browser.sign_in("bob", "pw-bob")
    assert signed_in_user(directory_browser.client) == bob
    assert events("user.sso_linked")[-1].data["linked_by"] == "verified email"

    # Another subject later claiming the same verified address gets an account of its own, never bob's.
    sso.person("bob-impostor", password="pw-i", email="bob@example.com", email_verified=True, groups=["approvers"])
    directory_browser.client.logout()
    directory_browser.at_provider.cookies.clear()
    directory_browser.sign_in("bob-impostor", "pw-i")
    impostor = signed_in_user(directory_browser.client)
    assert impostor is not None and impostor.pk != bob.pk
    assert OidcIdentity.objects.filter(user=bob).count() == 1


def test_a_superuser_is_never_linked_by_email(directory_browser, sso):
    root = User.objects.create_superuser("root", "root@example.com", "pw-root")
    sso.person("root", password="pw-r", email="root@example.com", email_verified=True, groups=[])
    directory_browser.sign_in("root", "pw-r")
    assert signed_in_user(directory_browser.client).pk != root.pk


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("other-audience", "the ID token was issued for another client (aud)"),
        ("foreign-key", "the ID token's signature does not verify with the provider's keys"),
    ],
)
def test_an_id_token_for_another_audience_or_signed_by_another_key_is_refused_and_audited(
    directory_browser, sso, mode, reason
):
    sso.person("mallory", password="pw-m", email="m@example.com", email_verified=True, groups=["approvers"])
    sso.mode(mode)
    response = directory_browser.sign_in("mallory", "pw-m")

    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert signed_in_user(directory_browser.client) is None
    assert not User.objects.filter(username="mallory").exists()  # nothing half-written
    refused = events("user.sso_refused")[-1]
    assert refused.data["reason"] == reason and refused.via == "sso"


def test_a_forged_callback_is_never_exchanged_and_is_audited(client, sso):
    response = client.get("/oidc/callback/", {"code": "stolen-code", "state": "forged-state"})
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert events("user.sso_refused")[-1].data["reason"] == "the callback's state is not this browser's"


def test_a_callback_replayed_is_refused_and_audited(directory_browser, sso):
    sso.person("rita", password="pw-rita", email="rita@example.com", email_verified=True, groups=["approvers"])
    directory_browser.sign_in("rita", "pw-rita")
    signed_in = len(events("user.sso_signed_in"))
    parts = urlsplit(directory_browser.last_callback)
    replay = directory_browser.client.get(f"{parts.path}?{parts.query}")
    assert replay.status_code == 302 and replay["Location"] == "/accounts/login/"
    assert len(events("user.sso_signed_in")) == signed_in
    assert events("user.sso_refused")[-1].data["reason"] == "the callback's state is not this browser's"


def test_after_sign_in_the_browser_only_ever_goes_to_a_countersign_page(directory_browser, sso):
    sso.person("rita", password="pw-rita", email="rita@example.com", email_verified=True, groups=["approvers"])
    response = directory_browser.sign_in("rita", "pw-rita", next_path="https://evil.example/phish")
    assert response.status_code == 302 and response["Location"] == "/"


def test_a_discovery_document_naming_another_issuer_is_refused(client, sso, settings):
    settings.OIDC_OP_ISSUER = sso.issuer + "/"  # the document says the issuer without the slash: not the same
    response = client.get("/oidc/authenticate/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert "describes issuer" in events("user.sso_refused")[-1].data["reason"]


def test_the_provider_refusing_is_audited(client, sso):
    client.get("/oidc/callback/", {"error": "access_denied", "error_description": "user cancelled"})
    assert events("user.sso_refused")[-1].data["reason"] == "the provider answered access_denied: user cancelled"


def test_a_session_past_its_maximum_age_ends_and_the_next_sign_in_syncs_groups_again(directory_browser, sso, settings):
    settings.COUNTERSIGN_SESSION_MAX_AGE_SECONDS = 3600
    sso.person("rita", password="pw-rita", email="rita@example.com", email_verified=True, groups=["approvers"])
    directory_browser.sign_in("rita", "pw-rita")
    client = directory_browser.client
    assert client.get("/").status_code == 200

    session = client.session
    session[sso_session.LOGGED_IN_AT] = time.time() - 3601  # signed in over an hour ago
    session.save()
    sso.person("rita", groups=[])
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    expired = events("user.session_expired")[-1]
    assert expired.actor == "rita" and expired.data["max_age_seconds"] == 3600

    directory_browser.sign_in("rita", "pw-rita")  # the provider's session still holds: no password asked
    assert not directory_browser.password_asked
    assert not User.objects.get(username="rita").groups.filter(name="reviewers").exists()


def test_with_local_log_in_off_only_a_break_glass_superuser_uses_a_password(client, settings, reviewer, sso):
    settings.COUNTERSIGN_LOCAL_LOGIN = False
    settings.COUNTERSIGN_BREAK_GLASS_USERS = ["root", "rita"]
    User.objects.create_superuser("root", "root@example.com", "pw-root")
    User.objects.create_user("oscar", "oscar@example.com", "pw-oscar")
    Group.objects.get_or_create(name="reviewers")

    page = client.get("/accounts/login/").content.decode()
    assert f"Sign in with {PROVIDER_NAME}" in page and 'name="password"' not in page
    assert 'name="password"' in client.get("/accounts/login/?break_glass=1").content.decode()

    refused = client.post("/accounts/login/?break_glass=1", {"username": "oscar", "password": "pw-oscar"})
    assert refused.status_code == 200 and signed_in_user(client) is None
    assert events("user.login_refused")[-1].data["reason"] == "password log-in is off (COUNTERSIGN_LOCAL_LOGIN=false)"
    # On the list but not a superuser: refused too (the reviewer fixture's password is pw-rita).
    client.post("/accounts/login/?break_glass=1", {"username": "rita", "password": "pw-rita"})
    assert signed_in_user(client) is None
    assert events("user.login_refused")[-1].data["reason"] == "a break-glass account must be a superuser"
    # The admin's log-in is the same door.
    client.post("/admin/login/", {"username": "oscar", "password": "pw-oscar"})
    assert signed_in_user(client) is None

    ok = client.post("/accounts/login/?break_glass=1", {"username": "root", "password": "pw-root"})
    assert ok.status_code == 302 and signed_in_user(client).username == "root"
