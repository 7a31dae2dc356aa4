"""``/humanlayer/v1``: thin views speaking the HumanLayer protocol over Countersign's services.

Agents authenticate with their Countersign key as ``Authorization: Bearer`` (what the
``humanlayer`` SDK sends as ``HUMANLAYER_API_KEY``) and create and poll their own calls.
Approver-side clients (``respond``, ``pending``) use a reviewer's personal token the same
way; an agent never answers its own request. Errors are problem JSON served as
``application/json``: the SDK parses every body before it looks at the status, and its
async client (aiohttp) refuses to parse any other content type.
"""

from __future__ import annotations

import re

from django.core.cache import cache
from django.db.models import QuerySet
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import status as http
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from approvals import services
from approvals.api.problems import problem, problem_exception_handler
from approvals.api.views import IsAgent, IsAgentOrReviewer, IsReviewer
from approvals.errors import Conflict
from approvals.humanlayer import protocol
from approvals.humanlayer.authentication import HumanLayerBearerAuthentication
from approvals.models import ActionStatus, Review
from approvals.selectors import actions as selectors
from approvals.validation import unstorable_text

PAGE_LIMIT = 50
MAX_PAGE_LIMIT = 200
MAX_OFFSET = 1_000_000
CALL_ID = re.compile(protocol.CALL_ID)


def _whole_number(raw: str | None, default: int) -> int | None:
    """``raw`` as a non-negative integer of at most 10 digits (``default`` when absent), or None."""
    if raw is None:
        return default
    raw = raw.strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 10 else None


def json_problem(status_code: int, title: str, detail: str, *, slug: str) -> JsonResponse:
    return JsonResponse(problem(status_code, title, detail, slug=slug), status=status_code)


def _json_problems(exc, context):
    response = problem_exception_handler(exc, context)
    if response is not None:
        response.content_type = "application/json"
    return response


class _HumanLayerView(APIView):
    authentication_classes = [HumanLayerBearerAuthentication]
    schema = None  # a compatibility protocol, documented in docs/agents.md, not part of Countersign's API schema

    def get_exception_handler(self):
        return _json_problems


class _Kind:
    """What differs between function calls and contact requests."""

    def __init__(self, action_type, key_prefix, input_cls, to_proposal, present, status_input):
        self.action_type = action_type
        self.key_prefix = key_prefix
        self.input_cls = input_cls
        self.to_proposal = to_proposal
        self.present = present
        self.status_input = status_input

    def actions_for(self, principal) -> QuerySet:
        return selectors.actions_for(principal).filter(
            action_type=self.action_type, idempotency_key__startswith=self.key_prefix
        )

    def find(self, principal, call_id: str):
        # Checked before the database: PostgreSQL refuses NUL, and no call was ever created with another shape.
        problem = unstorable_text(call_id)
        if problem:
            raise ValidationError({"call_id": [f"A call id may not contain {problem}."]})
        if not CALL_ID.fullmatch(call_id):
            raise NotFound("No such call.")
        found = list(self.actions_for(principal).filter(idempotency_key=self.key_prefix + call_id)[:2])
        if not found:
            raise NotFound(f"No such call: {call_id}.")
        if len(found) > 1:  # call ids are unique per agent; a reviewer may see two agents' equal ids
            raise Conflict(f"More than one agent used the call id {call_id}; decide it in Countersign's web UI.")
        return found[0]


FUNCTION_CALLS = _Kind(
    protocol.FUNCTION_TYPE,
    protocol.FUNCTION_KEY,
    protocol.FunctionCallInput,
    protocol.function_call_proposal,
    protocol.present_function_call,
    protocol.FunctionCallStatusInput,
)
CONTACTS = _Kind(
    protocol.CONTACT_TYPE,
    protocol.CONTACT_KEY,
    protocol.HumanContactInput,
    protocol.contact_proposal,
    protocol.present_contact,
    protocol.HumanContactStatusInput,
)


class CreateView(_HumanLayerView):
    """``POST /function_calls`` and ``POST /contact_requests``: propose (idempotent per call_id)."""

    permission_classes = [IsAgent]
    agent_rate_scopes = {"POST": "proposals"}
    kind: _Kind = FUNCTION_CALLS

    def post(self, request):
        serializer = self.kind.input_cls(data=request.data)
        serializer.is_valid(raise_exception=True)
        action, created = services.propose_action(
            agent=request.user, proposal=self.kind.to_proposal(serializer.validated_data)
        )
        action = selectors.get_action_for(request.user, action.id)
        return Response(self.kind.present(action), status=http.HTTP_201_CREATED if created else http.HTTP_200_OK)


class DetailView(_HumanLayerView):
    """``GET /function_calls/{call_id}`` and ``GET /contact_requests/{call_id}``: what the SDK polls."""

    permission_classes = [IsAgent]
    kind: _Kind = FUNCTION_CALLS

    def get(self, request, call_id):
        return Response(self.kind.present(self.kind.find(request.user, call_id)))


class PendingView(_HumanLayerView):
    """``GET /agent/{function_calls,human_contacts}/pending``: a reviewer's (or an agent's own) open calls."""

    permission_classes = [IsAgentOrReviewer]
    kind: _Kind = FUNCTION_CALLS

    def get(self, request):
        limit = _whole_number(request.query_params.get("limit"), PAGE_LIMIT)
        offset = _whole_number(request.query_params.get("offset"), 0)
        if limit is None or limit < 1:
            raise ValidationError(
                {"limit": [f"A whole number from 1 (more than {MAX_PAGE_LIMIT} gives {MAX_PAGE_LIMIT})."]}
            )
        if offset is None or offset > MAX_OFFSET:
            # Bounded before the database: 2**63 is past PostgreSQL's bigint, a 500 otherwise.
            raise ValidationError({"offset": [f"A whole number from 0 to {MAX_OFFSET}."]})
        limit = min(limit, MAX_PAGE_LIMIT)
        qs = self.kind.actions_for(request.user).filter(status=ActionStatus.PENDING).order_by("created_at", "id")
        total = qs.count()
        items = [self.kind.present(a) for a in qs[offset : offset + limit]]
        return Response(
            {"items": items, "total": total, "limit": limit, "offset": offset, "has_more": offset + len(items) < total}
        )


class RespondView(_HumanLayerView):
    """``POST /agent/{function_calls,human_contacts}/{call_id}/respond``: a reviewer decides; 409 once decided."""

    permission_classes = [IsReviewer]
    kind: _Kind = FUNCTION_CALLS

    def post(self, request, call_id):
        action = self.kind.find(request.user, call_id)
        serializer = self.kind.status_input(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if self.kind is FUNCTION_CALLS:
            self._decide_function_call(request, action, data)
        else:
            self._answer_contact(request, action, data)
        return Response(self.kind.present(self.kind.find(request.user, call_id)))

    @staticmethod
    def _decide_function_call(request, action, data) -> None:
        if data["approved"] is None:
            raise ValidationError({"approved": ["true to approve, false to reject."]})
        if data["approved"]:
            services.approve_action(
                action_id=action.id, reviewer=request.user, via=Review.Via.API, comment=data.get("comment") or ""
            )
            return
        option = protocol.option_by_name(action.context.get("reject_options"), data.get("reject_option_name"))
        reason = data.get("comment") or (protocol.option_text(option) if option else "")
        services.reject_action(action_id=action.id, reviewer=request.user, via=Review.Via.API, reason=reason)

    @staticmethod
    def _answer_contact(request, action, data) -> None:
        option = protocol.option_by_name(action.context.get("response_options"), data.get("response_option_name"))
        answer = data.get("response") or (protocol.option_text(option) if option else "")
        if not answer.strip():
            raise ValidationError({"response": ["The answer is required."]})
        services.approve_action(action_id=action.id, reviewer=request.user, via=Review.Via.API, comment=answer)


class EscalateView(_HumanLayerView):
    """``POST /agent/.../{call_id}/escalate_email``: remind the people who may decide, now.

    To the policy's channels and, by email, to ``additional_recipients`` / ``channel.email`` who may decide the
    action (anyone else is refused: an agent does not choose whom Countersign mails). Once a minute per call.
    """

    permission_classes = [IsAgent]
    kind: _Kind = FUNCTION_CALLS

    def post(self, request, call_id):
        action = self.kind.find(request.user, call_id)
        data = request.data if isinstance(request.data, dict) else {}
        message = data.get("escalation_msg")
        if not isinstance(message, str):
            raise ValidationError({"escalation_msg": ["A text saying why it is urgent."]})
        addresses = [*_recipient_addresses(data.get("additional_recipients")), *_channel_address(data.get("channel"))]
        if not cache.add(f"humanlayer:escalated:{action.id}", 1, timeout=ESCALATION_INTERVAL_SECONDS):
            response = json_problem(
                429,
                "Too many escalations",
                f"This call was escalated less than {ESCALATION_INTERVAL_SECONDS} s ago.",
                slug="rate-limited",
            )
            response["Retry-After"] = str(ESCALATION_INTERVAL_SECONDS)
            return response
        try:
            services.escalate_action(action_id=action.id, agent=request.user, message=message, addresses=addresses)
        except Exception:
            cache.delete(f"humanlayer:escalated:{action.id}")  # a refused escalation doesn't use up the minute
            raise
        return Response(self.kind.present(self.kind.find(request.user, call_id)))


ESCALATION_INTERVAL_SECONDS = 60


def _recipient_addresses(recipients) -> list[str]:
    if recipients is None:
        return []
    if not isinstance(recipients, list) or not all(
        isinstance(r, dict) and isinstance(r.get("address"), str) for r in recipients
    ):
        raise ValidationError({"additional_recipients": ['A list of {"address": "someone@example.com"}.']})
    return [r["address"] for r in recipients]


def _channel_address(channel) -> list[str]:
    if channel is None:
        return []
    if not isinstance(channel, dict):
        raise ValidationError({"channel": ["A contact channel object."]})
    others = sorted(k for k, v in channel.items() if v is not None and k != "email")
    if others:
        raise ValidationError({"channel": [f"Escalation is by email only, not {', '.join(others)}."]})
    email = channel.get("email")
    if email is None:
        return []
    if not isinstance(email, dict) or not isinstance(email.get("address"), str):
        raise ValidationError({"channel": ['{"email": {"address": "someone@example.com"}}.']})
    return [email["address"]]


@csrf_exempt  # a POST to an unknown path is a 404 in JSON, not Django's HTML CSRF page
def not_found(request, *args, **kwargs):
    """Any other path under /humanlayer/: still JSON, which is all the SDK can read."""
    return json_problem(404, "Not found", "No such HumanLayer endpoint.", slug="not-found")
