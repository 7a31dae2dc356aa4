"""No lock anyone can trigger: guesses slow the guesser's (username, address), never the reviewer elsewhere.

Someone at 10.0.0.9 guessing rita's password is made to wait, longer after each failure (1, 2, 4 … s, capped),
and is told how long; rita, at 127.0.0.1, logs in as usual. The attempts are in the audit log, counted per
minute so that guessing cannot fill it.
"""

from __future__ import annotations

import re

import pytest
from django.test import Client, override_settings

from approvals.web import auth
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db

ATTACKER = "10.0.0.9"
RITA_AT_HOME = "127.0.0.1"


@pytest.fixture(autouse=True)
def _clean_throttle():
    """The counters live in the shared cache: each test starts and ends with none for its pairs."""
    pairs = [("rita", ATTACKER), ("rita", RITA_AT_HOME), ("ada", ATTACKER)]
    for username, address in pairs:
        auth.reset(username, address)
    yield
    for username, address in pairs:
        auth.reset(username, address)


def log_in(address: str, password: str, username: str = "rita", path: str = "/accounts/login/"):
    client = Client(enforce_csrf_checks=True, REMOTE_ADDR=address)
    page = client.get(path).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    response = client.post(path, {"username": username, "password": password, "csrfmiddlewaretoken": token})
    return client, response


def expire_delay(username: str, address: str) -> None:
    """Let the current delay pass without sleeping: the failures stay counted."""
    from django.core.cache import cache

    cache.delete(auth._pair_key(username, address) + ":until")


def test_guesses_from_another_address_never_lock_rita_out(reviewer):
    for _ in range(10):
        _, response = log_in(ATTACKER, "wrong")
        expire_delay("rita", ATTACKER)  # the attacker waits out every delay, and keeps guessing
    assert auth.seconds_to_wait("rita", ATTACKER) == 0

    client, response = log_in(RITA_AT_HOME, "pw-rita")
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(reviewer.pk)


def test_repeated_failures_delay_the_next_attempt_longer_each_time(reviewer):
    waits = []
    for _ in range(8):
        _, response = log_in(ATTACKER, "wrong")
        assert response.status_code == 200  # checked: a wrong password
        waits.append(auth.seconds_to_wait("rita", ATTACKER))
        _, refused = log_in(ATTACKER, "pw-rita")  # even the right password waits now
        assert refused.status_code == 429
        assert int(refused["Retry-After"]) == waits[-1]
        assert f"Try again in {waits[-1]} s" in refused.content.decode()
        expire_delay("rita", ATTACKER)
    assert waits == sorted(waits) and waits[0] >= 1 and waits[-1] > waits[0]
    assert max(waits) <= 60


@override_settings(COUNTERSIGN_LOGIN_DELAY_MAX_SECONDS=5)
def test_the_delay_is_capped():
    assert [auth.delay_after(n) for n in range(1, 7)] == [1, 2, 4, 5, 5, 5]
    assert auth.delay_after(10_000) == 5


def test_a_success_clears_the_pairs_failures(reviewer):
    log_in(RITA_AT_HOME, "wrong")
    expire_delay("rita", RITA_AT_HOME)
    _, response = log_in(RITA_AT_HOME, "pw-rita")
    assert response.status_code == 302
    assert auth.seconds_to_wait("rita", RITA_AT_HOME) == 0
    log_in(RITA_AT_HOME, "wrong")
    assert auth.seconds_to_wait("rita", RITA_AT_HOME) == 1  # counting starts again from the first delay


@override_settings(COUNTERSIGN_LOGIN_MAX_FAILURES_PER_IP=3)
def test_an_address_spraying_usernames_is_slowed_for_all_of_them_but_only_there(reviewer):
    from django.core.cache import cache

    cache.delete(auth._address_key(ATTACKER))
    cache.delete(auth._address_key(ATTACKER) + ":until")
    try:
        for name in ["amy", "bob", "cat", "dan"]:
            log_in(ATTACKER, "Winter2026!", username=name)
        assert auth.seconds_to_wait("rita", ATTACKER) >= 1  # a username it never tried
        _, response = log_in(RITA_AT_HOME, "pw-rita")
        assert response.status_code == 302
    finally:
        cache.delete(auth._address_key(ATTACKER))
        cache.delete(auth._address_key(ATTACKER) + ":until")
        for name in ["amy", "bob", "cat", "dan"]:
            auth.reset(name, ATTACKER)


def test_the_admin_log_in_is_slowed_down_too(db):
    from django.contrib.auth.models import User

    User.objects.create_superuser("ada", "ada@example.com", "pw-ada")
    log_in(ATTACKER, "wrong", username="ada", path="/admin/login/")
    _, response = log_in(ATTACKER, "pw-ada", username="ada", path="/admin/login/")
    assert response.status_code == 200 and "Try again in" in response.content.decode()


def test_the_attempts_are_audited_and_counted_per_minute(reviewer, monkeypatch):
    from datetime import UTC, datetime, timedelta

    from audit import chain as audit

    minute = datetime(2026, 12, 4, 10, 15, tzinfo=UTC)
    monkeypatch.setattr(audit, "_refusal_minute", lambda: minute)
    for _ in range(5):
        log_in(ATTACKER, "hunter2-guess")
        expire_delay("rita", ATTACKER)
    log_in(ATTACKER, "hunter2-guess")
    log_in(ATTACKER, "hunter2-guess")  # inside the delay: refused unchecked
    [failed] = AuditEvent.objects.filter(verb="user.login_failed")
    assert (failed.data["username"], failed.data["remote_addr"]) == ("rita", ATTACKER)
    assert "hunter2" not in failed.body
    [throttled] = AuditEvent.objects.filter(verb="user.login_throttled")
    assert throttled.data["retry_after"] >= 1

    audit.report_refusal_counts(now=minute + timedelta(minutes=1))
    [counted] = AuditEvent.objects.filter(verb="refusals.counted", object_id="user.login_failed")
    assert counted.data["refusals"] == 6
