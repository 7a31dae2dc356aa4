"""The HumanLayer wire shapes (docs/HUMANLAYER.md) and how they map onto Countersign actions.

- A FunctionCall is a ``decision.only`` action: params ``{"function": fn, "kwargs": kwargs}``
  (what reviewers see), ``reject_options`` in ``context`` (the detail page offers them as
  quick-pick reasons), and the idempotency key ``humanlayer:fc:<call_id>``.
- A HumanContact is a ``human.question``: params ``{"question": msg, "subject": ...}``,
  ``response_options`` in ``context``, key ``humanlayer:hc:<call_id>``. Approving with a
  comment answers it.

The idempotency key is unique per agent, so repeating a create returns the same action
(a different body under the same call_id is a 409) and ``GET .../{call_id}`` is a lookup
by key. Pure functions: no writes here.
"""

from __future__ import annotations

import json
from typing import Any

from rest_framework import serializers

from approvals.models import ActionRequest, ActionStatus, Review
from approvals.services import Proposal

FUNCTION_TYPE = "decision.only"
CONTACT_TYPE = "human.question"
FUNCTION_KEY = "humanlayer:fc:"
CONTACT_KEY = "humanlayer:hc:"
MAX_SUMMARY = 280
CALL_ID = r"^[A-Za-z0-9._~:-]{1,200}\Z"
APPROVED_STATES = (ActionStatus.APPROVED, ActionStatus.EXECUTING, ActionStatus.SUCCEEDED, ActionStatus.FAILED)
# Approved, then an execution interrupted after it may have reached the target. HumanLayer's status has no word
# for it, and ``approved: true`` would make the SDK run the function (again, perhaps): it is answered as
# ``approved: false`` with the advice. Countersign never executes the types this protocol maps onto
# (decision.only, human.question), so this is a guard, not a path they take.
OUTCOME_UNKNOWN_COMMENT = (
    "A reviewer approved this call, but its execution was interrupted after it may have reached the target: "
    "nobody knows whether it took effect. Do not run it again blindly: check the target before retrying."
)


# --- input ---------------------------------------------------------------------------


class ResponseOptionInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    title = serializers.CharField(max_length=200, required=False, allow_null=True, allow_blank=True)
    description = serializers.CharField(max_length=1000, required=False, allow_null=True, allow_blank=True)
    prompt_fill = serializers.CharField(max_length=2000, required=False, allow_null=True, allow_blank=True)
    interactive = serializers.BooleanField(required=False, default=False)


def _unique_names(options):
    names = [o["name"] for o in options or []]
    if len(names) != len(set(names)):
        raise serializers.ValidationError("Option names must be unique.")
    return options


class FunctionCallSpecInput(serializers.Serializer):
    fn = serializers.CharField(max_length=200)
    kwargs = serializers.DictField(child=serializers.JSONField(allow_null=True), allow_empty=True)
    channel = serializers.JSONField(required=False, allow_null=True)
    reject_options = ResponseOptionInput(many=True, required=False, allow_null=True, max_length=20)
    state = serializers.JSONField(required=False, allow_null=True)

    def validate_reject_options(self, value):
        return _unique_names(value)


class HumanContactSpecInput(serializers.Serializer):
    msg = serializers.CharField(max_length=20000, trim_whitespace=False)
    subject = serializers.CharField(max_length=280, required=False, allow_null=True, allow_blank=True)
    channel = serializers.JSONField(required=False, allow_null=True)
    response_options = ResponseOptionInput(many=True, required=False, allow_null=True, max_length=20)
    state = serializers.JSONField(required=False, allow_null=True)

    def validate_response_options(self, value):
        return _unique_names(value)


class _CallInput(serializers.Serializer):
    run_id = serializers.CharField(max_length=200)
    call_id = serializers.RegexField(CALL_ID, max_length=200)


class FunctionCallInput(_CallInput):
    spec = FunctionCallSpecInput()


class HumanContactInput(_CallInput):
    spec = HumanContactSpecInput()


class FunctionCallStatusInput(serializers.Serializer):
    """An approver's answer to a function call (``POST /agent/function_calls/{call_id}/respond``)."""

    approved = serializers.BooleanField(allow_null=True)
    comment = serializers.CharField(max_length=2000, required=False, allow_null=True, allow_blank=True)
    reject_option_name = serializers.CharField(max_length=100, required=False, allow_null=True, allow_blank=True)


class HumanContactStatusInput(serializers.Serializer):
    """An approver's answer to a contact request (``POST /agent/human_contacts/{call_id}/respond``)."""

    response = serializers.CharField(max_length=2000, required=False, allow_null=True, allow_blank=True)
    response_option_name = serializers.CharField(max_length=100, required=False, allow_null=True, allow_blank=True)


# --- proposals -----------------------------------------------------------------------


def _clip(text: str, limit: int = MAX_SUMMARY) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _options(options: list[dict] | None) -> list[dict[str, Any]]:
    return [{k: v for k, v in option.items() if v not in (None, "")} for option in options or []]


def _meta(data: dict[str, Any]) -> dict[str, Any]:
    spec = data["spec"]
    meta = {"run_id": data["run_id"], "call_id": data["call_id"]}
    for name in ("channel", "state"):
        if spec.get(name) is not None:
            meta[name] = spec[name]
    return meta


def function_call_proposal(data: dict[str, Any]) -> Proposal:
    spec = data["spec"]
    shown = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in spec["kwargs"].items())
    context: dict[str, Any] = {"humanlayer": _meta(data)}
    if spec.get("reject_options"):
        context["reject_options"] = _options(spec["reject_options"])
    return Proposal(
        action_type=FUNCTION_TYPE,
        params={"function": spec["fn"], "kwargs": spec["kwargs"]},
        summary=_clip(f"{spec['fn']}({shown})"),
        context=context,
        idempotency_key=FUNCTION_KEY + data["call_id"],
    )


def contact_proposal(data: dict[str, Any]) -> Proposal:
    spec = data["spec"]
    params = {"question": spec["msg"]}
    if spec.get("subject"):
        params["subject"] = spec["subject"]
    context: dict[str, Any] = {"humanlayer": _meta(data)}
    if spec.get("response_options"):
        context["response_options"] = _options(spec["response_options"])
    return Proposal(
        action_type=CONTACT_TYPE,
        params=params,
        summary=_clip(spec.get("subject") or spec["msg"]),
        context=context,
        idempotency_key=CONTACT_KEY + data["call_id"],
    )


def option_text(option: dict[str, Any]) -> str:
    """What choosing an option says: its prompt_fill, else its title, else its name."""
    return option.get("prompt_fill") or option.get("title") or option["name"]


def chosen_option(options: list[dict[str, Any]] | None, text: str) -> str | None:
    """The name of the option ``text`` was picked from (exactly, or extended by the reviewer), if any."""
    text = (text or "").strip()
    if not text:
        return None
    options = [o for o in options or [] if isinstance(o, dict) and o.get("name")]
    for option in options:
        if text in (option_text(option), option["name"]):
            return option["name"]
    for option in options:
        if text.startswith(option_text(option)):
            return option["name"]
    return None


def option_by_name(options: list[dict[str, Any]] | None, name: str | None) -> dict[str, Any] | None:
    return next((o for o in options or [] if isinstance(o, dict) and o.get("name") == name), None) if name else None


# --- output --------------------------------------------------------------------------


def _iso(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def call_id(action: ActionRequest) -> str:
    return (action.idempotency_key or "").split(":", 2)[-1]


def _human_comments(action: ActionRequest) -> list[str]:
    return [
        r.comment
        for r in action.reviews.all()
        if r.verdict == Review.Verdict.APPROVE and r.via != Review.Via.POLICY and r.comment
    ]


def _approver_names(action: ActionRequest) -> str:
    names = [
        r.reviewer.get_username()
        for r in action.reviews.all()
        if r.verdict == Review.Verdict.APPROVE and r.reviewer_id and r.via != Review.Via.POLICY
    ]
    return ", ".join(names)


def _edited(action: ActionRequest) -> bool:
    return action.edited_params is not None and action.edited_params != action.params


def _responded_at(action: ActionRequest) -> str | None:
    return _iso(action.decided_at or action.finished_at or action.updated_at)


def function_status(action: ActionRequest) -> dict[str, Any]:
    """FunctionCallStatus. The SDK runs the function with its own arguments on ``approved: true``, so an
    approval with edited arguments is answered as ``approved: false`` naming the approved arguments."""
    status: dict[str, Any] = {
        "requested_at": _iso(action.created_at),
        "responded_at": None,
        "approved": None,
        "comment": None,
        "reject_option_name": None,
        "slack_message_ts": None,
    }
    if action.status == ActionStatus.PENDING:
        return status
    status["responded_at"] = _responded_at(action)
    if action.status == ActionStatus.UNKNOWN:
        status["approved"] = False
        status["comment"] = OUTCOME_UNKNOWN_COMMENT
    elif action.status in APPROVED_STATES and _edited(action):
        kwargs = (action.edited_params or {}).get("kwargs", action.edited_params)
        status["approved"] = False
        status["comment"] = (
            "A reviewer approved this call only with changed arguments; it was not run as proposed. "
            f"To go ahead, call {action.params.get('function', 'it')} again with: "
            f"{json.dumps(kwargs, ensure_ascii=False, sort_keys=True)}"
        )
    elif action.status in APPROVED_STATES:
        status["approved"] = True
        status["comment"] = "\n\n".join(_human_comments(action)) or None
    elif action.status == ActionStatus.REJECTED:
        reason = action.decision_reason or "Rejected."
        status["approved"] = False
        status["comment"] = reason
        status["reject_option_name"] = chosen_option(action.context.get("reject_options"), reason)
    elif action.status == ActionStatus.EXPIRED:
        status["approved"] = False
        status["comment"] = f"Expired: nobody decided before {_iso(action.expires_at)}."
    else:  # cancelled
        status["approved"] = False
        status["comment"] = "Cancelled: the request was withdrawn before anyone decided."
    return status


def contact_status(action: ActionRequest) -> dict[str, Any]:
    """HumanContactStatus. The SDK polls until ``response`` is not null, so every ending answers with text."""
    status: dict[str, Any] = {
        "requested_at": _iso(action.created_at),
        "responded_at": None,
        "response": None,
        "response_option_name": None,
    }
    if action.status == ActionStatus.PENDING:
        return status
    status["responded_at"] = _responded_at(action)
    # A question's answer is the approval's comment: an execution's outcome (even unknown) does not change it.
    if action.status in (*APPROVED_STATES, ActionStatus.UNKNOWN):
        answer = "\n\n".join(_human_comments(action))
        if answer:
            status["response_option_name"] = chosen_option(action.context.get("response_options"), answer)
        elif _approver_names(action):
            answer = f"{_approver_names(action)} acknowledged the question without writing an answer."
        else:
            answer = f"No person answered: the policy rule {action.policy_rule!r} settled it automatically."
        status["response"] = answer
    elif action.status == ActionStatus.REJECTED:
        status["response"] = f"A person declined to answer: {action.decision_reason or 'no reason given'}"
    elif action.status == ActionStatus.EXPIRED:
        status["response"] = f"No answer: the question expired unanswered at {_iso(action.expires_at)}."
    else:  # cancelled
        status["response"] = "No answer: the question was withdrawn."
    return status


def _options_out(options: Any) -> list[dict[str, Any]] | None:
    return [o for o in options if isinstance(o, dict)] if isinstance(options, list) and options else None


def present_function_call(action: ActionRequest) -> dict[str, Any]:
    meta = action.context.get("humanlayer") or {}
    return {
        "run_id": meta.get("run_id", ""),
        "call_id": call_id(action),
        "spec": {
            "fn": action.params.get("function", ""),
            "kwargs": action.params.get("kwargs", {}),
            "channel": meta.get("channel"),
            "reject_options": _options_out(action.context.get("reject_options")),
            "state": meta.get("state"),
        },
        "status": function_status(action),
    }


def present_contact(action: ActionRequest) -> dict[str, Any]:
    meta = action.context.get("humanlayer") or {}
    return {
        "run_id": meta.get("run_id", ""),
        "call_id": call_id(action),
        "spec": {
            "msg": action.params.get("question", ""),
            "subject": action.params.get("subject"),
            "channel": meta.get("channel"),
            "response_options": _options_out(action.context.get("response_options")),
            "state": meta.get("state"),
        },
        "status": contact_status(action),
    }
