"""Time-boxed access on the reviewer desk (issue 23): the Active access page, End early, Undo, and approving a
grant for a shorter time than the agent asked.

Thin: a permission check, then approvals.services.access. Ending access early is staff's (as in Slack and
``manage.py end_access``): a signed-in reviewer who is not staff gets 403 and the attempt is audited
(``access.refused``). A refused end or undo (already ended, nothing to take back) is audited too
(``access.end_refused`` / ``access.undo_refused``) and changes nothing. Shortening is a parameters edit: it goes
through the one approve-with-edits path (``views.approve`` -> ``services.approve_action`` ->
``policies.edits.check_edit``), which refuses a longer duration.
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from approvals.action_types.durations import HARD_MAX_SECONDS
from approvals.api.refusals import record_not_staff
from approvals.errors import InvalidInput, ServiceError
from approvals.policies.edits import parse_edited_params
from approvals.selectors import access as access_reads
from approvals.selectors import actions as selectors
from approvals.services import access as access_services
from approvals.web import views
from audit.chain import Actor, record_refusal

# The units the "shorten to" field offers, in seconds.
UNITS = {"minutes": 60, "hours": 3600, "days": 86400}


def iso_duration(seconds: int) -> str:
    """Whole seconds as the ISO 8601 duration an agent would write: 5400 -> "PT1H30M", 90000 -> "P1DT1H"."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    time = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    return "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")


def shortened_seconds(amount: str, unit: str) -> int:
    """The length a reviewer typed (a whole number of minutes, hours or days); ValueError says what is wrong."""
    if unit not in UNITS:
        raise ValueError("choose minutes, hours or days")
    text = (amount or "").strip()
    if not text.isdecimal() or not text.isascii():
        raise ValueError("type a whole number")
    seconds = int(text) * UNITS[unit]
    if seconds <= 0:
        raise ValueError("the access must last longer than zero")
    if seconds > HARD_MAX_SECONDS:
        raise ValueError("that is longer than any access Countersign grants")
    return seconds


def _visible_or_404(request, action_id):
    action = selectors.get_action_for(request.user, action_id)
    if action is None:
        raise Http404("No such action")
    return action


def _refused(request, action, verb: str, exc: ServiceError) -> None:
    """A refused end or undo, into the audit log (counted per person, verb and minute: a flood cannot fill it)."""
    record_refusal(
        actor=Actor.user(request.user, "web"),
        verb=verb,
        kind=f"{verb}:{action.id}",
        reason=exc.detail[:200],
        object_type="action",
        object_id=str(action.id),
        action_id=action.id,
        agent_name=action.agent.name,
        data={"detail": exc.detail[:500]},
    )


@login_required
@require_GET
def active_access(request):
    """Who holds what, granted by whom, until when (a countdown), and the reverts that are failing."""
    context = {
        "page": "access",
        "rows": access_reads.active_access(request.user),
        "failing": access_reads.failing_reverts(request.user),
        "counts": access_reads.access_counts(request.user),
    }
    return render(request, "approvals/access.html", context)


@login_required
@require_POST
def end_early(request, action_id):
    """Staff take a time-boxed grant back now: the revert starts at once (approvals.services.access.end_access)."""
    if not request.user.is_staff:
        record_not_staff(request, request.user, via="web")
        raise PermissionDenied("Only staff may end access early.")
    action = _visible_or_404(request, action_id)
    try:
        access_services.end_access(
            action.id, actor=Actor.user(request.user, "web"), user=request.user, reason=request.POST.get("reason", "")
        )
    except ServiceError as exc:
        _refused(request, action, "access.end_refused", exc)
        messages.error(request, f"The access was not ended: {exc.detail}")
    else:
        messages.success(request, "Ending the access now: Countersign is taking it back.")
    return _back(request, action)


@login_required
@require_POST
def undo(request, action_id):
    """Propose the reverse of a succeeded reversible action (normal policies apply); on a time-boxed grant that
    is still active, Undo is End early, and staff's alone."""
    action = _visible_or_404(request, action_id)
    lease = access_reads.lease_for(action)
    if lease is not None and lease.is_active:
        return end_early(request, action_id)
    try:
        reverse = access_services.propose_undo(action.id, user=request.user)
    except ServiceError as exc:
        _refused(request, action, "access.undo_refused", exc)
        messages.error(request, f"Nothing was undone: {exc.detail}")
        return redirect("approvals:detail", action_id=action.id)
    messages.success(request, "The undo is proposed as an action of its own: it needs the usual approvals.")
    if selectors.get_action_for(request.user, reverse.id) is None:
        return redirect("approvals:detail", action_id=action.id)  # routed to a group this reviewer is not in
    return redirect("approvals:detail", action_id=reverse.id)


@login_required
@require_POST
def approve_shortened(request, action_id):
    """Approve a time-boxed grant for less time than asked: the proposal (or the reviewer's edit of it) with
    ``duration`` replaced, sent through the one approve-with-edits path, which refuses a longer duration."""
    action = selectors.get_action_for(request.user, action_id)
    if action is None:
        return views.approve(request, action_id)  # refused and recorded there, as any hidden decision
    try:
        seconds = shortened_seconds(request.POST.get("shorten_amount", ""), request.POST.get("shorten_unit", ""))
        edited = parse_edited_params(request.POST.get("params", ""))
    except ValueError as exc:
        messages.error(request, f"The shorter duration was refused: {exc}.")
        return redirect("approvals:detail", action_id=action.id)
    except InvalidInput as exc:
        messages.error(request, f"The edited parameters were refused: {exc.detail}")
        return redirect("approvals:detail", action_id=action.id)
    params = dict(edited if edited is not None else action.effective_params)
    params["duration"] = iso_duration(seconds)
    post = request.POST.copy()
    post["params"] = json.dumps(params, ensure_ascii=False)
    request.POST = post
    return views.approve(request, action_id)


def _back(request, action):
    """Back where the form was: the Active access page, or the action."""
    if request.POST.get("next") == "access":
        return redirect("approvals:access")
    return redirect("approvals:detail", action_id=action.id)
