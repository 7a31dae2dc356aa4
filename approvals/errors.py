"""Errors the service layer raises; the API turns them into RFC 9457 problems."""

from __future__ import annotations


class ServiceError(Exception):
    status = 400
    title = "Bad request"
    slug = "bad-request"

    def __init__(self, detail: str, *, errors: dict[str, list[str]] | None = None, extra: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or {}
        # RFC 9457 extension members, added to the problem body.
        self.extra = extra or {}


class InvalidInput(ServiceError):
    status, title, slug = 400, "Invalid input", "invalid-input"


class NotAllowed(ServiceError):
    status, title, slug = 403, "Not allowed", "not-allowed"


class NotFound(ServiceError):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(ServiceError):
    status, title, slug = 409, "Conflict", "conflict"


class NotPending(Conflict):
    title, slug = "Action is no longer pending", "not-pending"


class NotUnknown(Conflict):
    """Only an execution whose outcome is unknown is resolved (approvals.services.outcomes)."""

    title, slug = "The action's outcome is not unknown", "not-unknown"


class IdempotencyConflict(Conflict):
    title, slug = "Idempotency key reused with a different body", "idempotency-conflict"


class TargetChanged(Conflict):
    title, slug = "The target changed since you reviewed it", "target-changed"


class EditRefused(NotAllowed):
    """The policy refuses the action as edited (a deny rule, or a floor it cannot meet).

    approvals.services.reviews has already audited it (``action.edit_refused``), outside the rolled-back
    transaction; ``audited`` tells a wrapper that audits refusals not to write it twice.
    """

    title, slug = "The policy refuses this edit", "edit-refused"
    audited = True


class FreshAuthenticationRequired(NotAllowed):
    """The policy wants a recent sign-in at the identity provider before this approval (step-up).

    ``extra`` carries ``fresh_auth_minutes``; the web page sends the reviewer through the provider (prompt=login,
    max_age) and back to the decision. The API and Slack cannot, so they answer with this refusal.
    """

    title, slug = "A fresh sign-in is required", "fresh-authentication-required"
