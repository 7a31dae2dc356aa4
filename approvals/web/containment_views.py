"""Staff's kill switches on the reviewer pages: freeze an agent (detail page), pause executions (the queue).

Thin: a staff check, then approvals.services.containment. A signed-in reviewer who is not staff gets 403,
and the attempt is audited (``access.refused``).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from agents.models import Agent
from approvals.api.refusals import record_not_staff
from approvals.errors import ServiceError
from approvals.selectors import actions as selectors
from approvals.services import containment
from audit.chain import Actor


def _require_staff(request) -> Actor:
    if not request.user.is_staff:
        record_not_staff(request, request.user, via="web")
        raise PermissionDenied("Only staff may use the kill switches.")
    return Actor.user(request.user, "web")


def _back(request):
    """Back to the action the form was on (if the user may see it), else the queue."""
    action_id = request.POST.get("action_id", "")
    if action_id:
        try:
            action = selectors.get_action_for(request.user, action_id)
        except (ValueError, ValidationError):
            action = None
        if action is not None:
            return redirect("approvals:detail", action_id=action.id)
    return redirect("approvals:queue")


@login_required
@require_POST
def freeze_agent(request, name):
    actor = _require_staff(request)
    agent = Agent.objects.filter(name=name).first()
    if agent is None:
        raise Http404("No such agent")
    if request.POST.get("unfreeze"):
        if containment.unfreeze_agent(agent, actor):
            messages.success(request, f"{agent.name} is unfrozen: its keys work again.")
        return _back(request)
    try:
        done = containment.freeze_agent(agent, request.POST.get("reason", ""), actor)
    except ServiceError as exc:
        messages.error(request, f"{agent.name} was not frozen: {exc.detail}")
    else:
        messages.success(
            request,
            f"{agent.name} is frozen: keys suspended, {done['cancelled']} pending action(s) cancelled, "
            f"{done['stopped']} execution(s) stopped.",
        )
    return _back(request)


@login_required
@require_POST
def execution_switch(request):
    actor = _require_staff(request)
    if request.POST.get("resume"):
        dispatched = containment.resume_executions(actor)
        messages.success(request, f"Executions resumed; {dispatched} held execution(s) dispatched.")
        return redirect("approvals:queue")
    try:
        containment.pause_executions(request.POST.get("reason", ""), actor)
    except ServiceError as exc:
        messages.error(request, f"Executions were not paused: {exc.detail}")
    else:
        messages.success(request, "Executions are paused: approvals are still recorded; nothing new runs.")
    return redirect("approvals:queue")
