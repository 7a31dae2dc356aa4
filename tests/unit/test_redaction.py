"""Redaction on its own (approvals/credentials/redaction.py): every form a target could echo a secret in is found
and replaced, and ordinary text is left alone (the whole loop, for every credential kind:
tests/execution/test_secret_forms.py)."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest

from approvals.credentials.redaction import REDACTED, Redactor, apply_visibility, forms_of
from tests.support.echo_forms import embedded_base64_cores, encodings

SECRET = 's3cr3t/Pa55+w0rd=é"\\q'


@pytest.mark.parametrize(("name", "form"), sorted(encodings(SECRET).items()))
def test_every_encoding_of_a_secret_is_redacted(name, form):
    redactor = Redactor([SECRET])
    scrubbed = redactor.text(f"before {form} after")
    assert scrubbed == f"before {REDACTED} after", name


@pytest.mark.parametrize("prefix", ["", "u", "us", "user:", '{"auth": "Basic ', "a" * 7])
@pytest.mark.parametrize("suffix", ["", "!", "!!", '"}'])
@pytest.mark.parametrize("urlsafe", [False, True])
def test_the_secret_inside_a_base64_string_is_redacted_at_any_alignment(prefix, suffix, urlsafe):
    # base64 of "user:secret" when only "secret" is known; a JWT payload; a cookie.
    raw = (prefix + SECRET + suffix).encode()
    encoded = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode().rstrip("=")
    scrubbed = Redactor([SECRET]).text(f"token={encoded}")
    assert REDACTED in scrubbed
    assert not any(core in scrubbed for core in embedded_base64_cores(SECRET))


def test_the_exact_wire_values_go_whole_and_the_basic_password_alone_too():
    header = "Basic " + base64.b64encode(b"svc:hunter2-pass").decode()
    redactor = Redactor(["svc:hunter2-pass", "hunter2-pass", header, "Bearer tok-123456"])
    assert redactor.text(f"Authorization: {header}") == f"Authorization: {REDACTED}"
    assert redactor.text("you are svc, password hunter2-pass") == f"you are svc, password {REDACTED}"
    assert redactor.text(quote(header)) == REDACTED
    assert redactor.text("Bearer tok-123456 and tok-123456") == f"{REDACTED} and tok-123456"  # the value sent


def test_json_is_scrubbed_recursively_in_keys_values_and_numbers():
    redactor = Redactor(["tok-9f3b1c7e", "12345678"])
    document = {
        "tok-9f3b1c7e": ["x", {"deep": base64.b64encode(b"tok-9f3b1c7e").decode()}],
        "n": 12345678,
        "ok": True,
        "other": 7,
    }
    assert redactor.json(document) == {
        REDACTED: ["x", {"deep": REDACTED}],
        "n": REDACTED,
        "ok": True,
        "other": 7,
    }


def test_short_secrets_do_not_turn_results_into_noise():
    # "ab" alone would match half of any page: only the longer values that carried it are scrubbed.
    redactor = Redactor(["ab", "Bearer ab"])
    assert redactor.text("a table about abstract labs") == "a table about abstract labs"
    assert redactor.text("you sent Bearer ab") == f"you sent {REDACTED}"
    assert all(len(f) >= 4 for f in forms_of("abc"))


def test_ordinary_text_is_left_alone():
    redactor = Redactor(["tok-9f3b1c7e-long-enough"])
    text = "HTTP 200 OK; the quick brown fox; aGVsbG8gd29ybGQ= 68656c6c6f"
    assert redactor.text(text) == text


def test_visibility_keeps_only_the_parts_the_credential_shows():
    parts = {"status_code": "status", "headers": "headers", "body": "body"}
    result = {"status_code": 200, "headers": {"x": "1"}, "body": {"ok": True}, "error": "e"}
    assert apply_visibility(result, ["status", "body"], parts) == {
        "status_code": 200,
        "body": {"ok": True},
        "error": "e",
    }
    assert apply_visibility(result, [], parts) == {"error": "e"}
