"""Human decisions on pending actions, cancellation by the agent, and expiry."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from agents.models import Agent
from approvals.errors import (
    Conflict,
    EditRefused,
    FreshAuthenticationRequired,
    InvalidInput,
    NotAllowed,
    NotFound,
    NotPending,
    TargetChanged,
)
from approvals.models import ActionRequest, ActionStatus, Review
from approvals.notify import notifications
from approvals.policies.edits import check_edit
from approvals.policies.evaluation import EditOutcome
from approvals.policies.rules import fresh_auth_minutes
from approvals.policies.separation_of_duties import review_refusal, uncounted_reason
from approvals.policies.store import PolicyHead, active_rules
from approvals.presentation.previews import (
    compute_preview,
    decision_evidence,
    describe_params,
    fingerprint,
    preview_as_dict,
)
from approvals.selectors import history
from approvals.selectors.actions import reviews_with_counts
from approvals.services.approval import complete_approval
from approvals.services.transitions import (
    approval_count,
    audit_action,
    lock_action,
    lock_action_with_policy_head,
    publish,
    transition,
    write_review,
)
from audit.canonical import digest
from audit.chain import Actor, audited_atomic, record_refusal
from catalog import registry
from catalog.base import Preview
from config.prepared import PreparedInstances

MAX_COMMENT = 2000


def _locked_pending(action_id, *, agent: Agent | None = None) -> ActionRequest:
    try:
        action = lock_action(action_id, agent=agent)
    except (ActionRequest.DoesNotExist, ValueError):
        raise NotFound("No such action.") from None
    return action


def _locked_for_approval(action_id) -> tuple[ActionRequest, PolicyHead]:
    """The action locked, and the policy head read with it: the rule an approval is checked against is the one in
    force as of its lock, read fresh by the same statement (no cache across requests)."""
    try:
        return lock_action_with_policy_head(action_id)
    except (ActionRequest.DoesNotExist, ValueError):
        raise NotFound("No such action.") from None


def _require_pending(action: ActionRequest) -> None:
    if not action.is_pending:
        # Who decided it and when ("sam rejected this at 14:02 UTC"), whatever the door that asks: the API, Slack.
        decision = history.decision_of(action)
        said = history.decision_sentence(decision) if decision else f"The action is {action.status}"
        raise NotPending(f"{said}; it can no longer be decided.")
    if action.expires_at <= timezone.now():
        # The expiry job may not have run yet; past its time to live nobody decides it.
        raise NotPending("The action expired; it can no longer be decided.")


def _refusals_recorded(verdict: str) -> Callable:
    """A decision refused (NotAllowed: eligibility, separation of duties, group, role) is recorded in the audit
    log, whatever the door (web, API, Slack, HumanLayer). Recorded here, after the decision's transaction
    rolled back, so the event survives it; counted per reviewer, kind and minute (record_refusal)."""

    def wrap(decide: Callable[..., ActionRequest]) -> Callable[..., ActionRequest]:
        @functools.wraps(decide)
        def recorded(*, action_id, reviewer, via: str, **kwargs: Any) -> ActionRequest:
            try:
                return decide(action_id=action_id, reviewer=reviewer, via=via, **kwargs)
            except EditRefused:
                raise  # the edit, not the reviewer, was refused; audited as action.edit_refused
            except NotAllowed as exc:
                record_decision_refused(action_id, reviewer, via, verdict, exc.detail)
                raise

        return recorded

    return wrap


def record_decision_refused(action_id, reviewer, via: str, verdict: str, reason: str) -> None:
    agent_name = ActionRequest.objects.filter(id=action_id).values_list("agent__name", flat=True).first()
    record_refusal(
        actor=Actor.user(reviewer, via),
        verb="decision.refused",
        kind=f"{verdict}: {reason}",
        reason=reason,
        object_type="action",
        object_id=str(action_id),
        action_id=action_id if agent_name is not None else None,
        agent_name=agent_name or "",
        data={"verdict": verdict},
    )


@_refusals_recorded("approve")
def approve_action(
    *,
    action_id,
    reviewer,
    via: str,
    comment: str = "",
    edited_params: dict[str, Any] | None = None,
    preview_fingerprint: str | None = None,
    override_reason: str = "",
    authenticated_at: datetime | None = None,
) -> ActionRequest:
    """Add ``reviewer``'s approval; approve the action when it has all it needs.

    The preview is computed now, whatever the door, and stored with the review as its evidence (its digest in
    the ``action.reviewed`` event). ``preview_fingerprint`` is what the reviewer saw of the target
    (approvals.presentation.previews.fingerprint): a changed target refuses the approval with the fresh preview
    attached, so the stored evidence is what the reviewer saw. A preview that says execution will fail needs
    ``override_reason``, the reviewer's typed reason for approving anyway.

    ``authenticated_at`` is when the reviewer last signed in at the identity provider (the ID token's auth_time,
    which only the web page knows): a rule with ``fresh_auth_minutes`` refuses a high or critical approval without
    a sign-in that recent (FreshAuthenticationRequired, audited as ``decision.refused``).
    """
    if len(comment) > MAX_COMMENT:
        raise InvalidInput("Comment too long.", errors={"comment": [f"At most {MAX_COMMENT} characters."]})
    override_reason = (override_reason or "").strip()
    if len(override_reason) > MAX_COMMENT:
        raise InvalidInput("Reason too long.", errors={"override_reason": [f"At most {MAX_COMMENT} characters."]})
    try:
        return _with_preview(
            functools.partial(
                _approve,
                action_id,
                reviewer,
                via,
                comment,
                edited_params,
                preview_fingerprint=preview_fingerprint,
                override_reason=override_reason,
                authenticated_at=authenticated_at,
            ),
            action_id,
            reviewer,
            edited_params,
            via="approval",
        )
    except EditRefused as exc:
        # The approval rolled back; the refused edit is still a fact worth keeping (who tried what, and why not).
        _audit_refused_edit(action_id, reviewer, via, edited_params, exc)
        raise
    except InvalidInput as exc:
        if exc.extra.get("will_fail"):
            record_decision_refused(action_id, reviewer, via, "approve", exc.detail)
        raise


@dataclass(frozen=True)
class _Seen:
    """The previews computed at decision time: of the proposal (what the page shows) and of what would run."""

    shown: Preview
    runs: Preview
    runs_params: dict[str, Any]


class _PreviewWaits(Exception):
    """Raised under the lock, before anything is written, when the action's preview may wait on something outside
    this process (its type is not ``preview_offline``): the decision rolls back and starts again, the preview first."""


_PENDING_CHECK = PreparedInstances(
    ActionRequest,
    lambda action_id: ActionRequest.objects.filter(id=action_id),
    related=("agent", "reviewer_group"),
    action_id=ActionRequest._meta.pk,
)


def _with_preview(
    decide: Callable[..., ActionRequest], action_id, reviewer, edited_params: dict[str, Any] | None, *, via: str
) -> ActionRequest:
    """``decide(seen=..., preview_under_lock=...)``, given the previews of the decision.

    First with ``preview_under_lock``: a preview made from the params alone is computed from the locked row (one
    read of the action). A preview that may wait on the target (``_PreviewWaits``) is computed before a second
    attempt, outside any transaction, so that no row lock is held across network I/O."""
    try:
        return decide(seen=None, preview_under_lock=True)
    except _PreviewWaits:
        return decide(seen=_seen_at_decision(action_id, reviewer, edited_params, via=via), preview_under_lock=False)


def _seen_under_lock(
    action: ActionRequest, edited_params: dict[str, Any] | None, *, via: str, seen: _Seen | None, under_lock: bool
) -> _Seen | None:
    """The decision's previews: ``seen`` (computed before the lock), or now from the locked ``action``."""
    if not under_lock:
        return seen
    action_type = registry.get(action.action_type)
    if action_type is None or not action_type.preview_offline:
        raise _PreviewWaits
    return _seen_of(action, edited_params, via=via)


def _seen_at_decision(action_id, reviewer, edited_params: dict[str, Any] | None, *, via: str) -> _Seen | None:
    # Outside the transaction: reading the target is network I/O, and no row lock is held across it.
    action = _PENDING_CHECK.first(action_id=action_id)
    if action is None or not action.is_pending or review_refusal(reviewer, action):
        return None  # the locked read refuses it (404, 409, 403): nobody's decision reads the target for nothing
    return _seen_of(action, edited_params, via=via)


def _seen_of(action: ActionRequest, edited_params: dict[str, Any] | None, *, via: str) -> _Seen:
    shown = compute_preview(action.action_type, action.params, action=action, via=via)
    runs_params = edited_params if edited_params is not None else action.effective_params
    if runs_params == action.params:
        return _Seen(shown=shown, runs=shown, runs_params=runs_params)
    runs = compute_preview(action.action_type, runs_params, action=action, via=via)
    return _Seen(shown=shown, runs=runs, runs_params=runs_params)


def _refuse_if_target_changed(seen: _Seen | None, preview_fingerprint: str | None) -> None:
    if seen is not None and preview_fingerprint is not None and fingerprint(seen.shown) != preview_fingerprint:
        raise TargetChanged(
            "The target changed since you reviewed it; review the fresh preview and approve again.",
            extra={"preview": preview_as_dict(seen.shown)},
        )


def _refuse_if_will_fail(seen: _Seen | None, override_reason: str) -> None:
    if seen is None or not seen.runs.will_fail or override_reason:
        return
    raise InvalidInput(
        f"Countersign's preview says execution will fail: {seen.runs.failure or 'see the preview'} "
        "Approving anyway needs your typed reason (override_reason; on the action's page, “Approve anyway”).",
        errors={"override_reason": ["Say why you approve although the preview says execution will fail."]},
        extra={"will_fail": True, "preview": preview_as_dict(seen.runs)},
    )


def _approve(
    action_id,
    reviewer,
    via: str,
    comment: str,
    edited_params: dict[str, Any] | None,
    *,
    seen: _Seen | None,
    preview_under_lock: bool,
    preview_fingerprint: str | None,
    override_reason: str,
    authenticated_at: datetime | None = None,
) -> ActionRequest:
    with audited_atomic():
        action, policy_head = _locked_for_approval(action_id)
        seen = _seen_under_lock(action, edited_params, via="approval", seen=seen, under_lock=preview_under_lock)
        refusal = review_refusal(reviewer, action)
        if refusal:
            raise NotAllowed(refusal)
        _require_pending(action)
        _require_fresh_authentication(action, authenticated_at, via=via, policy_head=policy_head)
        reviews = reviews_with_counts(action.id) if action.has_reviews else []  # as of the lock: see the model
        if any(r.reviewer_id == reviewer.pk and r.withdrawn_at is None for r in reviews):
            raise Conflict("You have already reviewed this action; another reviewer must add the next approval.")
        action_type = registry.get(action.action_type)
        if action_type is None:  # uninstalled since it was proposed: nothing could check or run it
            raise Conflict("This action type is no longer installed: reject the action, or install the type again.")
        _refuse_if_target_changed(seen, preview_fingerprint)
        _refuse_if_will_fail(seen, override_reason)
        edits = None
        if edited_params is not None and edited_params != action.effective_params:
            # An edit is a new proposal for the policy: re-evaluated, never more lenient
            # (approvals.policies.evaluation);
            # the one edit check (approvals.policies.edits), which the desk's live check calls too.
            outcome = check_edit(action, action_type, edited_params, policy_head=policy_head)
            edits = {"before": action.effective_params, "after": edited_params}
            action.edited_params = edited_params
            _apply_policy(action, outcome, actor=Actor.user(reviewer, via))
        evidence = _evidence(action, seen, edits=edits, fingerprint_checked=preview_fingerprint is not None)
        review = write_review(
            action,
            Review(
                action=action,
                reviewer=reviewer,
                verdict=Review.Verdict.APPROVE,
                via=via,
                comment=comment,
                edited_params=edits and edited_params,
                evidence=evidence,
                override_reason=override_reason if seen is not None and seen.runs.will_fail else "",
            ),
        )
        review.reviewer = reviewer
        # The reviews as of now: read under the lock above, plus this one; read again if an edit changed the rule
        # their ``counts`` were worked out under.
        action.hold_reviews(reviews_with_counts(action.id) if edits else [*reviews, review])
        actor = Actor.user(reviewer, via)
        approvals = approval_count(action)
        not_counted = uncounted_reason(review, action) if edits else ""
        audit_action(
            action,
            actor=actor,
            verb="action.reviewed",
            data={
                "verdict": "approve",
                "comment": comment,
                "approvals": approvals,
                "required_approvals": action.required_approvals,
                **({"edited_params": edits, "params_digest": digest(edited_params)} if edits else {}),
                **({"counts": False, "not_counted": not_counted} if not_counted else {}),
                "evidence_digest": digest(evidence),
                **(
                    {"override_reason": review.override_reason, "will_fail": seen.runs.failure if seen else ""}
                    if review.override_reason
                    else {}
                ),
            },
        )
        if approvals >= action.required_approvals:
            complete_approval(action, actor=actor, action_type=action_type)
        else:
            if edits:
                action.save(update_fields=["edited_params", "updated_at"])
            publish(action, approvals=approvals)
    return action


def _require_fresh_authentication(
    action: ActionRequest, authenticated_at: datetime | None, *, via: str, policy_head: PolicyHead
) -> None:
    """Step-up: the rule now in force (the policy head read with the lock) may want a sign-in at the identity
    provider within N minutes."""
    _, rules = active_rules(policy_head)
    rule = next((r for r in rules if r.name == action.policy_rule), None)
    minutes = fresh_auth_minutes(rule, action.risk)
    if minutes is None:
        return
    extra = {"fresh_auth_minutes": minutes}
    if via != Review.Via.WEB:
        raise FreshAuthenticationRequired(
            f"This {action.risk}-risk action needs a sign-in at your identity provider within the last {minutes} "
            "minutes: approve it on the web page, which asks you to sign in again.",
            extra=extra,
        )
    if authenticated_at is None or timezone.now() - authenticated_at > timedelta(minutes=minutes):
        raise FreshAuthenticationRequired(
            f"This {action.risk}-risk action needs a sign-in at your identity provider within the last {minutes} "
            "minutes: sign in again, then approve.",
            extra=extra,
        )


def _apply_policy(action: ActionRequest, outcome: EditOutcome, *, actor: Actor) -> None:
    """Put the rule now in force on the action (locked by the caller) and audit the change, if any."""
    changes = outcome.changes(action)
    if not changes and outcome.explanation == action.policy_explanation:
        return
    decision = outcome.evaluation.decision
    action.policy_rule = outcome.rule
    action.policy_effect = outcome.effect
    action.policy_explanation = outcome.explanation[:500]
    action.required_approvals = outcome.required_approvals
    action.risk = outcome.risk
    action.modifies_access = outcome.modifies_access
    action.web_decision_only = outcome.web_decision_only
    if "reviewer_group" in changes:
        action.reviewer_group = Group.objects.get_or_create(name=outcome.reviewer_group)[0]
        # The group now in force hears about it where its rule says (as well as where the first rule said).
        action.notify_channels = list(dict.fromkeys([*action.notify_channels, *decision.notify]))
        action.escalate_channels = list(dict.fromkeys([*action.escalate_channels, *decision.escalate_to]))
    action.policy_version = outcome.evaluation.version or action.policy_version
    action.updated_at = timezone.now()
    action.save()
    audit_action(
        action,
        actor=actor,
        verb="action.policy_reevaluated",
        data={
            "policy": {
                **outcome.as_dict(),
                "version": outcome.evaluation.version,
                "floor_reasons": list(decision.floor_reasons),
                "matched": {"rule": decision.rule, "effect": decision.effect, "explanation": decision.explanation},
            },
            "changes": changes,
            "params_digest": digest(action.edited_params),
        },
    )


def _audit_refused_edit(action_id, reviewer, via: str, edited_params, exc: EditRefused) -> None:
    action = ActionRequest.objects.select_related("agent").filter(id=action_id).first()
    if action is None:
        return
    with audited_atomic():
        audit_action(
            action,
            actor=Actor.user(reviewer, via),
            verb="action.edit_refused",
            data={"reason": exc.detail, "policy": exc.extra.get("policy", {}), "params_digest": digest(edited_params)},
        )


def _evidence(
    action: ActionRequest, seen: _Seen | None, *, edits: dict[str, Any] | None, fingerprint_checked: bool
) -> dict[str, Any]:
    """What the reviewer decided on (Review.evidence), from the previews computed for this decision."""
    if seen is None:  # the action appeared between the two reads: nothing was computed, say so
        seen = _Seen(
            shown=Preview(kind="unavailable", error="no preview was computed for this decision"),
            runs=Preview(kind="unavailable"),
            runs_params=action.effective_params,
        )
    return decision_evidence(
        shown=seen.shown,
        describe=describe_params(action.action_type, action.effective_params),
        params=action.effective_params,
        edits=edits,
        approved=seen.runs if seen.runs is not seen.shown else None,
        fingerprint_checked=fingerprint_checked,
    )


@_refusals_recorded("reject")
def reject_action(*, action_id, reviewer, via: str, reason: str) -> ActionRequest:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("A rejection needs a reason.", errors={"reason": ["Say why, so the agent can adapt."]})
    if len(reason) > MAX_COMMENT:
        raise InvalidInput("Reason too long.", errors={"reason": [f"At most {MAX_COMMENT} characters."]})
    # A rejection keeps its evidence too (what the reviewer turned down); a failing preview never blocks it.
    return _with_preview(
        functools.partial(_reject, action_id, reviewer, via, reason), action_id, reviewer, None, via="rejection"
    )


def _reject(
    action_id, reviewer, via: str, reason: str, *, seen: _Seen | None, preview_under_lock: bool
) -> ActionRequest:
    with audited_atomic():
        action = _locked_pending(action_id)
        seen = _seen_under_lock(action, None, via="rejection", seen=seen, under_lock=preview_under_lock)
        refusal = review_refusal(reviewer, action)
        if refusal:
            raise NotAllowed(refusal)
        _require_pending(action)
        evidence = _evidence(action, seen, edits=None, fingerprint_checked=False)
        only_review = not action.has_reviews  # as of the lock
        review = write_review(
            action,
            Review(
                action=action,
                reviewer=reviewer,
                verdict=Review.Verdict.REJECT,
                via=via,
                comment=reason,
                evidence=evidence,
            ),
        )
        if only_review:  # the push counts no approval without reading the reviews back
            action.hold_reviews([review])
        action.decision_reason = reason
        transition(
            action,
            ActionStatus.REJECTED,
            actor=Actor.user(reviewer, via),
            verb="action.rejected",
            data={"reason": reason, "evidence_digest": digest(evidence)},
        )
    return action


def cancel_action(*, action_id, agent: Agent) -> ActionRequest:
    with audited_atomic():
        action = _locked_pending(action_id, agent=agent)
        _require_pending(action)
        transition(action, ActionStatus.CANCELLED, actor=Actor.agent(agent), verb="action.cancelled")
    return action


def expire_due_actions(limit: int = 500) -> int:
    """Expire pending actions past their time to live; safe against racing reviewers."""
    now = timezone.now()
    due = list(
        ActionRequest.objects.filter(status=ActionStatus.PENDING, expires_at__lte=now)
        .order_by("expires_at")
        .values_list("id", flat=True)[:limit]
    )
    expired = 0
    for action_id in due:
        with audited_atomic():
            action = lock_action(action_id)
            if action.is_pending and action.expires_at <= timezone.now():
                transition(action, ActionStatus.EXPIRED, actor=Actor.system("beat"), verb="action.expired")
                expired += 1
    return expired


def send_due_reminders(limit: int = 500) -> int:
    """Remind the policy's channels (and its escalation channels) about actions still pending."""
    now = timezone.now()
    due = list(
        ActionRequest.objects.filter(status=ActionStatus.PENDING, remind_at__lte=now, reminded_at__isnull=True)
        .order_by("remind_at")
        .values_list("id", flat=True)[:limit]
    )
    sent = 0
    for action_id in due:
        with audited_atomic():
            action = lock_action(action_id)
            if not action.is_pending or action.reminded_at is not None:
                continue
            action.reminded_at = timezone.now()
            action.save(update_fields=["reminded_at", "updated_at"])
            channels = list(dict.fromkeys([*action.notify_channels, *action.escalate_channels]))
            audit_action(action, actor=Actor.system("beat"), verb="action.reminder_due", data={"channels": channels})
            notifications.enqueue(action, notifications.REMINDER, channels=channels)
            sent += 1
    return sent


MAX_ESCALATION_MESSAGE = 2000


def escalate_action(*, action_id, agent: Agent, message: str, addresses: list[str]) -> ActionRequest:
    """The agent asks for its pending action to be looked at now (HumanLayer's escalate_email).

    The reminder goes where the policy says (its notify and escalation channels) and, by email, to the
    ``addresses`` the agent adds, each of which must be someone who may decide the action: Countersign never
    mails people an agent picks who have no part in the decision.
    """
    message = (message or "").strip()
    if not message:
        raise InvalidInput("An escalation needs a message.", errors={"escalation_msg": ["Say why it is urgent."]})
    if len(message) > MAX_ESCALATION_MESSAGE:
        raise InvalidInput(
            "Message too long.", errors={"escalation_msg": [f"At most {MAX_ESCALATION_MESSAGE} characters."]}
        )
    with audited_atomic():
        action = _locked_pending(action_id, agent=agent)
        _require_pending(action)
        recipients = _escalation_recipients(action, addresses)
        channels = list(
            dict.fromkeys(
                [*action.notify_channels, *action.escalate_channels, *(f"email:{user.email}" for user in recipients)]
            )
        )
        if not channels:
            raise InvalidInput(
                "Nobody to escalate to: the policy names no notification channels.",
                errors={"additional_recipients": ["Name a reviewer who may decide this action."]},
            )
        audit_action(
            action,
            actor=Actor.agent(agent),
            verb="action.escalated",
            data={"message": message, "channels": channels},
        )
        notifications.enqueue(action, notifications.REMINDER, channels=channels)
    return action


def _escalation_recipients(action: ActionRequest, addresses: list[str]) -> list:

    users = []
    for address in dict.fromkeys(a.strip().lower() for a in addresses if a and a.strip()):
        user = get_user_model().objects.filter(email__iexact=address, is_active=True).first()
        if user is None or review_refusal(user, action) is not None:
            raise InvalidInput(
                "An escalation goes only to people who may decide the action.",
                errors={"additional_recipients": [f"{address} is not a reviewer who may decide this action."]},
            )
        users.append(user)
    return users
