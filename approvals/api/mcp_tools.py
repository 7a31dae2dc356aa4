"""GET /api/v1/mcp/tools: the gateway's MCP tools this agent may call (docs/API.md, docs/gateway.md). Thin."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from approvals.api.problems import PROBLEM_CONTENT_TYPE
from approvals.api.serializers import ProblemOutput
from approvals.api.views import IsAgent
from approvals.gateway.mcp_tools import tools_for


class McpToolOutput(serializers.Serializer):
    name = serializers.CharField(help_text="<server>.<tool>: the name the agent's MCP host shows.")
    server = serializers.CharField()
    tool = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    input_schema = serializers.DictField(help_text="The upstream's JSON Schema for the tool's arguments.")
    annotations = serializers.DictField(help_text="As the upstream claims them (readOnlyHint, destructiveHint, ...).")
    annotations_trusted = serializers.BooleanField(help_text="Whether staff take this upstream's annotations as true.")
    constraints = serializers.ListField(
        child=serializers.DictField(), help_text="Each granting capability's argument constraints (any one admits)."
    )


class McpToolsOutput(serializers.Serializer):
    tools = McpToolOutput(many=True)


class McpToolsView(APIView):
    permission_classes = [IsAgent]

    @extend_schema(
        operation_id="list_mcp_tools",
        description="The MCP tools this agent may call through Countersign; call one by proposing `mcp.tool_call` "
        'with {"server", "tool", "arguments"}.',
        responses={
            200: McpToolsOutput,
            **{
                (code, PROBLEM_CONTENT_TYPE): OpenApiResponse(ProblemOutput, description=text)
                for code, text in [(401, "Not authenticated"), (403, "Not an agent"), (429, "Over the rate")]
            },
        },
    )
    def get(self, request):
        return Response({"tools": tools_for(request.user)})
