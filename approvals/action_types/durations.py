"""How long time-boxed access lasts, and the most a policy or a credential allows. Pure: no I/O.

An agent writes ``duration`` as whole seconds (a JSON integer, 7200) or an ISO 8601 duration in days, hours,
minutes and seconds (``"PT2H"``, ``"P1D"``, ``"P1DT30M"``). Every check here is on the parsed number of seconds, so
another spelling of the same length is the same length: ``P1D``, ``86400`` and ``PT24H`` are all a day and are all
refused by a maximum of eight hours. Anything else is refused as malformed, never guessed at: a string of digits
(``"86400"``, ``"86400 "``), a negative or zero length, fractions, years and months (their length depends on the
calendar), and bare ``P``.
"""

from __future__ import annotations

import re
from typing import Any

# Longest duration anyone can ask for, whatever the policy says: a year.
HARD_MAX_SECONDS = 366 * 24 * 3600

_ISO = re.compile(
    r"P(?:(?P<w>\d{1,4})W)?(?:(?P<d>\d{1,4})D)?"
    r"(?:T(?:(?P<h>\d{1,6})H)?(?:(?P<m>\d{1,8})M)?(?:(?P<s>\d{1,9})S)?)?"
)


class DurationError(ValueError):
    """``duration`` is not a length Countersign can use; the message says why, for the agent."""


def parse_duration(value: Any) -> int:
    """Seconds, from a positive JSON integer or an ISO 8601 duration string; raises DurationError."""
    if isinstance(value, bool):
        raise DurationError("duration is a number of seconds or an ISO 8601 duration such as PT2H, not true/false")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        match = _ISO.fullmatch(value)
        if match is None or value in ("P", "PT") or value.endswith("T"):
            raise DurationError(
                f"duration {value!r} is not an ISO 8601 duration in weeks, days, hours, minutes and seconds "
                "(PT2H, P1D, PT90M) nor a whole number of seconds given as a JSON number"
            )
        parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
        seconds = (
            parts.get("w", 0) * 7 * 86400
            + parts.get("d", 0) * 86400
            + parts.get("h", 0) * 3600
            + parts.get("m", 0) * 60
            + parts.get("s", 0)
        )
    else:
        raise DurationError("duration is a number of seconds or an ISO 8601 duration such as PT2H")
    if seconds <= 0:
        raise DurationError("duration must be longer than zero seconds")
    if seconds > HARD_MAX_SECONDS:
        raise DurationError(f"duration is at most {HARD_MAX_SECONDS} seconds (a year)")
    return seconds


def describe_seconds(seconds: int) -> str:
    """ "2 h", "1 d 4 h", "90 s": for explanations and refusals."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size:
            count, seconds = divmod(seconds, size)
            parts.append(f"{count} {unit}")
    return " ".join(parts) or "0 s"


def credential_max_seconds(credential: Any) -> int | None:
    """The maximum a credential's scope sets (``max_duration_seconds``), or None."""
    scope = getattr(credential, "scope", None) or {}
    value = scope.get("max_duration_seconds") if isinstance(scope, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def duration_refusal(
    *,
    time_boxed: bool,
    raw: Any,
    given: bool,
    rule_name: str,
    rule_max: int | None,
    require: bool,
    credential: Any = None,
) -> tuple[str, int | None]:
    """(why the duration is refused or "", the duration in seconds or None).

    ``given``: the params carry ``duration`` at all. ``rule_max`` / ``require``: what the policy rule in force
    says; the credential's scope may set a maximum too, and the smaller maximum wins.
    """
    if not given:
        if require and time_boxed:
            return f"rule `{rule_name}` requires a duration: ask for the access for a limited time", None
        return "", None
    if not time_boxed:
        return "this action type cannot be time-boxed", None
    try:
        seconds = parse_duration(raw)
    except DurationError as exc:
        return str(exc), None
    limits = []
    if rule_max:
        limits.append((rule_max, f"rule `{rule_name}`"))
    cred_max = credential_max_seconds(credential)
    if cred_max:
        limits.append((cred_max, f"credential `{getattr(credential, 'name', '')}`"))
    for limit, who in sorted(limits):
        if seconds > limit:
            return (
                f"duration {describe_seconds(seconds)} is longer than the {describe_seconds(limit)} {who} allows",
                seconds,
            )
    return "", seconds
