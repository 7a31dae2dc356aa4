"""Thin API views: parse, call a service or selector, present."""

from __future__ import annotations

import uuid
from datetime import datetime

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status as http
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from agents.capabilities import granted_types
from agents.models import Agent, AgentKey
from approvals import services
from approvals.api.problems import PROBLEM_CONTENT_TYPE
from approvals.api.refusals import record_agent_on_reviewer_endpoint
from approvals.api.serializers import (
    ActionOutput,
    ActionPageOutput,
    ActionTypeOutput,
    ApproveInput,
    PreviewOutput,
    ProblemOutput,
    ProposalInput,
    RejectInput,
    ResolveInput,
    SimulateInput,
    SimulationOutput,
)
from approvals.models import ActionStatus, Review
from approvals.policies import evaluation
from approvals.policies.rules import PolicyError
from approvals.presentation.previews import compute_preview, preview_as_dict
from approvals.selectors import actions as selectors
from approvals.selectors import keyset
from approvals.selectors.presenters import present_action
from approvals.services import undo
from catalog import registry

PROBLEMS = {
    code: OpenApiResponse(ProblemOutput, description=desc)
    for code, desc in [
        (400, "Invalid input"),
        (401, "Not authenticated"),
        (403, "Not allowed"),
        (404, "Not found"),
        (409, "Conflict"),
        (413, "Body too large"),
        (415, "Unsupported media type"),
        (429, "This agent key is over its request rate (Retry-After says when to try again)"),
    ]
}


def _problems(*codes: int) -> dict:
    """Error responses as they are served: RFC 9457 problem JSON, not application/json."""
    return {(code, PROBLEM_CONTENT_TYPE): PROBLEMS[code] for code in codes}


class IsAgent(BasePermission):
    message = "This endpoint is for agents (Authorization: Bearer <agent key>)."

    def has_permission(self, request, view):
        return isinstance(request.auth, AgentKey) and isinstance(request.user, Agent)


class IsReviewer(BasePermission):
    message = "This endpoint is for reviewers; an agent key never authorizes it."

    def has_permission(self, request, view):
        user = request.user
        if isinstance(request.auth, AgentKey) or isinstance(user, Agent):
            # An agent reaching for a reviewer's power is the confused deputy at work: it leaves a trace.
            record_agent_on_reviewer_endpoint(request)
            return False
        return user.is_active


class IsAgentOrReviewer(BasePermission):
    def has_permission(self, request, view):
        return IsAgent().has_permission(request, view) or IsReviewer().has_permission(request, view)


class NewestFirst:
    """The action list's keyset pages (approvals.selectors.keyset): newest first, ``?cursor=`` from a page's ``next`` or
    ``previous`` link, ``?limit=`` actions a page. The cursor is checked before the database sees it: one this
    API did not issue is a 404 problem."""

    ordering: keyset.Ordering = (
        keyset.Key("created_at", descending=True, kind=datetime),
        keyset.Key("id", descending=True, kind=uuid.UUID),
    )
    page_size = 50
    max_page_size = 200
    invalid_cursor_message = "Invalid cursor"
    NEXT, PREVIOUS = "next", "previous"  # the cursor's tag: which way it pages

    def paginated_response(self, qs, request, present) -> Response:
        after, backward = self._cursor(request.query_params.get("cursor"))
        size = self.size_for(request.query_params.get("limit"))
        page = keyset.page(qs, self.ordering, size=size, after=after, backward=backward)
        url = request.build_absolute_uri()
        rows = page.rows
        return Response(
            {
                "next": self._link(url, self.NEXT, rows[-1]) if page.has_next else None,
                "previous": self._link(url, self.PREVIOUS, rows[0]) if page.has_prev else None,
                "results": [present(row) for row in rows],
            }
        )

    def first_page_response(self, request, principal, status: str | None, present) -> Response:
        """The first page (no cursor), read by the prepared statements of ``selectors.first_page_for``."""
        limit = request.query_params.get("limit")
        rows, more = selectors.first_page_for(principal, status=status, size=self.size_for(limit))
        return Response(self.first_page_body(request.build_absolute_uri(), rows, more, present))

    @classmethod
    def first_page_body(cls, url: str, rows: list, more: bool, present) -> dict:
        """The first page of ``rows`` (and whether ``more`` follow) read at ``url`` (also approvals.api.agent_reads)."""
        return {
            "next": cls._link(url, cls.NEXT, rows[-1]) if more and rows else None,
            "previous": None,
            "results": [present(row) for row in rows],
        }

    @staticmethod
    def valid_limit(limit: str) -> bool:
        """A whole number of actions per page, at least 1 (DRF would silently fall back to the default size)."""
        return limit.isascii() and limit.isdigit() and int(limit) >= 1

    @classmethod
    def size_for(cls, limit: str | None) -> int:
        """Actions on a page for a ``?limit=`` already found valid, or none."""
        return min(int(limit), cls.max_page_size) if limit else cls.page_size

    def _cursor(self, token: str | None) -> tuple[list | None, bool]:
        if not token:  # absent or empty: the first page
            return None, False
        try:
            tag, values = keyset.read_cursor(token, self.ordering)
        except keyset.BadCursor:
            raise NotFound(self.invalid_cursor_message) from None
        if tag not in (self.NEXT, self.PREVIOUS):
            raise NotFound(self.invalid_cursor_message)
        return values, tag == self.PREVIOUS

    @classmethod
    def _link(cls, url: str, tag: str, row) -> str:
        return replace_query_param(url, "cursor", keyset.encode_cursor(tag, cls.ordering, row))


class ActionTypesView(APIView):
    permission_classes = [IsAgentOrReviewer]

    @extend_schema(
        operation_id="list_action_types", responses={200: ActionTypeOutput(many=True), **_problems(401, 429)}
    )
    def get(self, request):
        types = registry.all_types()
        if isinstance(request.user, Agent):
            allowed = granted_types(request.user)
            types = [t for t in types if t.name in allowed]
        return Response([t.catalog_entry() for t in types])


STATUS_FILTER = OpenApiParameter("status", str, enum=[s.value for s in ActionStatus], required=False)


class ActionsView(APIView):
    permission_classes = [IsAgentOrReviewer]
    agent_rate_scopes = {"POST": "proposals"}

    @extend_schema(
        operation_id="list_actions",
        parameters=[
            STATUS_FILTER,
            OpenApiParameter("cursor", str, required=False, description="From a page's `next` or `previous`."),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1},
                required=False,
                description=f"Actions per page (default {NewestFirst.page_size}; more than "
                f"{NewestFirst.max_page_size} gives {NewestFirst.max_page_size}).",
            ),
        ],
        responses={
            200: ActionPageOutput,
            **_problems(400, 401, 429),
            (404, PROBLEM_CONTENT_TYPE): OpenApiResponse(ProblemOutput, description="Not a cursor this API issued"),
        },
    )
    def get(self, request):
        limit = request.query_params.get("limit")
        if limit is not None and not NewestFirst.valid_limit(limit):
            raise ValidationError({"limit": ["A whole number of actions per page, at least 1."]})
        wanted = request.query_params.get("status")
        if wanted is not None and wanted not in ActionStatus.values:
            raise ValidationError({"status": [f"One of {', '.join(ActionStatus.values)}."]})
        if not request.query_params.get("cursor"):
            return NewestFirst().first_page_response(request, request.user, wanted, present_action)
        qs = selectors.actions_for(request.user)
        if wanted is not None:
            qs = qs.filter(status=wanted)
        return NewestFirst().paginated_response(qs, request, present_action)

    @extend_schema(
        operation_id="propose_action",
        request=ProposalInput,
        parameters=[
            OpenApiParameter(
                name="Idempotency-Key",
                location=OpenApiParameter.HEADER,
                required=False,
                type={"type": "string", "minLength": 1},
                description=(
                    "Instead of `idempotency_key` in the body (the body wins when both are sent): the same key again "
                    "returns the first action (200), or 409 with another body. Sent empty, it is a 400."
                ),
            )
        ],
        responses={200: ActionOutput, 201: ActionOutput, **_problems(400, 401, 403, 409, 413, 415, 429)},
    )
    def post(self, request):
        if not IsAgent().has_permission(request, self):
            self.permission_denied(request, message="Only agents propose actions.")
        body, status = propose(request.user, request.data, request.headers.get("Idempotency-Key"))
        return Response(body, status=status)


def propose(agent: Agent, data, header_key: str | None) -> tuple[dict, int]:
    """An agent's proposal from its parsed body and its ``Idempotency-Key`` header: the presented action and 201 (made)
    or 200 (the key's earlier action). Raises what the API answers as a problem. ActionsView.post's, and
    approvals.api.plain_writes' for the proposals it takes."""
    if not isinstance(data, dict):
        raise ValidationError({"body": ["Expected a JSON object."]})
    if header_key is not None and not header_key.strip():
        # An empty header is a key that failed to be made (`$(uuidgen)` with no uuidgen): ignoring it would
        # propose without the idempotency the caller asked for, and a retry would propose twice.
        raise ValidationError({"Idempotency-Key": ["Empty. Send a unique key (a UUID), or no header at all."]})
    if header_key and "idempotency_key" not in data:
        data = {**data, "idempotency_key": header_key}
    serializer = ProposalInput(data=data)
    serializer.is_valid(raise_exception=True)
    action, created = services.propose_action(agent=agent, proposal=services.Proposal(**serializer.validated_data))
    # A new action was written by this request and holds its reviews (none, or the policy's approval): present
    # it as committed instead of reading it back, which was a fifth of a proposal's cost (docs/BENCHMARKS.md).
    if not created:
        action = selectors.read_action_for(agent, action.id)
    return present_action(action), http.HTTP_201_CREATED if created else http.HTTP_200_OK


def _visible_action(request, action_id):
    action = selectors.read_action_for(request.user, action_id)
    if action is None:
        raise NotFound("No such action.")
    return action


class ActionDetailView(APIView):
    permission_classes = [IsAgentOrReviewer]

    @extend_schema(operation_id="get_action", responses={200: ActionOutput, **_problems(401, 404, 429)})
    def get(self, request, action_id):
        return Response(present_action(_visible_action(request, action_id)))


class CancelView(APIView):
    permission_classes = [IsAgent]

    @extend_schema(
        operation_id="cancel_action",
        request=None,
        responses={200: ActionOutput, **_problems(401, 403, 404, 409, 429)},
    )
    def post(self, request, action_id):
        services.cancel_action(action_id=action_id, agent=request.user)
        return Response(present_action(_visible_action(request, action_id)))


class ApproveView(APIView):
    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="approve_action",
        request=ApproveInput,
        responses={200: ActionOutput, **_problems(400, 401, 403, 404, 409)},
    )
    def post(self, request, action_id):
        return Response(approve(request.user, action_id, request.data))


def approve(reviewer, action_id: uuid.UUID, data) -> dict:
    """A reviewer's approval from its parsed body: the presented action. Raises what the API answers as a problem.
    ApproveView.post's, and approvals.api.plain_writes' for the approvals it takes."""
    # No visibility pre-check: a reviewer outside the action's group gets the service's 403, as API.md says.
    serializer = ApproveInput(data=data)
    serializer.is_valid(raise_exception=True)
    action = services.approve_action(
        action_id=action_id,
        reviewer=reviewer,
        via=Review.Via.API,
        comment=serializer.validated_data["comment"],
        edited_params=serializer.validated_data.get("params"),
        preview_fingerprint=serializer.validated_data.get("preview_fingerprint"),
        override_reason=serializer.validated_data["override_reason"],
    )
    # Presented as the approval left it (it holds its reviews): the reviewer sees what they just did, even when
    # an edit moved the action to a group they are not in (``uncounted_approvals`` says their approval does not
    # count under the rule now in force).
    return present_action(action)


class WithdrawView(APIView):
    """Undo your own approval within the undo window, before its execution is dispatched (approvals.services.undo)."""

    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="withdraw_approval",
        request=None,
        responses={200: ActionOutput, **_problems(401, 403, 404, 409)},
    )
    def post(self, request, action_id):
        undo.withdraw_approval(action_id, request.user, via=Review.Via.API)
        action = selectors.read_action_for(request.user, action_id) or selectors.reviewed_by(request.user, action_id)
        return Response(present_action(action))


class RejectView(APIView):
    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="reject_action",
        request=RejectInput,
        responses={200: ActionOutput, **_problems(400, 401, 403, 404, 409)},
    )
    def post(self, request, action_id):
        serializer = RejectInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.reject_action(
            action_id=action_id, reviewer=request.user, via=Review.Via.API, reason=serializer.validated_data["reason"]
        )
        return Response(present_action(_visible_action(request, action_id)))


class ResolveView(APIView):
    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="resolve_action",
        request=ResolveInput,
        responses={200: ActionOutput, **_problems(400, 401, 403, 404, 409)},
    )
    def post(self, request, action_id):
        """Settle an execution whose outcome is `unknown`, after checking the target: `succeeded` (it took effect)
        or `failed` (it did not happen). Reviewers of the action and staff; 409 unless the action is `unknown`."""
        serializer = ResolveInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.resolve_unknown_outcome(
            action_id,
            user=request.user,
            outcome=serializer.validated_data["outcome"],
            note=serializer.validated_data["note"],
            via=Review.Via.API,
        )
        return Response(present_action(_visible_action(request, action_id)))


class PreviewView(APIView):
    permission_classes = [IsReviewer]

    @extend_schema(operation_id="preview_action", responses={200: PreviewOutput, **_problems(401, 403, 404)})
    def get(self, request, action_id):
        """What the action would change, read from the live target now (reviewers only)."""
        action = _visible_action(request, action_id)
        preview = compute_preview(action.action_type, action.params, action=action, viewer=request.user, via="api")
        return Response(preview_as_dict(preview))


class SimulateView(APIView):
    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="simulate_policy",
        request=SimulateInput,
        responses={200: SimulationOutput, **_problems(400, 401, 403)},
    )
    def post(self, request):
        """What would happen if an agent proposed this action: rule, effect, approvers. Creates nothing."""
        serializer = SimulateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            result = evaluation.simulate(
                agent_name=data["agent"],
                action_type=data["action_type"],
                params=data["params"],
                on_behalf_of=data["on_behalf_of"],
            )
        except PolicyError as exc:
            raise ValidationError({exc.field: [str(exc)]}) from None
        return Response(result)
