"""What Countersign shows in Slack: an action in its current state (Block Kit), its result, a
reminder, and the modal that asks for a rejection's reason.

Pure functions of what they are given: no database query, no network.

Agent text is shown as it is, never as Slack formatting, and always within Slack's limits:

- it goes into ``plain_text`` objects, which Slack never parses for ``*bold*``, ``_italic_``, ``~strike~``,
  code, ``>`` quotes, mentions (``<!channel>``, ``<@U…>``) or links; only Countersign's own words and
  dates are ``mrkdwn``;
- invisible and reordering characters, and look-alike letters in mixed-script names, are marked
  (``⟨U+202E⟩``, approvals/presentation/display.py), as on the pages;
- every text is escaped first (``&``, ``<``, ``>``), then clipped to Slack's documented limit for its
  field, measured on the escaped text (``clip``): never inside an entity, a ``<…>`` token, a marker
  or a character with its combining marks. Slack refuses a message with ``invalid_blocks`` when any
  field is over its limit, which would keep the action out of the channel reviewers watch.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from django.utils import timezone

from approvals.action_types.durations import DurationError, describe_seconds, parse_duration
from approvals.models import ActionRequest, ActionStatus, Review
from approvals.policies.separation_of_duties import review_counts
from approvals.presentation.diffs import json_diff, text_diff
from approvals.presentation.display import MARK_CLOSE, MARK_OPEN, action_findings, mark_invisible
from approvals.services.outcomes import resolution_of
from catalog import registry
from catalog.base import Preview

# Interaction ids: the buttons' action_id and the modal's callback_id come back in Slack's payloads.
APPROVE = "countersign_approve"
REJECT = "countersign_reject"
OPEN = "countersign_open"
END_ACCESS = "countersign_end_access"  # staff take a time-boxed grant back now (issue 23)
ACCESS_BLOCK = "countersign_access"
DECIDE_BLOCK = "countersign_decide"
REJECT_VIEW = "countersign_reject_modal"
REASON_BLOCK = "countersign_reason"
REASON_INPUT = "reason"

# Slack's limits (Block Kit reference: blocks, composition objects, elements, views), in characters of
# the text as sent (escaped). Counted in UTF-16 code units, never fewer than Slack's characters.
MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_SECTION_TEXT = 3000
MAX_FIELD = 2000
MAX_FIELDS = 10
MAX_CONTEXT_TEXT = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_BUTTON_URL = 3000
MAX_CONFIRM_TITLE = 100
MAX_CONFIRM_TEXT = 300
MAX_CONFIRM_BUTTON = 30
MAX_MODAL_TITLE = 24
MAX_MODAL_BUTTON = 24
MAX_INPUT_LABEL = 2000
MAX_PRIVATE_METADATA = 3000
MAX_MESSAGE_TEXT = 40_000  # a message's top-level text, chat.update's too
FALLBACK_CHARS = 300  # the notification text: Slack allows 40,000, a notification shows one line
MAX_EPHEMERAL = 3000
MAX_REASON = 2000  # the service layer's limit for a comment or reason

EXCERPT_LINES = 20
EXCERPT_LINE_CHARS = 160
EXCERPT_CHARS = 1800
PARAM_KEYS = 8
PARAM_KEY_CHARS = 80
PARAM_VALUE_CHARS = 120
RESULT_CHARS = 2500
FINDINGS_SHOWN = 5

HEADLINES = {
    ActionStatus.PENDING: ":hourglass_flowing_sand: Approval needed",
    ActionStatus.APPROVED: ":white_check_mark: Approved",
    ActionStatus.EXECUTING: ":gear: Running",
    ActionStatus.SUCCEEDED: ":white_check_mark: Done",
    ActionStatus.FAILED: ":warning: Failed",
    ActionStatus.UNKNOWN: ":grey_question: Outcome unknown",
    ActionStatus.REJECTED: ":x: Rejected",
    ActionStatus.EXPIRED: ":hourglass: Expired",
    ActionStatus.CANCELLED: ":no_entry_sign: Withdrawn",
}
RISK_MARKS = {"low": ":large_green_circle:", "medium": ":large_yellow_circle:", "high": ":red_circle:"}
_LINE_BREAKS = re.compile(r"[\r\n\t]+")
_ENTITY = re.compile(r"&(?:amp|lt|gt);")
_ZWJ = "\u200d"


# --- text within limits --------------------------------------------------------------------------


def escape(text: Any) -> str:
    """Slack's three control characters escaped (``&``, ``<``, ``>``), nothing else touched."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_len(text: str) -> int:
    """The length Slack's limits are checked against, counted in UTF-16 code units (≥ characters)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _extends(text: str, i: int) -> bool:
    """Whether ``text[i]`` belongs to the character before it (a combining mark, an emoji joiner or modifier)."""
    ch = text[i]
    o = ord(ch)
    return (
        unicodedata.category(ch).startswith("M")
        or ch in (_ZWJ, "\ufe0e", "\ufe0f")
        or text[i - 1] == _ZWJ
        or 0x1F3FB <= o <= 0x1F3FF
        or 0xE0020 <= o <= 0xE007F
    )


def atoms(text: str) -> Iterator[str]:
    """``text`` in pieces a clip may not split: ``<…>`` tokens, entities, markers, characters with their marks."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        end = -1
        if ch == "<":
            close = text.find(">", i)
            if close != -1 and "<" not in text[i + 1 : close]:
                end = close + 1
        elif ch == "&":
            entity = _ENTITY.match(text, i)
            end = entity.end() if entity else -1
        elif ch == MARK_OPEN:
            close = text.find(MARK_CLOSE, i, i + 40)
            end = close + 1 if close != -1 else -1
        if end == -1:
            end = i + 1
            while end < n and _extends(text, end):
                end += 1
        yield text[i:end]
        i = end


def clip(text: str, limit: int) -> str:
    """Slack text (escaped already) cut to ``limit`` with an ellipsis, at an atom boundary (see ``atoms``)."""
    if slack_len(text) <= limit:
        return text
    budget = limit - 1  # the ellipsis
    kept: list[str] = []
    for atom in atoms(text):
        size = slack_len(atom)
        if size > budget:
            break
        kept.append(atom)
        budget -= size
    return "".join(kept).rstrip() + "…"


def shown(text: Any, *, one_line: bool = False, limit: int | None = None) -> str:
    """Agent text as Slack shows it: invisible characters marked, line breaks folded if asked, then escaped.

    With ``limit`` (the clip that follows), only the first ``limit + 1`` characters are worked on: each
    shows as at least one character, so the clip comes out the same, and a huge value costs nothing.
    """
    raw = "" if text is None else str(text)
    if limit is not None:
        raw = raw[: limit + 1]
    marked = mark_invisible(raw)
    if one_line:
        marked = _LINE_BREAKS.sub(" ", marked).strip()
    return escape(marked)


def plain(text: str, limit: int, *, emoji: bool = False) -> dict[str, Any]:
    """A plain_text object (never parsed for formatting, mentions or links); ``text`` is escaped already."""
    return {"type": "plain_text", "text": clip(text, limit) or "—", "emoji": emoji}


def mrkdwn(text: str, limit: int) -> dict[str, Any]:
    """A mrkdwn object for Countersign's own words; any agent text in ``text`` must not be in it."""
    return {"type": "mrkdwn", "text": clip(text, limit) or "—"}


def section(text: dict[str, Any]) -> dict[str, Any]:
    return {"type": "section", "text": text}


def slack_date(at: datetime | None) -> str:
    """A date every reader sees in their own time zone (the fallback after | is UTC)."""
    if at is None:
        return "—"
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} at {{time}}|{at:%Y-%m-%d %H:%M} UTC>"


def action_link(base_url: str, action: ActionRequest) -> str:
    return f"{base_url}/actions/{action.id}"


def button_value(action: ActionRequest, fingerprint: str) -> str:
    """What the Approve and Reject buttons carry back: the action and the preview the reviewer saw."""
    value = json.dumps({"action": str(action.id), "fingerprint": fingerprint}, separators=(",", ":"))
    if len(value) > MAX_BUTTON_VALUE:  # a fingerprint is a digest; anything longer is not one of ours
        value = json.dumps({"action": str(action.id), "fingerprint": ""}, separators=(",", ":"))
    return value


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
    """(fallback text, blocks) for ``action`` as it is now; buttons only while it is pending.

    Approvals are those that count under the rule now in force (``permissions.review_counts``), as the
    API and the pages count them: after an edit changed the group, Slack says the same as they do.
    """
    link = action_link(base_url, action)
    headline = HEADLINES.get(action.status, action.status)
    approvals = counted(action, reviews)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": plain(
                f"{escape(headline)}: {shown(action.summary, one_line=True, limit=MAX_HEADER)}", MAX_HEADER, emoji=True
            ),
        },
        {"type": "section", "fields": _fields(action, len(approvals))},
        section(plain(f"Policy: {shown(action.policy_explanation, limit=MAX_SECTION_TEXT)}", MAX_SECTION_TEXT)),
    ]
    warning = _findings_block(action)
    if warning:
        blocks.append(warning)
    params = _params_text(action)
    if params:
        blocks.append(section(plain(params, MAX_SECTION_TEXT)))
    if action.is_pending:
        if preview is not None:
            blocks.extend(preview_blocks(preview))
        blocks.append({"type": "context", "elements": [mrkdwn(_progress(action, approvals), MAX_CONTEXT_TEXT)]})
        blocks.extend(_decision_blocks(action, link, fingerprint))
    else:
        blocks.append(section(mrkdwn(outcome_text(action, reviews), MAX_SECTION_TEXT)))
        blocks.extend(access_blocks(action))
        reason = _reason_text(action)
        if reason:
            blocks.append(section(plain(reason, MAX_SECTION_TEXT)))
        note = resolution_note(action)
        if note:
            blocks.append(section(plain(note, MAX_SECTION_TEXT)))
        if action.status == ActionStatus.UNKNOWN:
            # No buttons: what happened is recorded on the page, where the reviewer signs in and writes what they
            # checked (a note is required).
            blocks.append(section(mrkdwn(f"{UNKNOWN_ADVICE} <{link}|Record what happened in Countersign>", 500)))
        else:
            blocks.append({"type": "context", "elements": [mrkdwn(f"<{link}|Open in Countersign>", MAX_CONTEXT_TEXT)]})
    text = clip(
        f"{escape(headline)}: {shown(action.summary, one_line=True, limit=FALLBACK_CHARS)} "
        f"(agent {shown(action.agent.name, limit=FALLBACK_CHARS)})",
        FALLBACK_CHARS,
    )
    return text, blocks[:MAX_BLOCKS]


def _fields(action: ActionRequest, approvals: int) -> list[dict[str, Any]]:
    owner = action.agent.owner.get_username() if action.agent.owner_id else "nobody"
    risk = f"{RISK_MARKS.get(action.risk, ':rotating_light:')} {action.risk}"
    when = (
        ("Expires", slack_date(action.expires_at))
        if action.is_pending
        else ("Decided", slack_date(action.decided_at or action.finished_at))
    )
    fields = [
        plain(f"Agent\n{shown(action.agent.name)} (owner {shown(owner)})", MAX_FIELD),
        plain(
            f"On behalf of\n{shown(action.on_behalf_of, limit=MAX_FIELD) if action.on_behalf_of else '—'}", MAX_FIELD
        ),
        plain(f"Risk\n{escape(risk)}", MAX_FIELD, emoji=True),
        plain(f"Action type\n{shown(action.action_type)}", MAX_FIELD),
        plain(f"Approvals\n{approvals} of {action.required_approvals}", MAX_FIELD),
        mrkdwn(f"{when[0]}\n{when[1]}", MAX_FIELD),  # mrkdwn for the date in each reader's time zone
    ]
    duration = access_duration(action)
    if duration:
        fields.append(plain(f"Access for\n{escape(duration)}, then taken back by Countersign", MAX_FIELD))
    return fields[:MAX_FIELDS]


def access_duration(action: ActionRequest) -> str:
    """ "2 h" for a time-boxed action (the duration that runs, a reviewer's shortening included), else ""."""
    action_type = registry.get(action.action_type)
    params = action.effective_params
    if action_type is None or not action_type.time_boxed or not isinstance(params, dict) or "duration" not in params:
        return ""
    try:
        return describe_seconds(parse_duration(params["duration"]))
    except DurationError:
        return ""


def access_blocks(action: ActionRequest) -> list[dict[str, Any]]:
    """A granted time-boxed access: until when, and the End access early button (staff's: others are refused
    and audited, approvals.slack.interactions); once taken back, when. Nothing for other actions."""
    if action.reverted_at is not None:
        return [section(mrkdwn(f":lock: Access taken back on {slack_date(action.reverted_at)}.", MAX_SECTION_TEXT))]
    if action.access_expires_at is None or action.status != ActionStatus.SUCCEEDED:
        return []
    if action.access_expires_at <= timezone.now():
        return [section(mrkdwn(":hourglass: Time is up: Countersign is taking the access back.", MAX_SECTION_TEXT))]
    until = slack_date(action.access_expires_at)
    button = {
        "type": "button",
        "action_id": END_ACCESS,
        "text": plain("End access early", MAX_BUTTON_TEXT),
        "style": "danger",
        "value": button_value(action, ""),
        "confirm": {
            "title": plain("End this access now?", MAX_CONFIRM_TITLE),
            "text": plain(shown(action.summary, one_line=True, limit=MAX_CONFIRM_TEXT), MAX_CONFIRM_TEXT),
            "confirm": plain("End it now", MAX_CONFIRM_BUTTON),
            "deny": plain("Cancel", MAX_CONFIRM_BUTTON),
        },
    }
    return [
        section(mrkdwn(f":unlock: Access held until {until}; Countersign takes it back then.", MAX_SECTION_TEXT)),
        {"type": "actions", "block_id": ACCESS_BLOCK, "elements": [button]},
    ]


def _findings_block(action: ActionRequest) -> dict[str, Any] | None:
    """A warning when the proposal holds invisible characters or look-alike letters (shown marked)."""
    found = action_findings(action)
    if not found:
        return None
    lines = [
        "\u26a0\ufe0f This proposal contains characters you could not see or could misread. They are shown "
        f"marked, like {MARK_OPEN}U+202E{MARK_CLOSE}; what runs is exactly what the agent sent.",
        *(f"• {escape(line)}" for line in found[:FINDINGS_SHOWN]),
    ]
    if len(found) > FINDINGS_SHOWN:
        lines.append(f"… and {len(found) - FINDINGS_SHOWN} more in Countersign")
    return section(plain("\n".join(lines), MAX_SECTION_TEXT))


def _params_text(action: ActionRequest) -> str:
    """The parameters, one line each (keys and values marked, escaped and clipped); for a plain_text section."""
    params = action.effective_params
    if not isinstance(params, dict) or not params:
        return ""
    lines = ["Parameters (edited by a reviewer)" if action.edited_params is not None else "Parameters"]
    for key in list(params)[:PARAM_KEYS]:
        key_text = clip(shown(key, one_line=True, limit=PARAM_KEY_CHARS), PARAM_KEY_CHARS)
        value = json.dumps(params[key], ensure_ascii=False, sort_keys=True)
        value = clip(shown(value, one_line=True, limit=PARAM_VALUE_CHARS), PARAM_VALUE_CHARS)
        lines.append(f"• {key_text}: {value}")
    if len(params) > PARAM_KEYS:
        lines.append(f"… and {len(params) - PARAM_KEYS} more in Countersign")
    return "\n".join(lines)


def counted(action: ActionRequest, reviews: Sequence[Review]) -> list[Review]:
    """The approvals among ``reviews`` that count (annotated ``counts`` from approvals.selectors.actions, or
    checked)."""
    return [r for r in reviews if review_counts(r, action)]


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
    """Who decided, when, and what happened since (Countersign's words; the reason is shown apart, as plain text)."""
    status = action.status
    decided = slack_date(action.decided_at)
    if status == ActionStatus.REJECTED:
        rejection = next((r for r in reviews if r.verdict == Review.Verdict.REJECT), None)
        by = _who(rejection) if rejection else "policy"
        return f"Rejected by {by} on {decided}."
    if status == ActionStatus.EXPIRED:
        approvals = len(counted(action, reviews))
        return f"Expired on {decided} with {approvals} of {action.required_approvals} approvals; nothing was run."
    if status == ActionStatus.CANCELLED:
        return f"Withdrawn by the agent on {decided}; nothing was run."
    # Those whose approval counted; if none counts any more (a group changed after the decision), all who approved.
    approvers = counted(action, reviews) or [r for r in reviews if r.verdict == Review.Verdict.APPROVE]
    by = ", ".join(_who(r) for r in approvers) or "policy"
    text = f"Approved by {by} on {decided}."
    action_type = registry.get(action.action_type)
    if status == ActionStatus.APPROVED:
        executes = action_type is None or action_type.executes
        text += " Countersign runs it next." if executes else " The agent carries it out itself."
    elif status == ActionStatus.EXECUTING:
        text += " Running now."
    elif status == ActionStatus.UNKNOWN:
        text += (
            f" The execution was interrupted on {slack_date(action.finished_at)} after it may have reached the "
            "target: *nobody knows whether it took effect*."
        )
    elif (done := resolution_of(action)) is not None:
        what = "it took effect" if status == ActionStatus.SUCCEEDED else "it did not happen"
        text += (
            f" The execution's outcome was unknown; *{escape(done.get('by') or 'a reviewer')}* checked the target "
            f"and recorded that {what} (*{status}*)."
        )
    elif status in (ActionStatus.SUCCEEDED, ActionStatus.FAILED):
        outcome = "succeeded" if status == ActionStatus.SUCCEEDED else "failed"
        text += f" Execution {outcome} on {slack_date(action.finished_at)}; the result is in the thread."
    return text


UNKNOWN_ADVICE = ":warning: *Check the target before retrying*, then record whether it took effect."


def resolution_note(action: ActionRequest) -> str:
    """What the reviewer who settled an unknown outcome checked, as plain text (a person's words)."""
    done = resolution_of(action)
    if done is None or not done.get("note"):
        return ""
    return f"What they checked: {shown(done['note'], limit=MAX_SECTION_TEXT)}"


def _reason_text(action: ActionRequest) -> str:
    """The decision's reason, whoever wrote it, as plain text of any length (clipped by ``plain``)."""
    if action.status != ActionStatus.REJECTED or not action.decision_reason:
        return ""
    return f"Reason: {shown(action.decision_reason, limit=MAX_SECTION_TEXT)}"


def _decision_blocks(action: ActionRequest, link: str, fingerprint: str) -> list[dict[str, Any]]:
    """Approve / Reject / Open buttons; or, when the policy wants the web page, only a link to it."""
    open_button = {
        "type": "button",
        "action_id": OPEN,
        "text": plain("Open in Countersign", MAX_BUTTON_TEXT),
        "url": link[:MAX_BUTTON_URL],
    }
    if action.web_decision_only:
        note = (
            f"This {escape(action.risk)}-risk action is decided in Countersign only, where you sign in and see "
            "the full diff. Approve and Reject are not offered in Slack."
        )
        review = {**open_button, "text": plain("Review in Countersign", MAX_BUTTON_TEXT), "style": "primary"}
        return [
            {"type": "context", "elements": [mrkdwn(note, MAX_CONTEXT_TEXT)]},
            {"type": "actions", "block_id": DECIDE_BLOCK, "elements": [review]},
        ]
    value = button_value(action, fingerprint)
    approve: dict[str, Any] = {
        "type": "button",
        "action_id": APPROVE,
        "text": plain("Approve", MAX_BUTTON_TEXT),
        "style": "primary",
        "value": value,
    }
    if action.risk in ("high", "critical"):
        approve["confirm"] = {
            "title": plain(f"Approve a {escape(action.risk)}-risk action?", MAX_CONFIRM_TITLE),
            "text": plain(shown(action.summary, one_line=True, limit=MAX_CONFIRM_TEXT), MAX_CONFIRM_TEXT),
            "confirm": plain("Approve", MAX_CONFIRM_BUTTON),
            "deny": plain("Cancel", MAX_CONFIRM_BUTTON),
        }
    reject = {
        "type": "button",
        "action_id": REJECT,
        "text": plain("Reject…", MAX_BUTTON_TEXT),
        "style": "danger",
        "value": value,
    }
    return [{"type": "actions", "block_id": DECIDE_BLOCK, "elements": [approve, reject, open_button]}]


# --- the preview excerpt ------------------------------------------------------------------------


def preview_blocks(preview: Preview) -> list[dict[str, Any]]:
    """What the action would change, read from the live target: a diff excerpt, capped."""
    if preview.kind == "unavailable":
        text = f"Preview unavailable: {shown(preview.error or 'the target could not be read', limit=MAX_SECTION_TEXT)}"
        return [section(plain(text, MAX_SECTION_TEXT))]
    lines = excerpt_lines(preview)
    title = shown(preview.title, one_line=True, limit=300) if preview.title else ""
    if not lines and not title:
        return []
    head = "What it will change" + (f" — {clip(title, 300)}" if title else "")
    text = "\n".join([head, *_cap([shown(line, limit=EXCERPT_LINE_CHARS) for line in lines])]) if lines else head
    blocks: list[dict[str, Any]] = [section(plain(text, MAX_SECTION_TEXT))]
    if preview.notes:
        notes = " ".join(shown(n, one_line=True, limit=MAX_CONTEXT_TEXT) for n in preview.notes[:5])
        blocks.append({"type": "context", "elements": [plain(notes, MAX_CONTEXT_TEXT)]})
    return blocks


def excerpt_lines(preview: Preview) -> list[str]:
    """The excerpt's lines, raw (agent and target text: mark and escape them to show them)."""
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
            shown_value = {"added": after, "removed": before, "changed": f"{before} → {after}"}[change.kind]
            lines.append(f"{marks[change.kind]} {change.path}: {shown_value}")
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
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 80 else text[:79] + "…"


def _cap(lines: list[str]) -> list[str]:
    """Escaped lines, each clipped, at most EXCERPT_LINES of them and EXCERPT_CHARS in all (as sent)."""
    kept: list[str] = []
    size = 0
    for line in lines[:EXCERPT_LINES]:
        line = clip(line, EXCERPT_LINE_CHARS)
        if size + slack_len(line) > EXCERPT_CHARS:
            break
        kept.append(line)
        size += slack_len(line) + 1
    if len(kept) < len(lines):
        kept.append(f"… {len(lines) - len(kept)} more line(s) in Countersign")
    return kept


# --- thread replies and the modal -----------------------------------------------------------------


def result_message(action: ActionRequest) -> tuple[str, list[dict[str, Any]]]:
    """The execution's outcome, for the message's thread (the result is the target's text: plain_text)."""
    result = action.result if isinstance(action.result, dict) else {}
    blocks: list[dict[str, Any]] = []
    if action.status == ActionStatus.SUCCEEDED and resolution_of(action) is None:
        lead = ":white_check_mark: *Executed.*"
        blocks.append(section(mrkdwn(lead, MAX_SECTION_TEXT)))
    elif action.status == ActionStatus.UNKNOWN:
        lead = ":grey_question: *Execution interrupted: outcome unknown.*"
        blocks.append(section(mrkdwn(f"{lead} {UNKNOWN_ADVICE}", MAX_SECTION_TEXT)))
        error = shown(result.get("error") or "interrupted", one_line=True, limit=MAX_SECTION_TEXT)
        blocks.append(section(plain(f"Error: {error}", MAX_SECTION_TEXT)))
    elif resolution_of(action) is not None:
        # Threaded late (Slack was unreachable while it was unknown): say how it was settled, not the advice.
        what = "it took effect" if action.status == ActionStatus.SUCCEEDED else "it did not happen"
        lead = f":grey_question: *Execution interrupted; a reviewer checked the target: {what}.*"
        blocks.append(section(mrkdwn(lead, MAX_SECTION_TEXT)))
    else:
        lead = ":warning: *Execution failed.*"
        blocks.append(section(mrkdwn(lead, MAX_SECTION_TEXT)))
        error = shown(result.get("error") or "unknown error", one_line=True, limit=MAX_SECTION_TEXT)
        blocks.append(section(plain(f"Error: {error}", MAX_SECTION_TEXT)))
    body = shown(json.dumps(result, indent=2, sort_keys=True, ensure_ascii=False), limit=RESULT_CHARS)
    if slack_len(body) > RESULT_CHARS:
        body = clip(body, RESULT_CHARS) + "\n(truncated; the full result is in Countersign)"
    blocks.append(section(plain(body, MAX_SECTION_TEXT)))
    return lead, blocks


def reminder_text(action: ActionRequest, approvals: int, base_url: str) -> str:
    """A reminder's words as the action is now: still waiting, or (once decided) that it no longer is."""
    link = action_link(base_url, action)
    if not action.is_pending:
        headline = HEADLINES.get(action.status, escape(action.status))
        return f":alarm_clock: Reminder answered: {headline}. <{link}|Open in Countersign>"
    return (
        f":alarm_clock: Still waiting for a decision: {approvals} of {action.required_approvals} approvals, "
        f"expires {slack_date(action.expires_at)}. <{link}|Review it in Countersign>"
    )


def ephemeral_text(text: str) -> str:
    """A short answer to one person (Countersign's words, possibly quoting an error): escaped and clipped."""
    return clip(escape(mark_invisible(text)), MAX_EPHEMERAL)


def reject_modal(action: ActionRequest, *, channel: str, message_ts: str) -> dict[str, Any]:
    """The modal a Reject click opens; its submission carries the reason (view_submission)."""
    metadata = json.dumps({"action": str(action.id), "channel": channel, "ts": message_ts}, separators=(",", ":"))
    if len(metadata) > MAX_PRIVATE_METADATA:  # Slack's ids are short; a longer one is not Slack's
        metadata = json.dumps({"action": str(action.id), "channel": "", "ts": ""}, separators=(",", ":"))
    summary = shown(action.summary, one_line=True, limit=MAX_SECTION_TEXT)
    return {
        "type": "modal",
        "callback_id": REJECT_VIEW,
        "private_metadata": metadata,
        "title": plain("Reject the action", MAX_MODAL_TITLE),
        "submit": plain("Reject", MAX_MODAL_BUTTON),
        "close": plain("Cancel", MAX_MODAL_BUTTON),
        "blocks": [
            section(
                plain(
                    clip(summary, MAX_SECTION_TEXT - 60) + "\nThe reason goes back to the agent to adapt.",
                    MAX_SECTION_TEXT,
                )
            ),
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": plain("Why reject it?", MAX_INPUT_LABEL),
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
