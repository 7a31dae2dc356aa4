"""Slack's interactivity endpoint: thin; approvals.slack.interactions does the work."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from approvals.slack import interactions as slack_interactions


@csrf_exempt  # Slack signs the request instead (verified on the raw body)
@require_POST
def interactivity(request: HttpRequest) -> HttpResponse:
    reply = slack_interactions.receive(request.body, request.headers)
    return HttpResponse(reply.body, status=reply.status, content_type=reply.content_type)
