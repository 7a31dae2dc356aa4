"""The reviewer's desk beyond the queue: the dashboard and the inline check of edited parameters."""

from __future__ import annotations

from dataclasses import asdict

from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_POST

from approvals.policies import edits
from approvals.presentation.display import mark_invisible
from approvals.presentation.edit_form import edit_changes
from approvals.presentation.previews import compute_preview
from approvals.selectors import actions as selectors
from approvals.selectors import dashboard as stats
from approvals.web import charts
from approvals.web.preview_display import preview_display


@login_required
@require_GET
def dashboard(request):
    days = stats.window(request.GET.get("days"))
    board = stats.dashboard_for(request.user, days=days)
    context = {
        "page": "dashboard",
        "board": board,
        "windows": stats.WINDOWS,
        "daily": charts.daily_chart(board.per_day),
        "agents_chart": charts.rate_chart(board.by_agent, what="agent"),
        "types_chart": charts.rate_chart(board.by_type, what="action type"),
    }
    return render(request, "approvals/dashboard.html", context)


@login_required
@require_POST
def check_params(request, action_id):
    """Would these edited parameters be accepted? JSON ``{"ok", "changed", "errors", "policy"}``; decides nothing.

    With ``compare=1`` (the edit form, static/js/edit_form.js) and an accepted edit, also ``compare_html``: the edit
    against the agent's proposal and the preview recomputed from the edit against the target as it is now, drawn by
    the page's own diff partials, and ``preview`` (``kind``, ``will_fail``, ``failure``)."""
    action = selectors.get_action_for(request.user, action_id)
    if action is None:
        raise Http404("No such action")
    raw = request.POST.get("params", "")
    check = edits.check_edited_params(action, raw, reviewer=request.user)
    result = asdict(check)
    # The messages may quote the parameters: marked as the page marks them (approvals/presentation/display.py).
    result["errors"] = {
        mark_invisible(field): [mark_invisible(m) for m in messages] for field, messages in result["errors"].items()
    }
    if request.POST.get("compare") and check.ok and check.changed:
        result.update(_comparison(request, action, edits.parse_edited_params(raw) or {}))
    return JsonResponse(result)


def _comparison(request, action, edited: dict) -> dict:
    """The edit beside the proposal and the target: only for parameters the check accepted, so the preview's read
    stays inside what the execution could do (compute_preview checks that again, and records the read)."""
    preview = compute_preview(action.action_type, edited, action=action, viewer=request.user, via="web")
    changes, notice = edit_changes(action.params, edited)
    html = render_to_string(
        "approvals/_edit_compare.html",
        {"changes": changes, "notice": notice, "preview": preview_display(preview), "raw": preview},
        request=request,
    )
    return {
        "compare_html": html,
        "preview": {"kind": preview.kind, "will_fail": preview.will_fail, "failure": mark_invisible(preview.failure)},
    }
