"""What Countersign shows in Slack: an action in its current state (Block Kit), its result, a
reminder, and the modal that asks for a rejection's reason.

Pure functions of what they are given: no database query, no network. All
text an agent wrote is escaped for mrkdwn (``&``, ``<``, ``>``), so it can
neither mention anyone (``<!channel>``) nor disguise a link, and code-block
fences in it are broken up so it cannot leave the block it is shown in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from approvals.action_types import registry
from approvals.action_types.base import Preview
from approvals.diffs import json_diff, text_diff
from approvals.models import ActionRequest, ActionStatus, Review

# Interaction ids: the buttons' action_id and the modal's callback_id come back in Slack's payloads.
APPROVE = "countersign_approve"
REJECT = "countersign_reject"
OPEN = "countersign_open"
DECIDE_BLOCK = "countersign_decide"
REJECT_VIEW = "countersign_reject_modal"
REASON_BLOCK = "countersign_reason"
REASON_INPUT = "reason"

MAX_HEADER = 150  # Slack's limit for a header block
MAX_REASON = 2000  # the service layer's limit for a comment or reason
EXCERPT_LINES = 20
EXCERPT_LINE_CHARS = 160
EXCERPT_CHARS = 1800
PARAM_KEYS = 8
PARAM_VALUE_CHARS = 120
RESULT_CHARS = 2500

HEADLINES = {
    ActionStatus.PENDING: ":hourglass_flowing_sand: Approval needed",
    ActionStatus.APPROVED: ":white_check_mark: Approved",
    ActionStatus.EXECUTING: ":gear: Running",
    ActionStatus.SUCCEEDED: ":white_check_mark: Done",
    ActionStatus.FAILED: ":warning: Failed",
    ActionStatus.REJECTED: ":x: Rejected",
    ActionStatus.EXPIRED: ":hourglass: Expired",
    ActionStatus.CANCELLED: ":no_entry_sign: Withdrawn",
}
RISK_MARKS = {"low": ":large_green_circle:", "medium": ":large_yellow_circle:", "high": ":red_circle:"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def escape(text: Any) -> str:
    """Text for a mrkdwn field: Slack's three control characters escaped, nothing else touched."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _one_line(text: Any) -> str:
    return _CONTROL.sub(" ", str(text)).strip()


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def code_block(lines: Sequence[str], limit: int = 2800) -> str:
    """Lines in a code block that fits a section (3000 characters, counted after escaping)."""
    body = "\n".join(escape(line).replace("```", "`\u200b`\u200b`") for line in lines)
    return f"```{_clip(body, limit)}```"


def slack_date(at: datetime | None) -> str:
    """A date every reader sees in their own time zone (the fallback after | is UTC)."""
    if at is None:
        return "—"
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} at {{time}}|{at:%Y-%m-%d %H:%M} UTC>"


def action_link(base_url: str, action: ActionRequest) -> str:
    return f"{base_url}/actions/{action.id}"


def button_value(action: ActionRequest, fingerprint: str) -> str:
    """What the Approve and Reject buttons carry back: the action and the preview the reviewer saw."""
    return json.dumps({"action": str(action.id), "fingerprint": fingerprint}, separators=(",", ":"))


def parse_button_value(value: str) -> tuple[str, str | None]:
    """(action id, fingerprint) from a button's value; raises ValueError when it is not ours."""
    data = json.loads(value)
    if not isinstance(data, dict) or not isinstance(data.get("action"), str):
        raise ValueError("not a Countersign button value")
    fingerprint = data.get("fingerprint")
    return data["action"], fingerprint if isinstance(fingerprint, str) else None


# --- the message --------------------------------------------------------------------------------


def action_message(
    action: ActionRequest,
    *,
    reviews: Sequence[Review],
    base_url: str,
    preview: Preview | None = None,
    fingerprint: str = "",
) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) for ``action`` as it is now; buttons only while it is pending."""
    link = action_link(base_url, action)
    headline = HEADLINES.get(action.status, action.status)
    approvals = [r for r in reviews if r.verdict == Review.Verdict.APPROVE]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(f"{headline}: {_one_line(action.summary)}", MAX_HEADER)},
        },
        {"type": "section", "fields": _fields(action, len(approvals))},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Policy:* {escape(action.policy_explanation)}"}},
    ]
    params = _params_text(action)
    if params:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": params}})
    if action.is_pending:
        if preview is not None:
            blocks.extend(preview_blocks(preview))
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _progress(action, approvals)}]})
        blocks.append(_buttons(action, link, fingerprint))
    else:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": outcome_text(action, reviews)}})
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{link}|Open in Countersign>"}]})
    text = escape(f"{headline}: {_one_line(action.summary)} (agent {action.agent.name})")
    return text, blocks


def _fields(action: ActionRequest, approvals: int) -> list[dict[str, str]]:
    owner = action.agent.owner.get_username() if action.agent.owner_id else "nobody"
    risk = f"{RISK_MARKS.get(action.risk, ':rotating_light:')} {action.risk}"
    when = (
        ("*Expires*", slack_date(action.expires_at))
        if action.is_pending
        else ("*Decided*", slack_date(action.decided_at or action.finished_at))
    )
    pairs = [
        ("*Agent*", f"{escape(action.agent.name)} (owner {escape(owner)})"),
        ("*On behalf of*", escape(action.on_behalf_of) if action.on_behalf_of else "—"),
        ("*Risk*", risk),
        ("*Action type*", escape(action.action_type)),
        ("*Approvals*", f"{approvals} of {action.required_approvals}"),
        when,
    ]
    return [{"type": "mrkdwn", "text": f"{label}\n{value}"} for label, value in pairs]


def _params_text(action: ActionRequest) -> str:
    params = action.effective_params
    if not isinstance(params, dict) or not params:
        return ""
    title = "*Parameters* (edited by a reviewer)" if action.edited_params is not None else "*Parameters*"
    lines = [title]
    for key in list(params)[:PARAM_KEYS]:
        value = escape(_clip(json.dumps(params[key], ensure_ascii=False, sort_keys=True), PARAM_VALUE_CHARS))
        lines.append(f"• {escape(_one_line(key))}: `{value.replace('`', chr(39))}`")
    if len(params) > PARAM_KEYS:
        lines.append(f"… and {len(params) - PARAM_KEYS} more in Countersign")
    return "\n".join(lines)


def _progress(action: ActionRequest, approvals: Sequence[Review]) -> str:
    group = action.reviewer_group.name if action.reviewer_group_id else "reviewers"
    needed = action.required_approvals
    if not approvals:
        return f"Needs {needed} approval{'s' if needed != 1 else ''} from {escape(group)}."
    by = ", ".join(_who(r) for r in approvals)
    return f"*{len(approvals)} of {needed} approvals* so far: {by}. Needs {needed - len(approvals)} more."


def _who(review: Review) -> str:
    name = review.reviewer.get_username() if review.reviewer_id else "policy"
    return f"*{escape(name)}* (via {review.via})"


def outcome_text(action: ActionRequest, reviews: Sequence[Review]) -> str:
    """Who decided, when, and what happened since."""
    status = action.status
    decided = slack_date(action.decided_at)
    if status == ActionStatus.REJECTED:
        rejection = next((r for r in reviews if r.verdict == Review.Verdict.REJECT), None)
        by = _who(rejection) if rejection else "policy"
        lines = _clip(action.decision_reason or "", 1500).splitlines()[:10]
        reason = "\n".join(f">{escape(line)}" for line in lines)
        return f"Rejected by {by} on {decided}." + (f"\n{reason}" if reason else "")
    if status == ActionStatus.EXPIRED:
        approvals = sum(1 for r in reviews if r.verdict == Review.Verdict.APPROVE)
        return f"Expired on {decided} with {approvals} of {action.required_approvals} approvals; nothing was run."
    if status == ActionStatus.CANCELLED:
        return f"Withdrawn by the agent on {decided}; nothing was run."
    by = ", ".join(_who(r) for r in reviews if r.verdict == Review.Verdict.APPROVE) or "policy"
    text = f"Approved by {by} on {decided}."
    action_type = registry.get(action.action_type)
    if status == ActionStatus.APPROVED:
        executes = action_type is None or action_type.executes
        text += " Countersign runs it next." if executes else " The agent carries it out itself."
    elif status == ActionStatus.EXECUTING:
        text += " Running now."
    elif status in (ActionStatus.SUCCEEDED, ActionStatus.FAILED):
        outcome = "succeeded" if status == ActionStatus.SUCCEEDED else "failed"
        text += f" Execution {outcome} on {slack_date(action.finished_at)}; the result is in the thread."
    return text


def _buttons(action: ActionRequest, link: str, fingerprint: str) -> dict[str, Any]:
    value = button_value(action, fingerprint)
    approve: dict[str, Any] = {
        "type": "button",
        "action_id": APPROVE,
        "text": {"type": "plain_text", "text": "Approve"},
        "style": "primary",
        "value": value,
    }
    if action.risk in ("high", "critical"):
        approve["confirm"] = {
            "title": {"type": "plain_text", "text": f"Approve a {action.risk}-risk action?"},
            "text": {"type": "mrkdwn", "text": f"*{escape(_one_line(action.summary))}*"},
            "confirm": {"type": "plain_text", "text": "Approve"},
            "deny": {"type": "plain_text", "text": "Cancel"},
        }
    return {
        "type": "actions",
        "block_id": DECIDE_BLOCK,
        "elements": [
            approve,
            {
                "type": "button",
                "action_id": REJECT,
                "text": {"type": "plain_text", "text": "Reject…"},
                "style": "danger",
                "value": value,
            },
            {
                "type": "button",
                "action_id": OPEN,
                "text": {"type": "plain_text", "text": "Open in Countersign"},
                "url": link,
            },
        ],
    }


# --- the preview excerpt ------------------------------------------------------------------------


def preview_blocks(preview: Preview) -> list[dict[str, Any]]:
    """What the action would change, read from the live target: a diff excerpt, capped."""
    if preview.kind == "unavailable":
        text = f"*Preview unavailable:* {escape(preview.error or 'the target could not be read')}"
        return [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    lines = excerpt_lines(preview)
    title = escape(_clip(_one_line(preview.title), 300)) if preview.title else ""
    if not lines and not title:
        return []
    text = "*What it will change*" + (f" — {title}" if title else "")
    if lines:
        text += "\n" + code_block(_cap(lines), limit=2800 - len(text))
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if preview.notes:
        notes = " ".join(escape(_one_line(n)) for n in preview.notes[:5])
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(notes, 1000)}]})
    return blocks


def excerpt_lines(preview: Preview) -> list[str]:
    if preview.kind == "text":
        diff = text_diff(_as_text(preview.before), _as_text(preview.after))
        lines = []
        for sign, _number, segments in diff.unified():
            if sign == "…":
                lines.append(f"… {segments[0].text}")
            else:
                lines.append(sign + "".join(s.text for s in segments))
        return lines
    if preview.kind == "json":
        changes, _ = json_diff(preview.before, preview.after)
        marks = {"added": "+", "removed": "-", "changed": "~"}
        lines = []
        for change in changes:
            before, after = _compact(change.before), _compact(change.after)
            shown = {"added": after, "removed": before, "changed": f"{before} → {after}"}[change.kind]
            lines.append(f"{marks[change.kind]} {change.path}: {shown}")
        return lines or ["(no change: the target already looks like this)"]
    if preview.kind == "message":
        after = preview.after if isinstance(preview.after, dict) else {"text": _as_text(preview.after)}
        return str(after.get("text") or "").splitlines()
    return []


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _compact(value: Any) -> str:
    return _clip(json.dumps(value, ensure_ascii=False, sort_keys=True), 80)


def _cap(lines: list[str]) -> list[str]:
    kept: list[str] = []
    size = 0
    for line in lines[:EXCERPT_LINES]:
        line = _clip(line, EXCERPT_LINE_CHARS)
        if size + len(line) > EXCERPT_CHARS:
            break
        kept.append(line)
        size += len(line) + 1
    if len(kept) < len(lines):
        kept.append(f"… {len(lines) - len(kept)} more line(s) in Countersign")
    return kept


# --- thread replies and the modal -----------------------------------------------------------------


def result_message(action: ActionRequest) -> tuple[str, list[dict[str, Any]]]:
    """The execution's outcome, for the message's thread."""
    result = action.result if isinstance(action.result, dict) else {}
    if action.status == ActionStatus.SUCCEEDED:
        lead = ":white_check_mark: *Executed.*"
    else:
        lead = f":warning: *Execution failed:* {escape(_one_line(result.get('error') or 'unknown error'))}"
    body = json.dumps(result, indent=2, sort_keys=True, ensure_ascii=False)
    body = (
        body
        if len(body) <= RESULT_CHARS
        else body[:RESULT_CHARS] + "\n… (truncated; the full result is in Countersign)"
    )
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": lead}},
        {"type": "section", "text": {"type": "mrkdwn", "text": code_block(body.splitlines())}},
    ]
    return lead, blocks


def reminder_text(action: ActionRequest, approvals: int, base_url: str) -> str:
    return (
        f":alarm_clock: Still waiting for a decision: {approvals} of {action.required_approvals} approvals, "
        f"expires {slack_date(action.expires_at)}. <{action_link(base_url, action)}|Review it in Countersign>"
    )


def reject_modal(action: ActionRequest, *, channel: str, message_ts: str) -> dict[str, Any]:
    """The modal a Reject click opens; its submission carries the reason (view_submission)."""
    metadata = json.dumps({"action": str(action.id), "channel": channel, "ts": message_ts}, separators=(",", ":"))
    return {
        "type": "modal",
        "callback_id": REJECT_VIEW,
        "private_metadata": metadata,
        "title": {"type": "plain_text", "text": "Reject the action"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"*{escape(_one_line(action.summary))}*\nThe reason goes back to the agent to adapt.",
                },
            },
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": {"type": "plain_text", "text": "Why reject it?"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "min_length": 1,
                    "max_length": MAX_REASON,
                },
            },
        ],
    }
