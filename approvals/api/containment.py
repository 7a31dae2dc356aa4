"""The kill switches for staff over the reviewer API: freeze an agent, pause executions (thin views).

``POST /api/v1/agents/{name}/freeze`` {"reason"} and ``/unfreeze``; ``POST /api/v1/executions/pause``
{"reason"} and ``/resume``. A staff reviewer's token or session only: an agent key gets 403 (and the
attempt is audited, as on every reviewer endpoint), a reviewer who is not staff too. The work is
approvals.services.containment's.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.models import Agent
from approvals.api.refusals import record_not_staff
from approvals.api.views import IsReviewer, _problems
from approvals.models import ExecutionSwitch
from approvals.services import containment
from audit.chain import Actor


class IsStaffReviewer(IsReviewer):
    message = "Only staff may use the kill switches."

    def has_permission(self, request, view):
        if not super().has_permission(request, view):
            return False
        if not request.user.is_staff:
            record_not_staff(request, request.user)
            return False
        return True


class ReasonInput(serializers.Serializer):
    reason = serializers.CharField(max_length=containment.MAX_REASON, trim_whitespace=True)


class AgentFreezeOutput(serializers.Serializer):
    agent = serializers.CharField()
    frozen = serializers.BooleanField()
    frozen_at = serializers.DateTimeField(allow_null=True)
    reason = serializers.CharField(allow_blank=True)
    cancelled = serializers.IntegerField(required=False, help_text="Pending actions cancelled by this freeze.")
    stopped = serializers.IntegerField(required=False, help_text="Approved executions stopped before they started.")


class ExecutionSwitchOutput(serializers.Serializer):
    paused = serializers.BooleanField()
    reason = serializers.CharField(allow_blank=True)
    changed_by = serializers.CharField(allow_blank=True)
    changed_at = serializers.DateTimeField()
    dispatched = serializers.IntegerField(required=False, help_text="Held executions dispatched on resume.")


def _actor(request) -> Actor:
    return Actor.user(request.user, "api")


def _agent(name: str) -> Agent:
    agent = Agent.objects.filter(name=name).first()
    if agent is None:
        raise NotFound("No such agent.")
    return agent


def _present_agent(agent: Agent, **extra) -> dict:
    agent.refresh_from_db(fields=["frozen_at", "frozen_reason"])
    return {
        "agent": agent.name,
        "frozen": agent.frozen_at is not None,
        "frozen_at": agent.frozen_at,
        "reason": agent.frozen_reason,
        **extra,
    }


def _present_switch(**extra) -> dict:
    switch = ExecutionSwitch.objects.filter(pk=1).first() or ExecutionSwitch(pk=1)
    return {
        "paused": switch.paused,
        "reason": switch.reason,
        "changed_by": switch.changed_by,
        "changed_at": switch.changed_at,
        **extra,
    }


class FreezeAgentView(APIView):
    permission_classes = [IsStaffReviewer]

    @extend_schema(
        operation_id="freeze_agent",
        request=ReasonInput,
        responses={200: AgentFreezeOutput, **_problems(400, 401, 403, 404)},
    )
    def post(self, request, name):
        """Freeze an agent: keys suspended, pending actions cancelled, unstarted executions stopped (staff)."""
        agent = _agent(name)
        serializer = ReasonInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        done = containment.freeze_agent(agent, serializer.validated_data["reason"], _actor(request))
        return Response(AgentFreezeOutput(_present_agent(agent, **done)).data)


class UnfreezeAgentView(APIView):
    permission_classes = [IsStaffReviewer]

    @extend_schema(
        operation_id="unfreeze_agent", request=None, responses={200: AgentFreezeOutput, **_problems(401, 403, 404)}
    )
    def post(self, request, name):
        """Give a frozen agent its keys back; what was cancelled or stopped stays so (staff)."""
        agent = _agent(name)
        containment.unfreeze_agent(agent, _actor(request))
        return Response(AgentFreezeOutput(_present_agent(agent)).data)


class PauseExecutionsView(APIView):
    permission_classes = [IsStaffReviewer]

    @extend_schema(
        operation_id="pause_executions",
        request=ReasonInput,
        responses={200: ExecutionSwitchOutput, **_problems(400, 401, 403)},
    )
    def post(self, request):
        """Hold every new execution; approvals are still recorded and approved actions wait (staff)."""
        serializer = ReasonInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        containment.pause_executions(serializer.validated_data["reason"], _actor(request))
        return Response(ExecutionSwitchOutput(_present_switch()).data)


class ResumeExecutionsView(APIView):
    permission_classes = [IsStaffReviewer]

    @extend_schema(
        operation_id="resume_executions", request=None, responses={200: ExecutionSwitchOutput, **_problems(401, 403)}
    )
    def post(self, request):
        """Let executions run again and dispatch what waited, each at most once (staff)."""
        dispatched = containment.resume_executions(_actor(request))
        return Response(ExecutionSwitchOutput(_present_switch(dispatched=dispatched)).data)
