"""The queue's triage mode (static/js/triage.js): the detail pane beside the list, and decisions answered in JSON
so the page moves to the next action without reloading. Thin: every decision goes through the services."""

from __future__ import annotations

import json

from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from approvals import services
from approvals.errors import ServiceError
from approvals.models import Review
from approvals.policies.separation_of_duties import review_counts, review_refusal
from approvals.presentation import progress
from approvals.presentation.previews import compute_preview
from approvals.selectors import actions as selectors
from approvals.services import triage, undo
from approvals.web.evidence_display import shown_preview
from approvals.web.views import _decidable_or_404, _message

# What the reviewer types in the high-risk confirmation (templates/approvals/_triage.html).
CONFIRM_WORD = "approve"


def _problem(exc: ServiceError) -> JsonResponse:
    return JsonResponse({"ok": False, "message": _message(exc)}, status=exc.status)


def _decided(request, action, message: str) -> JsonResponse:
    deadline = undo.undo_deadline(action, request.user)
    reviews = list(action.reviews.all())
    return JsonResponse(
        {
            "ok": True,
            "id": str(action.id),
            "status": action.status,
            "approvals": sum(1 for r in reviews if review_counts(r, action)),
            "required": action.required_approvals,
            "message": message,
            "undo_until": deadline.isoformat() if deadline else None,
            "undo_url": reverse("approvals:triage-withdraw", args=[action.id]) if deadline else None,
        }
    )


@login_required
@require_GET
def pane(request, action_id):
    """The detail pane for one action: what it will do, the preview from the live target, and the decision."""
    action = selectors.get_action_for(request.user, action_id)
    if action is None:
        raise Http404("No such action")
    context = {
        "action": action,
        "params_json": json.dumps(action.params, indent=2, sort_keys=True, ensure_ascii=False),
        "approvals": sum(1 for r in action.reviews.all() if review_counts(r, action)),
        "refusal": review_refusal(request.user, action) if action.is_pending else None,
        "already": action.reviews.filter(reviewer=request.user, withdrawn_at__isnull=True).exists(),
        "confirm_risk": progress.needs_confirmation(action),
    }
    if action.is_pending:
        preview = compute_preview(action.action_type, action.params, action=action, viewer=request.user, via="web")
        context["preview"] = shown_preview(preview)
    return render(request, "approvals/_triage_pane.html", context)


@login_required
@require_POST
def approve(request, action_id):
    action = _decidable_or_404(request, action_id, "approve")
    if progress.needs_confirmation(action) and request.POST.get("confirm", "").strip().lower() != CONFIRM_WORD:
        return JsonResponse(
            {"ok": False, "message": f"This is a {action.risk}-risk action: type “{CONFIRM_WORD}” to confirm."},
            status=400,
        )
    try:
        approved = services.approve_action(
            action_id=action_id,
            reviewer=request.user,
            via=Review.Via.WEB,
            preview_fingerprint=request.POST.get("preview_fingerprint") or None,
            override_reason=request.POST.get("override_reason", ""),
        )
    except ServiceError as exc:
        return _problem(exc)
    return _decided(request, approved, "Approved." if approved.status != "pending" else "Approval recorded.")


@login_required
@require_POST
def reject(request, action_id):
    _decidable_or_404(request, action_id, "reject")
    try:
        rejected = services.reject_action(
            action_id=action_id, reviewer=request.user, via=Review.Via.WEB, reason=request.POST.get("reason", "")
        )
    except ServiceError as exc:
        return _problem(exc)
    return _decided(request, rejected, "Rejected; the reason goes back to the agent.")


@login_required
@require_POST
def withdraw(request, action_id):
    """Undo: the reviewer takes back their approval within the window (approvals.services.undo)."""
    try:
        action = undo.withdraw_approval(action_id, request.user, via=Review.Via.WEB)
    except ServiceError as exc:
        return _problem(exc)
    return JsonResponse({"ok": True, "id": str(action.id), "status": action.status, "message": "Approval undone."})


@login_required
@require_POST
def bulk(request):
    """Approve or reject the selected low-risk actions of one type, each through the services."""
    try:
        results = triage.decide_in_bulk(
            request.POST.getlist("ids"),
            request.user,
            verdict=request.POST.get("verdict", ""),
            via=Review.Via.WEB,
            reason=request.POST.get("reason", ""),
        )
    except ServiceError as exc:
        return _problem(exc)
    decided = [r for r in results if r.ok]
    undoable, deadlines = [], []
    for result in decided:
        action = selectors.get_action_for(request.user, result.action_id)
        deadline = undo.undo_deadline(action, request.user) if action is not None else None
        if deadline is not None:
            undoable.append(
                {"id": result.action_id, "undo_url": reverse("approvals:triage-withdraw", args=[action.id])}
            )
            deadlines.append(deadline)
    return JsonResponse(
        {
            "ok": len(decided) == len(results),
            "results": [r.__dict__ for r in results],
            "message": f"{len(decided)} of {len(results)} decided.",
            "undo": undoable,
            "undo_until": max(deadlines).isoformat() if deadlines else None,
        }
    )
