"""Capability constraints on their own (agents/capabilities.py): shell-style patterns per parameter; a
constrained parameter must be present and every value of it must match. The API's answers to the same rules are
in tests/agents/test_capabilities.py."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from agents.capabilities import constraint_violation
from agents.models import MAX_PATTERNS, Capability, validate_constraints

TICKETS = {"credential": ["ticket-api"], "method": ["GET", "POST"], "path": ["/tickets/*"]}


def violation(params: dict, constraints: dict | None = None) -> str | None:
    capability = Capability(action_type="http.request", constraints=TICKETS if constraints is None else constraints)
    return constraint_violation("ticket-bot", capability, params)


def test_params_inside_every_constraint_pass():
    assert violation({"credential": "ticket-api", "method": "POST", "path": "/tickets/42/comments"}) is None


def test_without_constraints_anything_the_schema_accepts_passes():
    assert violation({"method": "DELETE", "path": "/admin"}, constraints={}) is None


@pytest.mark.parametrize(
    ("overrides", "named", "value"),
    [
        ({"method": "DELETE"}, "method", "'DELETE'"),
        ({"path": "/admin/users"}, "path", "'/admin/users'"),
        ({"path": "/ticketsX"}, "path", "'/ticketsX'"),
        ({"credential": "other-api"}, "credential", "'other-api'"),
        ({"method": "get"}, "method", "'get'"),  # patterns are case-sensitive
    ],
)
def test_a_value_outside_a_constraint_is_named_with_what_was_allowed(overrides, named, value):
    params = {"credential": "ticket-api", "method": "POST", "path": "/tickets/1"} | overrides
    reason = violation(params)
    assert reason == (
        f"agent ticket-bot may use http.request only with {named} in [{', '.join(TICKETS[named])}], not {value}"
    )


def test_a_constrained_parameter_cannot_be_left_out():
    reason = violation({"credential": "ticket-api", "method": "GET"})
    assert (
        reason == "agent ticket-bot may use http.request only with path in [/tickets/*], and the proposal sets no path"
    )


def test_a_star_crosses_slashes():
    assert violation({"credential": "ticket-api", "method": "GET", "path": "/tickets/1/comments/2"}) is None


@pytest.mark.parametrize(
    ("channel", "allowed"),
    [
        (["#infra-help", "#infra-deploys"], True),
        (["#infra-help", "#general"], False),  # every item of a list must match
        ([], False),  # an empty list matches nothing
        ({"$ne": ""}, False),  # an object is never matched by a pattern
        ([{"x": 1}], False),
    ],
)
def test_every_value_of_a_list_must_match_and_objects_never_do(channel, allowed):
    assert (violation({"channel": channel}, constraints={"channel": ["#infra-*"]}) is None) is allowed


def test_well_formed_constraints_are_kept_as_given():
    assert validate_constraints(TICKETS) == TICKETS
    assert validate_constraints(None) == {} and validate_constraints("") == {}


@pytest.mark.parametrize(
    "constraints",
    [
        ["GET"],
        {"method": "GET"},
        {"method": []},
        {"method": [""]},
        {"": ["x"]},
        {"m": [1]},
        {"m": ["x"] * (MAX_PATTERNS + 1)},
    ],
)
def test_malformed_constraints_are_refused(constraints):
    with pytest.raises(ValidationError):
        validate_constraints(constraints)
