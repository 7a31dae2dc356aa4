"""Reviewer pages. Server-rendered; live updates re-fetch the fragments below."""

from __future__ import annotations

import json
from datetime import datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from approvals import selectors, services
from approvals.errors import ServiceError
from approvals.models import ActionStatus, AuditEvent, Review
from approvals.permissions import review_refusal
from approvals.presenters import is_finished

HISTORY_PAGE = 50


def _action_or_404(request, action_id):
    action = selectors.get_action_for(request.user, action_id)
    if action is None:
        raise Http404("No such action")
    return action


def _row_context(action, user) -> dict:
    reviews = list(action.reviews.all())
    return {
        "action": action,
        "approvals": sum(1 for r in reviews if r.verdict == Review.Verdict.APPROVE),
        "can_review": action.is_pending and review_refusal(user, action) is None,
    }


@login_required
@require_GET
def queue(request):
    actions = list(
        selectors.actions_for(request.user).filter(status=ActionStatus.PENDING).order_by("-created_at", "-id")[:200]
    )
    rows = [_row_context(a, request.user) for a in actions]
    return render(request, "approvals/queue.html", {"rows": rows, "page": "queue"})


@login_required
@require_GET
def queue_row(request, action_id):
    """One queue row, for live updates; 204 when the action has left the queue."""
    action = _action_or_404(request, action_id)
    if not action.is_pending:
        return HttpResponse(status=204)
    return render(request, "approvals/_queue_row.html", _row_context(action, request.user))


@login_required
@require_GET
def history(request):
    qs = selectors.actions_for(request.user).exclude(status=ActionStatus.PENDING).order_by("-created_at", "-id")
    before = request.GET.get("before")
    if before:
        try:
            created, _, last_id = before.partition("|")
            qs = qs.filter(created_at__lte=datetime.fromisoformat(created)).exclude(
                created_at=datetime.fromisoformat(created), id__gte=last_id
            )
        except ValueError:
            messages.error(request, "That page link is not valid; showing the newest actions.")
            return redirect("approvals:history")
    page = list(qs[: HISTORY_PAGE + 1])
    next_cursor = None
    if len(page) > HISTORY_PAGE:
        page = page[:HISTORY_PAGE]
        next_cursor = f"{page[-1].created_at.isoformat()}|{page[-1].id}"
    return render(request, "approvals/history.html", {"actions": page, "next_cursor": next_cursor, "page": "history"})


def _detail_context(request, action) -> dict:
    reviews = list(action.reviews.all())
    refusal = review_refusal(request.user, action) if action.is_pending else None
    already = any(r.reviewer_id == request.user.pk for r in reviews)
    events = list(AuditEvent.objects.filter(action_id=action.id).order_by("seq"))
    return {
        "action": action,
        "reviews": reviews,
        "approvals": sum(1 for r in reviews if r.verdict == Review.Verdict.APPROVE),
        "can_review": action.is_pending and refusal is None and not already,
        "review_refusal": refusal,
        "already_reviewed": already and action.is_pending,
        "finished": is_finished(action),
        "params_json": json.dumps(action.params, indent=2, sort_keys=True, ensure_ascii=False),
        "edited_json": json.dumps(action.edited_params, indent=2, sort_keys=True, ensure_ascii=False)
        if action.edited_params is not None
        else "",
        "result_json": json.dumps(action.result, indent=2, sort_keys=True, ensure_ascii=False)
        if action.result is not None
        else "",
        "context_extra": {k: v for k, v in (action.context or {}).items() if k not in ("reasoning", "source", "links")},
        "events": events,
    }


@login_required
@require_GET
def detail(request, action_id):
    action = _action_or_404(request, action_id)
    return render(request, "approvals/detail.html", {**_detail_context(request, action), "page": "detail"})


@login_required
@require_GET
def detail_live(request, action_id):
    """The part of the detail page that changes as the action moves on."""
    action = _action_or_404(request, action_id)
    return render(request, "approvals/_detail_live.html", _detail_context(request, action))


@login_required
@require_POST
def approve(request, action_id):
    _action_or_404(request, action_id)
    edited = None
    raw = request.POST.get("params", "").strip()
    if raw:
        try:
            edited = json.loads(raw)
        except ValueError as exc:
            messages.error(request, f"The edited parameters are not valid JSON: {exc}")
            return redirect("approvals:detail", action_id=action_id)
        if not isinstance(edited, dict):
            messages.error(request, "The edited parameters must be a JSON object.")
            return redirect("approvals:detail", action_id=action_id)
    try:
        services.approve_action(
            action_id=action_id,
            reviewer=request.user,
            via=Review.Via.WEB,
            comment=request.POST.get("comment", ""),
            edited_params=edited,
        )
    except ServiceError as exc:
        messages.error(request, _message(exc))
    else:
        messages.success(request, "Approved.")
    return redirect("approvals:detail", action_id=action_id)


@login_required
@require_POST
def reject(request, action_id):
    _action_or_404(request, action_id)
    try:
        services.reject_action(
            action_id=action_id, reviewer=request.user, via=Review.Via.WEB, reason=request.POST.get("reason", "")
        )
    except ServiceError as exc:
        messages.error(request, _message(exc))
    else:
        messages.success(request, "Rejected; the reason goes back to the agent.")
    return redirect("approvals:detail", action_id=action_id)


def _message(exc: ServiceError) -> str:
    details = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.errors.items())
    return f"{exc.detail} {details}".strip()
