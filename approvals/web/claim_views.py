"""Claim and release an action from its page (a soft lock: approvals.services.claims). Thin: the service checks
who may see it, records it and tells the live pages."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from approvals.errors import NotFound, ServiceError
from approvals.models import Review
from approvals.services import claims


@login_required
@require_POST
def claim(request, action_id):
    try:
        claims.claim_action(action_id=action_id, user=request.user, via=Review.Via.WEB)
    except NotFound:
        raise Http404("No such action") from None  # outside your groups: the same answer as any other read
    except ServiceError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, "Claimed: the others see that you are working on it.")
    return redirect("approvals:detail", action_id=action_id)


@login_required
@require_POST
def release(request, action_id):
    try:
        claims.release_action(action_id=action_id, user=request.user, via=Review.Via.WEB)
    except NotFound:
        raise Http404("No such action") from None
    except ServiceError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, "Released: it is nobody's now.")
    return redirect("approvals:detail", action_id=action_id)
