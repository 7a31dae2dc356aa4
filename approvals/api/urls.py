from django.urls import path

from approvals.api import access, containment, views
from approvals.api.mcp_tools import McpToolsView
from approvals.api.wait import wait_for_action

urlpatterns = [
    path("action-types", views.ActionTypesView.as_view(), name="api-action-types"),
    path("mcp/tools", McpToolsView.as_view(), name="api-mcp-tools"),
    path("actions", views.ActionsView.as_view(), name="api-actions"),
    path("actions/<uuid:action_id>", views.ActionDetailView.as_view(), name="api-action"),
    path("actions/<uuid:action_id>/wait", wait_for_action, name="api-action-wait"),
    path("actions/<uuid:action_id>/cancel", views.CancelView.as_view(), name="api-action-cancel"),
    path("actions/<uuid:action_id>/preview", views.PreviewView.as_view(), name="api-action-preview"),
    path("actions/<uuid:action_id>/approve", views.ApproveView.as_view(), name="api-action-approve"),
    path("policies/simulate", views.SimulateView.as_view(), name="api-policy-simulate"),
    path("actions/<uuid:action_id>/reject", views.RejectView.as_view(), name="api-action-reject"),
    path("actions/<uuid:action_id>/withdraw", views.WithdrawView.as_view(), name="api-action-withdraw"),
    path("actions/<uuid:action_id>/resolve", views.ResolveView.as_view(), name="api-action-resolve"),
    path("actions/<uuid:action_id>/extend", access.ExtendView.as_view(), name="api-action-extend"),
    path("actions/<uuid:action_id>/end-access", access.EndAccessView.as_view(), name="api-action-end-access"),
    path("agents/<slug:name>/freeze", containment.FreezeAgentView.as_view(), name="api-agent-freeze"),
    path("agents/<slug:name>/unfreeze", containment.UnfreezeAgentView.as_view(), name="api-agent-unfreeze"),
    path("executions/pause", containment.PauseExecutionsView.as_view(), name="api-executions-pause"),
    path("executions/resume", containment.ResumeExecutionsView.as_view(), name="api-executions-resume"),
]
