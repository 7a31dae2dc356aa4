"""Running approved actions, at most once.

1. Redeem the grant and move to ``executing`` in one committed transaction,
   before any side effect: a redelivered task finds ``executing`` and stops.
2. Run the executor outside any transaction, with a client narrowed to the
   approved parameters.
3. Record the outcome.

A worker killed between 1 and 3 leaves the action ``executing``; the sweep
``fail_stuck_executions`` marks it failed (interrupted) rather than run it
blindly again.
"""

from __future__ import annotations

import logging
import traceback
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from approvals.action_types import registry
from approvals.action_types.base import ExecutionError
from approvals.audit import Actor
from approvals.canonical import digest
from approvals.crypto import CredentialDecryptError, decrypt_secret
from approvals.models import ActionRequest, ActionStatus, ExecutionGrant
from approvals.redaction import Redactor, apply_visibility, redactor_for, wire_values
from approvals.services import containment
from approvals.services.approval import mint_grant_and_enqueue
from approvals.services.transitions import audit_action, lock_action, transition

log = logging.getLogger(__name__)
WORKER = Actor.system("worker")


def execute_action(action_id) -> str:
    """Run one approved action; returns the status it ended in (or found)."""
    plan = _redeem(action_id)
    if plan is None:
        return ActionRequest.objects.values_list("status", flat=True).get(id=action_id)
    action, params, credential = plan
    action_type = registry.get(action.action_type)
    secret = client = None
    try:
        secret = decrypt_secret(credential.secret_encrypted) if credential else None
        client = action_type.make_client(credential_view(credential, secret), params, idempotency_key=str(action.id))
        result = action_type.execute(params, client)
        outcome, payload = ActionStatus.SUCCEEDED, result
    except ExecutionError as exc:
        outcome, payload = ActionStatus.FAILED, {"error": exc.message, **exc.details}
    except CredentialDecryptError as exc:
        outcome, payload = ActionStatus.FAILED, {"error": str(exc)}
    except Exception as exc:
        # The message could echo anything, the secret included: report the type, log a redacted trace.
        trace = redactor_for(credential.kind if credential else None, secret, client).text(traceback.format_exc())
        log.error("executor for %s crashed:\n%s", action.action_type, trace)
        outcome, payload = ActionStatus.FAILED, {"error": f"executor crashed ({type(exc).__name__})"}
    # Every form of every secret the client put on the wire (approvals.redaction), in the result.
    redactor = redactor_for(credential.kind if credential else None, secret, client)
    return _finish(action_id, outcome, result_for_agent(payload, redactor, credential, action_type))


def result_for_agent(payload: dict[str, Any], redactor: Redactor, credential, action_type) -> dict[str, Any]:
    """The one result the agent, reviewers, webhooks and Slack see: scrubbed, then cut to what the
    credential shows (``result_visibility``; the request headers Countersign sent are never in a result)."""
    payload = redactor.json(payload)
    if credential is not None and action_type is not None:
        visibility = credential.result_visibility or []
        payload = apply_visibility(payload, visibility, action_type.result_parts)
    return payload


class CredentialView:
    """What an action type's ``make_client`` sees of a credential: never the model."""

    __slots__ = ("_secret", "kind", "name", "scope")

    def __init__(self, name: str, kind: str, scope: dict[str, Any], secret: str | None):
        self.name, self.kind, self.scope, self._secret = name, kind, scope, secret

    def reveal(self) -> str | None:
        return self._secret

    def wire_secrets(self) -> set[str]:
        """The secret values any client of this credential sends (clients add the exact header values)."""
        return wire_values(self.kind, self._secret)

    def __repr__(self) -> str:
        return f"<CredentialView {self.name} kind={self.kind}>"


def credential_view(credential, secret: str | None) -> CredentialView | None:
    if credential is None:
        return None
    return CredentialView(credential.name, credential.kind, dict(credential.scope or {}), secret)


def _redeem(action_id):
    with transaction.atomic():
        try:
            action = lock_action(action_id)
        except ActionRequest.DoesNotExist:
            log.warning("execute_action: no action %s", action_id)
            return None
        action_type = registry.get(action.action_type)
        if action.status != ActionStatus.APPROVED or (action_type is not None and not action_type.executes):
            return None  # already executing, finished, never approved, or nothing for Countersign to run
        if containment.executions_paused():
            # Held, not refused: the action stays approved; resume_executions dispatches it with a fresh grant.
            audit_action(action, actor=WORKER, verb="execution.held", data={"reason": "executions are paused"})
            return None
        # of=self: the credential join is nullable, and PostgreSQL refuses FOR UPDATE on it.
        grant = (
            ExecutionGrant.objects.select_for_update(of=("self",))
            .select_related("credential")
            .filter(action=action)
            .order_by("-created_at")
        ).first()
        params = action.effective_params
        refusal = _grant_refusal(grant, action, action_type, params)
        if refusal:
            audit_action(action, actor=WORKER, verb="grant.refused", data={"reason": refusal})
            action.result = {"error": f"execution refused: {refusal}"}
            transition(
                action,
                ActionStatus.FAILED,
                actor=WORKER,
                verb="execution.failed",
                data={"error": action.result["error"]},
            )
            return None
        grant.redeemed_at = timezone.now()
        grant.save(update_fields=["redeemed_at"])
        audit_action(action, actor=WORKER, verb="grant.redeemed", data={"grant": str(grant.id)})
        transition(action, ActionStatus.EXECUTING, actor=WORKER, verb="execution.started")
        return action, params, grant.credential


def _grant_refusal(grant: ExecutionGrant | None, action: ActionRequest, action_type, params) -> str | None:
    if action_type is None:
        return f"action type {action.action_type} is not installed"
    if grant is None:
        return "no execution grant"
    if grant.redeemed_at is not None:
        return "grant already redeemed"
    if grant.expires_at <= timezone.now():
        return "grant expired"
    if grant.params_digest != digest(params):
        return "parameters changed after approval"
    expected_credential = action_type.credential_name(params)
    actual = grant.credential.name if grant.credential else None
    if expected_credential != actual:
        return "credential does not match the approved one"
    # The approval is not a licence once the agent lost its standing: disabled, frozen, keyless, or no longer
    # holding the capability (or its constraints no longer admit these params). The action fails as revoked.
    return containment.execution_refusal(action, params)


def _finish(action_id, outcome: str, payload: dict[str, Any]) -> str:
    with transaction.atomic():
        action = lock_action(action_id)
        if action.status != ActionStatus.EXECUTING:
            return action.status  # the stuck sweep got there first
        action.result = payload
        verb = "execution.succeeded" if outcome == ActionStatus.SUCCEEDED else "execution.failed"
        transition(action, outcome, actor=WORKER, verb=verb, data={"result": _audit_excerpt(payload)})
        return outcome


def _audit_excerpt(payload: dict[str, Any]) -> dict[str, Any]:
    keep = {k: payload[k] for k in ("status_code", "error") if k in payload}
    keep["result_digest"] = digest(payload)
    return keep


def fail_stuck_executions() -> int:
    """Settle executions a crash left in ``executing``: retry the idempotent, fail the rest.

    Never re-run blindly: only an action type that says these params are
    idempotent is re-queued (with a fresh grant, the same idempotency key),
    at most ``COUNTERSIGN_MAX_EXECUTION_ATTEMPTS`` times in all.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.COUNTERSIGN_STUCK_EXECUTION_SECONDS)
    stuck = list(
        ActionRequest.objects.filter(status=ActionStatus.EXECUTING, execution_started_at__lte=cutoff).values_list(
            "id", flat=True
        )[:500]
    )
    settled = 0
    beat = Actor.system("beat")
    for action_id in stuck:
        with transaction.atomic():
            action = lock_action(action_id)
            if action.status != ActionStatus.EXECUTING or action.execution_started_at > cutoff:
                continue
            action_type = registry.get(action.action_type)
            idempotent = action_type is not None and action_type.is_idempotent(action.effective_params)
            if idempotent and action.execution_attempts < settings.COUNTERSIGN_MAX_EXECUTION_ATTEMPTS:
                transition(
                    action,
                    ActionStatus.APPROVED,
                    actor=beat,
                    verb="execution.retrying",
                    data={"attempts": action.execution_attempts, "reason": "interrupted; idempotent"},
                )
                mint_grant_and_enqueue(action, action_type=action_type, actor=beat)
            else:
                why = "attempts exhausted" if idempotent else "not idempotent"
                action.result = {
                    "error": f"execution interrupted (worker stopped mid-execution) after "
                    f"{action.execution_attempts} attempt(s); not retried ({why})"
                }
                transition(
                    action,
                    ActionStatus.FAILED,
                    actor=beat,
                    verb="execution.interrupted",
                    data={"attempts": action.execution_attempts},
                )
            settled += 1
    return settled
