"""Canonical JSON (audit/canonical.py): one encoding for everything that is hashed, so an audit event or a
proposal has one digest however its dict was built."""

from __future__ import annotations

import hashlib

import pytest

from audit.canonical import canonical_json, digest


def test_keys_are_sorted_at_every_depth_and_there_is_no_whitespace():
    value = {"b": [1, {"d": 2, "c": None}], "a": True}
    assert canonical_json(value) == '{"a":true,"b":[1,{"c":null,"d":2}]}'


def test_text_is_written_as_itself_not_as_escapes():
    assert canonical_json({"name": "Zoë 👩🏽", "quote": 'say "hi"'}) == '{"name":"Zoë 👩🏽","quote":"say \\"hi\\""}'


def test_the_digest_is_the_sha256_of_the_encoding_and_ignores_key_order():
    assert digest({"a": 1, "b": [2, 3]}) == digest({"b": [2, 3], "a": 1})
    assert digest({"a": 1}) == hashlib.sha256(b'{"a":1}').hexdigest()


@pytest.mark.parametrize("other", [{"a": "1"}, {"a": 1.5}, {"a": [1]}, {"a": 1, "b": None}, {"A": 1}])
def test_any_other_value_has_another_digest(other):
    assert digest(other) != digest({"a": 1})


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_numbers_json_cannot_carry_are_refused(number):
    with pytest.raises(ValueError):
        canonical_json({"x": number})
