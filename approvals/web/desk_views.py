"""The reviewer's desk beyond the queue: the dashboard and the inline check of edited parameters."""

from __future__ import annotations

from dataclasses import asdict

from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from approvals.policies import edits
from approvals.presentation.display import mark_invisible
from approvals.selectors import actions as selectors
from approvals.selectors import dashboard as stats
from approvals.web import charts


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
    """Would these edited parameters be accepted? JSON ``{"ok", "changed", "errors"}``; decides nothing."""
    action = selectors.get_action_for(request.user, action_id)
    if action is None:
        raise Http404("No such action")
    result = asdict(edits.check_edited_params(action, request.POST.get("params", ""), reviewer=request.user))
    # The messages may quote the parameters: marked as the page marks them (approvals/presentation/display.py).
    result["errors"] = {
        mark_invisible(field): [mark_invisible(m) for m in messages] for field, messages in result["errors"].items()
    }
    return JsonResponse(result)
