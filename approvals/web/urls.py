from django.urls import path

from approvals.web import access, audit_views, claim_views, containment_views, desk_views, triage_views, views

app_name = "approvals"

urlpatterns = [
    path("", views.queue, name="queue"),
    path("history", views.history, name="history"),
    path("policies", views.policies, name="policies"),
    path("dashboard", desk_views.dashboard, name="dashboard"),
    path("audit", audit_views.audit_log, name="audit"),
    path("access", access.active_access, name="access"),
    path("actions/<uuid:action_id>/end-access", access.end_early, name="end-access"),
    path("actions/<uuid:action_id>/undo", access.undo, name="undo"),
    path("actions/<uuid:action_id>/approve-shortened", access.approve_shortened, name="approve-shortened"),
    path("actions/<uuid:action_id>", views.detail, name="detail"),
    path("actions/<uuid:action_id>/row", views.queue_row, name="queue-row"),
    path("actions/<uuid:action_id>/live", views.detail_live, name="detail-live"),
    path("actions/<uuid:action_id>/approve", views.approve, name="approve"),
    path("actions/<uuid:action_id>/reject", views.reject, name="reject"),
    path("actions/<uuid:action_id>/resolve", views.resolve, name="resolve"),
    path("actions/<uuid:action_id>/claim", claim_views.claim, name="claim"),
    path("actions/<uuid:action_id>/release", claim_views.release, name="release"),
    path("actions/<uuid:action_id>/check-params", desk_views.check_params, name="check-params"),
    path("triage/bulk", triage_views.bulk, name="triage-bulk"),
    path("actions/<uuid:action_id>/triage", triage_views.pane, name="triage-pane"),
    path("actions/<uuid:action_id>/triage/approve", triage_views.approve, name="triage-approve"),
    path("actions/<uuid:action_id>/triage/reject", triage_views.reject, name="triage-reject"),
    path("actions/<uuid:action_id>/withdraw", triage_views.withdraw, name="triage-withdraw"),
    path("agents/<slug:name>/freeze", containment_views.freeze_agent, name="freeze-agent"),
    path("executions/switch", containment_views.execution_switch, name="execution-switch"),
]
