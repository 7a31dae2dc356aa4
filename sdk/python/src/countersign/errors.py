"""Exceptions. HTTP errors carry Countersign's RFC 9457 problem; outcomes carry the action.

``CountersignError``
  ``APIError`` (an HTTP error answer; ``.problem``, ``.status``)
    ``InvalidInput`` 400 (``.errors``: field -> messages), ``NotAuthenticated`` 401,
    ``NotAllowed`` 403, ``NotFound`` 404, ``Conflict`` 409, ``PayloadTooLarge`` 413,
    ``RateLimited`` 429 (``.retry_after``), ``ServerError`` 5xx
  ``Unavailable`` (the service could not be reached in time: network errors, 5xx; or the request failed
    without an answer: a closed client, an invalid URL. Nothing from httpx escapes unwrapped)
  ``ActionError`` (the action ended without approval, or failed; ``.action``)
    ``Rejected`` (``.reason``), ``Expired``, ``Cancelled``, ``ExecutionFailed`` (``.error``; known not to
    have taken effect), ``OutcomeUnknown`` (``.error``, ``.advice``; interrupted, may have taken effect: NOT an
    ``ExecutionFailed``, so ``except ExecutionFailed: retry`` never retries it)
  ``WaitTimeout`` (still not decided/finished when the overall timeout ran out; ``.action``)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from countersign.models import Action


class CountersignError(Exception):
    """Base of every error this package raises.

    ``problem`` is the RFC 9457 problem body when the error came from an HTTP
    answer (``type``, ``title``, ``status``, ``detail``, maybe ``errors``), else None.
    """

    def __init__(self, message: str, *, problem: dict[str, Any] | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.problem = problem
        self.status = status if status is not None else (problem or {}).get("status")

    @property
    def detail(self) -> str:
        return str((self.problem or {}).get("detail") or self.message)


class APIError(CountersignError):
    """Countersign answered with an error status."""

    @property
    def type(self) -> str:
        return str((self.problem or {}).get("type") or "")

    @property
    def title(self) -> str:
        return str((self.problem or {}).get("title") or "")


class InvalidInput(APIError):
    """400: ``errors`` maps a field (``params.channel``) to what is wrong with it."""

    @property
    def errors(self) -> dict[str, list[str]]:
        return dict((self.problem or {}).get("errors") or {})

    def __str__(self) -> str:
        fields = "; ".join(f"{k}: {' '.join(v)}" for k, v in self.errors.items())
        return f"{self.message} ({fields})" if fields else self.message


class NotAuthenticated(APIError):
    """401: missing, invalid, revoked or expired agent key."""


class NotAllowed(APIError):
    """403: outside the agent's capabilities, or a reviewer-only endpoint."""


class NotFound(APIError):
    """404: no such action (or another agent's)."""


class Conflict(APIError):
    """409: no longer pending, or an idempotency key reused with another body."""


class PayloadTooLarge(APIError):
    """413: the body is over 256 KiB."""


class RateLimited(APIError):
    """429: this key is over its rate; ``retry_after`` is in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx that retrying did not cure (or a request that is not safe to retry)."""


class Unavailable(CountersignError):
    """Countersign could not be reached (network errors or 5xx) before the time allowed ran out."""


class ActionError(CountersignError):
    """The action ended without an approval to act on."""

    def __init__(self, message: str, *, action: Action):
        super().__init__(message)
        self.action = action

    @property
    def reason(self) -> str:
        decision = self.action.decision
        return decision.reason if decision is not None and decision.reason else self.message


class Rejected(ActionError):
    """A reviewer (or a policy) rejected it; ``reason`` says why, so the agent can adapt."""


class Expired(ActionError):
    """Nobody decided before it expired."""


class Cancelled(ActionError):
    """It was withdrawn (by the agent) before a decision."""


class ExecutionFailed(ActionError):
    """It was approved but Countersign's execution failed; ``error`` says how."""

    @property
    def error(self) -> str:
        return self.action.error or self.message


OUTCOME_UNKNOWN_ADVICE = "check the target before retrying"


class OutcomeUnknown(ActionError):
    """It was approved and its execution was interrupted after it may have reached the target: nobody knows
    whether it took effect. Not an ``ExecutionFailed`` on purpose: retrying blindly could do it twice. Check the
    target (``advice``); a reviewer who checked may resolve it to ``succeeded`` or ``failed``."""

    advice = OUTCOME_UNKNOWN_ADVICE

    @property
    def error(self) -> str:
        return self.action.error or self.message


class WaitTimeout(CountersignError):
    """The overall timeout passed while the action was still not decided (or not finished)."""

    def __init__(self, message: str, *, action: Action | None):
        super().__init__(message)
        self.action = action


_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidInput,
    401: NotAuthenticated,
    403: NotAllowed,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
}


def error_for(status: int, problem: dict[str, Any], retry_after: float | None = None) -> APIError:
    message = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
    if status == 429:
        return RateLimited(message, problem=problem, status=status, retry_after=retry_after)
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    return cls(message, problem=problem, status=status)


def outcome_error(action: Action) -> ActionError | None:
    """The exception for an action that ended without something to act on, else None."""
    if action.status == "rejected":
        reason = action.decision.reason if action.decision else ""
        return Rejected(f"Rejected: {reason}" if reason else "Rejected.", action=action)
    if action.status == "expired":
        return Expired("Expired: nobody decided in time.", action=action)
    if action.status == "cancelled":
        return Cancelled("Cancelled before a decision.", action=action)
    if action.status == "failed":
        return ExecutionFailed(f"Execution failed: {action.error or 'unknown error'}", action=action)
    if action.status == "unknown":
        return OutcomeUnknown(
            f"Outcome unknown: the execution was interrupted and may have taken effect "
            f"({action.error or 'interrupted'}); {OUTCOME_UNKNOWN_ADVICE}.",
            action=action,
        )
    return None
