from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from approvals.api.schema import SchemaView, SwaggerView
from approvals.sso.views import SignInView
from approvals.web.auth import ThrottledAdminAuthenticationForm
from approvals.web.ops import dependencies, healthz, metrics, readyz
from approvals.web.password_views import PasswordSetDoneView, SetPasswordView
from approvals.web.slack_views import interactivity as slack_interactivity

# The admin's log-in is slowed down like the reviewers' (a second door to the same accounts).
admin.site.login_form = ThrottledAdminAuthenticationForm

urlpatterns = [
    path("api/v1/", include("approvals.api.urls")),
    path("humanlayer/v1/", include("approvals.humanlayer.urls")),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    # The split view serves its init script as a file: no inline script, so the CSP holds here too.
    path("api/docs/", SwaggerView.as_view(url_name="schema"), name="api-docs"),
    # The sign-in page: "Sign in with <provider>" and, while password log-in is on, the password form (docs/sso.md).
    path("accounts/login/", SignInView.as_view(), name="login"),
    # Single sign-on: the redirect to the provider and its callback (the redirect URL: <base>/oidc/callback/).
    path("oidc/", include("approvals.sso.urls")),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # The one-time set-password link printed by create_reviewer (approvals.services.accounts.password_link).
    path("accounts/reset/<uidb64>/<token>/", SetPasswordView.as_view(), name="password_set"),
    path("accounts/reset/done/", PasswordSetDoneView.as_view(), name="password_set_done"),
    # The audit log's admin pages moved with its models to the audit app; old links and bookmarks still land.
    re_path(
        r"^admin/approvals/auditevent/(?P<rest>.*)$",
        RedirectView.as_view(url="/admin/audit/auditevent/%(rest)s", permanent=True, query_string=True),
    ),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    # Answered before the rest of the middleware: any Host, no redirect (approvals/web/probes.py).
    path("healthz/dependencies", dependencies, name="healthz-dependencies"),
    path("slack/interactivity", slack_interactivity, name="slack-interactivity"),
    path("metrics", metrics, name="metrics"),
    path("", include("approvals.web.urls")),
]

handler400 = "approvals.web.ops.bad_request"
handler403 = "approvals.web.ops.forbidden"
handler404 = "approvals.web.ops.not_found"
handler500 = "approvals.web.ops.server_error"
