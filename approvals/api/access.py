"""Time-boxed access over the API (thin views; the work is approvals.services.access's).

``POST /api/v1/actions/{id}/extend`` {"duration", "summary"?}: the agent that made a time-boxed grant asks for more
time; the answer is the extension, a new action decided like the grant (201). ``POST
/api/v1/actions/{id}/end-access`` {"reason"?}: staff end a grant now; an agent key gets 403 (audited, as on every
reviewer endpoint).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework import status as http
from rest_framework.response import Response
from rest_framework.views import APIView

from approvals.api.containment import IsStaffReviewer
from approvals.api.serializers import ActionOutput
from approvals.api.views import IsAgent, _problems, _visible_action
from approvals.selectors.presenters import present_action
from approvals.services import access
from audit.chain import Actor


class StrictInput(serializers.Serializer):
    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class ExtendInput(StrictInput):
    duration = serializers.JSONField(
        help_text="How much longer: whole seconds (3600) or an ISO 8601 duration (PT1H). Within the same maximum "
        "as the grant."
    )
    summary = serializers.CharField(max_length=280, required=False, allow_blank=True, default="")


class EndAccessInput(StrictInput):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class ExtendView(APIView):
    permission_classes = [IsAgent]
    agent_rate_scopes = {"POST": "proposals"}

    @extend_schema(
        operation_id="extend_access",
        request=ExtendInput,
        responses={201: ActionOutput, **_problems(400, 401, 403, 404, 409, 429)},
    )
    def post(self, request, action_id):
        """Ask for more time on a time-boxed grant that is still active: a new pending action (``extends`` names
        the grant) that needs the same approvals as the grant did."""
        serializer = ExtendInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        extension = access.propose_extension(
            action_id,
            agent=request.user,
            duration=serializer.validated_data["duration"],
            summary=serializer.validated_data["summary"],
        )
        return Response(present_action(_visible_action(request, extension.id)), status=http.HTTP_201_CREATED)


class EndAccessView(APIView):
    permission_classes = [IsStaffReviewer]

    @extend_schema(
        operation_id="end_access",
        request=EndAccessInput,
        responses={200: ActionOutput, **_problems(400, 401, 403, 404, 409)},
    )
    def post(self, request, action_id):
        """End a time-boxed grant now (staff): its revert starts at once. 409 when it is no longer active."""
        serializer = EndAccessInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        access.end_access(
            action_id,
            actor=Actor.user(request.user, "api"),
            user=request.user,
            reason=serializer.validated_data["reason"],
        )
        return Response(present_action(_visible_action(request, action_id)))
