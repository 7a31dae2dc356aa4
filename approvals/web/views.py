"""Reviewer pages. Server-rendered; live updates re-fetch the fragments below."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from agents.models import Agent
from approvals import services
from approvals.errors import FreshAuthenticationRequired, InvalidInput, ServiceError, TargetChanged
from approvals.models import ActionRequest, ActionStatus, PolicyRule, Review
from approvals.policies import evaluation
from approvals.policies import store as policy_store
from approvals.policies.edits import parse_edited_params
from approvals.policies.separation_of_duties import eligible_reviewers, review_counts, review_refusal, uncounted_reason
from approvals.presentation import progress
from approvals.presentation.previews import compute_preview
from approvals.selectors import actions as selectors
from approvals.selectors import desk, keyset
from approvals.selectors import history as history_reads
from approvals.selectors.presenters import is_finished
from approvals.selectors.similar import rule_draft, rule_draft_url, similar_actions
from approvals.services.outcomes import VERDICT as resolution_verdict
from approvals.services.outcomes import resolution_of, resolution_refusal
from approvals.services.reviews import record_decision_refused
from approvals.sso import provider as sso_provider
from approvals.sso.session import authenticated_at
from approvals.sso.views import step_up_url
from approvals.validation import load_json
from approvals.web.evidence_display import decided_context, describe_context, shown_preview
from approvals.web.preview_display import edits_display
from approvals.web.queue_rows import queue_rows
from audit.models import AuditEvent
from catalog import registry

HISTORY_PAGE = 50


def _action_or_404(request, action_id):
    action = selectors.get_action_for(request.user, action_id)
    if action is None:
        raise Http404("No such action")
    return action


def _decidable_or_404(request, action_id, verdict: str):
    """The action to decide; deciding one the user may not even see is a refused decision (recorded), then 404."""
    try:
        return _action_or_404(request, action_id)
    except Http404:
        hidden = ActionRequest.objects.select_related("agent", "reviewer_group").filter(id=action_id).first()
        if hidden is not None:
            reason = review_refusal(request.user, hidden) or "not allowed to see this action"
            record_decision_refused(action_id, request.user, Review.Via.WEB, verdict, reason)
        raise


@login_required
@require_GET
def queue(request):
    filters = desk.QueueFilters.from_query(request.GET)
    too_slow = False
    try:
        page = desk.queue_page(
            request.user, filters, after=request.GET.get("after", ""), before=request.GET.get("before", "")
        )
    except keyset.BadCursor as exc:
        messages.error(request, f"{exc} Showing the first page.")
        query = filters.querystring()
        return redirect(reverse("approvals:queue") + (f"?{query}" if query else ""))
    except desk.TooSlow as exc:
        messages.error(request, str(exc))
        page, too_slow = desk.uncounted_page(filters), True
    context = {
        "too_slow": too_slow,
        "rows": queue_rows(page.rows),
        "desk": page,
        "filters": filters,
        "links": desk.page_links(page),
        "paged": bool(request.GET.get("after") or request.GET.get("before")),
        "sorts": [(name, label) for name, (label, _) in desk.SORTS.items()],
        "page": "queue",
    }
    return render(request, "approvals/queue.html", context)


@login_required
@require_GET
def queue_row(request, action_id):
    """One queue row, for live updates, drawn as the queue draws it; 204 when the action has left the queue."""
    action = desk.row_actions(request.user).filter(id=action_id).first()
    if action is None:
        raise Http404("No such action")
    if not action.is_pending:
        return HttpResponse(status=204)
    return render(request, "approvals/_queue_rows.html", {"rows": queue_rows([action])})


@login_required
@require_GET
def history(request):
    """Decided actions, most recently decided first, with who decided them; filtered and paged by keyset."""
    filters = history_reads.HistoryFilters.from_query(request.GET)
    try:
        page = history_reads.history_page(
            request.user, filters, before=request.GET.get("before", ""), size=HISTORY_PAGE
        )
    except keyset.BadCursor:
        messages.error(request, "That page link is not valid; showing the most recent decisions.")
        query = filters.querystring()
        return redirect(reverse("approvals:history") + (f"?{query}" if query else ""))
    context = {
        "actions": page.rows,
        "rows": [(action, page.decisions.get(action.pk)) for action in page.rows],
        "next_cursor": page.next_cursor,
        "older_link": f"?{filters.querystring(before=page.next_cursor)}" if page.next_cursor else "",
        "filters": filters,
        "status": filters.status,
        **history_reads.filter_choices(),
        "page": "history",
    }
    return render(request, "approvals/history.html", context)


def _detail_context(request, action) -> dict:
    reviews = list(action.reviews.all())
    refusal = review_refusal(request.user, action) if action.is_pending else None
    already = any(r.reviewer_id == request.user.pk for r in reviews)
    events = list(AuditEvent.objects.filter(action_id=action.id).order_by("seq"))
    approved_by = [
        r.reviewer for r in reviews if r.verdict == Review.Verdict.APPROVE and r.reviewer_id and r.withdrawn_at is None
    ]
    # An edit can change the rule in force; approvals given before it by people it does not admit don't count.
    uncounted = [(r.reviewer, uncounted_reason(r, action)) for r in reviews if uncounted_reason(r, action)]
    return {
        "action": action,
        "reviews": reviews,
        "approved_by": approved_by,
        "can_still_approve": eligible_reviewers(action, exclude={r.reviewer_id for r in reviews})
        if action.is_pending
        else [],
        "approvals": sum(1 for r in reviews if review_counts(r, action)),
        "uncounted": uncounted,
        "can_review": action.is_pending and refusal is None and not already,
        "review_refusal": refusal,
        "already_reviewed": already and action.is_pending,
        "finished": is_finished(action),
        "params_json": json.dumps(action.params, indent=2, sort_keys=True, ensure_ascii=False),
        "edits": edits_display(action.params, action.edited_params),
        "result_json": json.dumps(action.result, indent=2, sort_keys=True, ensure_ascii=False)
        if action.result is not None
        else "",
        "context_extra": {k: v for k, v in (action.context or {}).items() if k not in ("reasoning", "source", "links")},
        "events": events,
        "steps": progress.progress_steps(action),
        "confirm_risk": progress.needs_confirmation(action),
        **_resolution_context(request.user, action),
        **_decision_context(action),
    }


def _decision_context(action) -> dict:
    """Who decided it and when (templates/approvals/_live_state.html; live.js tells a reviewer with a draft)."""
    decision = history_reads.decision_of(action)
    return {"decision": decision, "decision_sentence": history_reads.decision_sentence(decision) if decision else ""}


def _resolution_context(user, action) -> dict:
    """Whether this user may settle the action's unknown outcome (and if not, why), and how it was settled."""
    resolution = resolution_of(action)
    if action.status != ActionStatus.UNKNOWN:
        return {"can_resolve": False, "resolve_refusal": None, "resolution": resolution}
    refusal = resolution_refusal(user, action)
    return {"can_resolve": refusal is None, "resolve_refusal": refusal, "resolution": resolution}


@login_required
@require_GET
def detail(request, action_id):
    action = _action_or_404(request, action_id)
    context = {**_detail_context(request, action), "page": "detail", **describe_context(action)}
    context.update(decided_context(action, context["reviews"]))
    # Not in the live fragment's context: counted once per page load, not on every live refresh.
    context["similar"] = similar_actions(request.user, action)
    context["rule_draft_url"] = rule_draft_url(action)
    if action.is_pending:
        # Read from the live target now; the approve form carries its fingerprint back (stale-preview guard).
        preview = compute_preview(action.action_type, action.params, action=action, viewer=request.user, via="web")
        context["preview"] = shown_preview(preview)
    return render(request, "approvals/detail.html", context)


@login_required
@require_GET
def detail_live(request, action_id):
    """The part of the detail page that changes as the action moves on."""
    action = _action_or_404(request, action_id)
    return render(request, "approvals/_detail_live.html", _detail_context(request, action))


@login_required
@require_POST
def approve(request, action_id):
    action = _decidable_or_404(request, action_id, "approve")
    if (
        progress.needs_confirmation(action)
        and request.POST.get("confirm_risk") != "yes"
        and action.is_pending
        and review_refusal(request.user, action) is None
    ):
        messages.error(
            request, f"This is a {action.risk}-risk action: confirm that you checked what it will do, then approve."
        )
        return redirect("approvals:detail", action_id=action_id)
    try:
        edited = parse_edited_params(request.POST.get("params", ""))
    except InvalidInput as exc:
        messages.error(request, f"The edited parameters were refused: {exc.detail}")
        return redirect("approvals:detail", action_id=action_id)
    try:
        approved = services.approve_action(
            action_id=action_id,
            reviewer=request.user,
            via=Review.Via.WEB,
            comment=request.POST.get("comment", ""),
            edited_params=edited,
            preview_fingerprint=request.POST.get("preview_fingerprint") or None,
            override_reason=request.POST.get("override_reason", ""),
            authenticated_at=authenticated_at(request),
        )
    except FreshAuthenticationRequired as exc:
        # Step-up: through the provider (prompt=login, max_age) and back to this decision (docs/sso.md).
        if not sso_provider.enabled():
            messages.error(request, _message(exc))
            return redirect("approvals:detail", action_id=action_id)
        messages.info(
            request, f"This action needs a fresh sign-in with {sso_provider.display_name()}; then approve once more."
        )
        detail = reverse("approvals:detail", kwargs={"action_id": action_id})
        return redirect(step_up_url(detail, exc.extra["fresh_auth_minutes"]))
    except TargetChanged:
        messages.error(request, "The target changed since you reviewed it. Here is the fresh preview; approve again.")
    except ServiceError as exc:
        messages.error(request, _message(exc))  # says who decided and when (services.reviews)
    else:
        mine = approved.reviews.filter(reviewer=request.user, withdrawn_at__isnull=True).first()
        not_counted = uncounted_reason(mine, approved) if mine else ""
        if not_counted:
            messages.warning(
                request,
                f"Your approval is recorded but does not count ({not_counted}). {approved.policy_explanation}",
            )
        else:
            messages.success(request, "Approved.")
        if selectors.get_action_for(request.user, action_id) is None:
            return redirect("approvals:queue")  # the edit moved it to a group you are not in
    return redirect("approvals:detail", action_id=action_id)


@login_required
@require_POST
def reject(request, action_id):
    _decidable_or_404(request, action_id, "reject")
    try:
        services.reject_action(
            action_id=action_id, reviewer=request.user, via=Review.Via.WEB, reason=request.POST.get("reason", "")
        )
    except ServiceError as exc:
        messages.error(request, _message(exc))  # says who decided and when (services.reviews)
    else:
        messages.success(request, "Rejected; the reason goes back to the agent.")
    return redirect("approvals:detail", action_id=action_id)


@login_required
@require_POST
def resolve(request, action_id):
    """A reviewer who checked the target settles an execution whose outcome is unknown."""
    _decidable_or_404(request, action_id, resolution_verdict)
    outcome = request.POST.get("outcome", "")
    try:
        services.resolve_unknown_outcome(
            action_id, user=request.user, outcome=outcome, note=request.POST.get("note", ""), via=Review.Via.WEB
        )
    except ServiceError as exc:
        messages.error(request, _message(exc))
    else:
        messages.success(
            request,
            "Recorded: it took effect (succeeded)."
            if outcome == ActionStatus.SUCCEEDED
            else "Recorded: it did not happen (failed).",
        )
    return redirect("approvals:detail", action_id=action_id)


def _message(exc: ServiceError) -> str:
    details = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.errors.items())
    return f"{exc.detail} {details}".strip()


@login_required
@require_GET
def policies(request):
    """The rules in force, and a simulator: what would happen if an agent proposed this?"""
    version, _ = policy_store.active_rules()
    rules = PolicyRule.objects.order_by("position", "name")
    form = {k: request.GET.get(k, "") for k in ("agent", "action_type", "params", "on_behalf_of")}
    # "Make this a rule" from an action's page: its parameters (read as that reviewer may) and a draft rule.
    draft = rule_draft(request.user, request.GET)
    if draft and draft["action"] is not None and not form["params"]:
        form["params"] = json.dumps(draft["action"].effective_params, indent=2, sort_keys=True, ensure_ascii=False)
    result, error = None, ""
    if form["agent"] or form["action_type"]:
        try:
            params = load_json(form["params"] or "{}")
            if not isinstance(params, dict):
                raise ValueError("the parameters must be a JSON object")
            result = evaluation.simulate(
                agent_name=form["agent"],
                action_type=form["action_type"],
                params=params,
                on_behalf_of=form["on_behalf_of"],
            )
        except ValueError as exc:  # PolicyError and JSON errors alike
            error = str(exc)
    context = {
        "page": "policies",
        "version": version,
        "rules": rules,
        "form": form,
        "result": result,
        "error": error,
        "draft": draft,
        "agents": Agent.objects.filter(is_active=True).order_by("name").values_list("name", flat=True),
        "action_types": [t.name for t in registry.all_types()],
    }
    return render(request, "approvals/policies.html", context)
