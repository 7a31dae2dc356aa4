from django.urls import path, re_path

from approvals.humanlayer import views
from approvals.humanlayer.views import CONTACTS, FUNCTION_CALLS

urlpatterns = [
    path("function_calls", views.CreateView.as_view(kind=FUNCTION_CALLS), name="humanlayer-function-calls"),
    path(
        "function_calls/<str:call_id>", views.DetailView.as_view(kind=FUNCTION_CALLS), name="humanlayer-function-call"
    ),
    path("contact_requests", views.CreateView.as_view(kind=CONTACTS), name="humanlayer-contacts"),
    path("contact_requests/<str:call_id>", views.DetailView.as_view(kind=CONTACTS), name="humanlayer-contact"),
    path("agent/function_calls/pending", views.PendingView.as_view(kind=FUNCTION_CALLS)),
    path("agent/human_contacts/pending", views.PendingView.as_view(kind=CONTACTS)),
    path("agent/function_calls/<str:call_id>/respond", views.RespondView.as_view(kind=FUNCTION_CALLS)),
    path("agent/human_contacts/<str:call_id>/respond", views.RespondView.as_view(kind=CONTACTS)),
    path("agent/function_calls/<str:call_id>/escalate_email", views.EscalateView.as_view(kind=FUNCTION_CALLS)),
    path("agent/human_contacts/<str:call_id>/escalate_email", views.EscalateView.as_view(kind=CONTACTS)),
    re_path(r"^.*$", views.not_found),
]
