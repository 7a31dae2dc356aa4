"""Email notifications: "approval needed" when an action starts waiting, and reminders.

Plain text through Django's email backend. Agent-supplied text goes only into
the body and a sanitised subject (no header injection), with invisible
characters and look-alike letters marked as on the pages (approvals/presentation/display.py)
and a warning when there are any. Decisions are not mailed: the person who
decided knows, and the agent learns through its API.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.utils import timezone

from approvals.models import ActionRequest, ActionStatus, Notification
from approvals.notify.notifications import REMINDER, STATUS
from approvals.presentation.display import action_findings, mark_invisible
from audit.chain import Actor, record_event

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def _subject(prefix: str, action: ActionRequest) -> str:
    # Marked first (a control character becomes ⟨U+…⟩), then what is left of line breaks folded.
    return f"{prefix}: {_CONTROL.sub(' ', mark_invisible(action.summary))}"[:200]


def _body(action: ActionRequest, lead: str) -> str:
    link = f"{settings.COUNTERSIGN_BASE_URL}/actions/{action.id}"
    shown = mark_invisible
    findings = action_findings(action)
    warning = (
        [
            "Warning: this proposal contains characters you could not see or could misread. They are shown",
            "marked, like ⟨U+202E⟩; what runs is exactly what the agent sent.",
            *(f"  - {f}" for f in findings),
            "",
        ]
        if findings
        else []
    )
    lines = [
        lead,
        "",
        *warning,
        f"Summary:     {shown(action.summary)}",
        f"Agent:       {shown(action.agent.name)} (owner {action.agent.owner.get_username()})",
        *([f"On behalf of: {shown(action.on_behalf_of)}"] if action.on_behalf_of else []),
        f"Action type: {action.action_type}",
        f"Risk:        {action.risk}",
        f"Policy:      {shown(action.policy_explanation)}",
        f"Expires:     {action.expires_at:%Y-%m-%d %H:%M} UTC",
        "",
        f"Review it:   {link}",
    ]
    return "\n".join(lines)


def send(action: ActionRequest, event: str, target: str) -> None:
    channel = f"email:{target}"
    existing = Notification.objects.filter(action=action, channel=channel).first()
    if event == STATUS:
        if action.status != ActionStatus.PENDING or existing is not None:
            return  # announced once; decisions are not mailed
        subject, lead = _subject("Approval needed", action), "An agent is waiting for a human decision."
    elif event == REMINDER:
        if action.status != ActionStatus.PENDING:
            return
        subject, lead = _subject("Reminder, still waiting", action), "This action is still waiting for a decision."
    else:
        return
    EmailMessage(
        subject=subject, body=_body(action, lead), from_email=settings.COUNTERSIGN_EMAIL_FROM, to=[target]
    ).send()
    with transaction.atomic():
        row, _ = Notification.objects.get_or_create(action=action, channel=channel)
        row.rendered_status = action.status
        row.reminders_sent += 1 if event == REMINDER else 0
        row.updated_at = timezone.now()
        row.save()
        record_event(
            actor=Actor.system("worker"),
            verb="notification.sent",
            object_type="action",
            object_id=str(action.id),
            action_id=action.id,
            agent_name=action.agent.name,
            data={"channel": channel, "event": event},
        )
