"""Slack follows the directory: a Slack user is the reviewer whose provider identity has their email verified."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from approvals.models import OidcIdentity
from approvals.slack.users import by_verified_email

pytestmark = pytest.mark.django_db

User = get_user_model()


def test_with_sso_only_the_providers_verified_email_links_a_slack_user(directory_browser, sso):
    sso.person("rita", password="pw-rita", email="Rita@Example.com", email_verified=True, groups=["approvers"])
    directory_browser.sign_in("rita", "pw-rita")
    rita = User.objects.get(username="rita")
    assert by_verified_email("rita@example.com") == rita  # any case, as Slack spells it

    # An account whose email was typed in, not verified by the provider: Slack links nobody to it.
    User.objects.create_user("typed", email="typed@example.com")
    assert by_verified_email("typed@example.com") is None

    # The provider stops vouching for the address: the link goes with it at the next sign-in.
    sso.person("rita", email_verified=False)
    directory_browser.client.logout()
    directory_browser.sign_in("rita", "pw-rita")
    assert OidcIdentity.objects.get(user=rita).email_verified is False
    assert by_verified_email("rita@example.com") is None


def test_a_disabled_reviewer_is_nobodys_slack_identity(sso):
    gone = User.objects.create_user("gone", email="gone@example.com", is_active=False)
    OidcIdentity.objects.create(
        user=gone, issuer=sso.issuer, subject="42", email="gone@example.com", email_verified=True
    )
    assert by_verified_email("gone@example.com") is None


def test_without_sso_the_one_account_with_the_email_is_linked(db, settings):
    settings.OIDC_OP_ISSUER = ""
    sam = User.objects.create_user("sam", email="sam@example.com")
    assert by_verified_email("SAM@example.com") == sam
