"""The sign-in page, the redirect to the provider and its callback.

The page offers "Sign in with <provider>" when single sign-on is configured, and the password form while
password log-in is on (with COUNTERSIGN_LOCAL_LOGIN=false, only at ``?break_glass=1``, for the break-glass
superusers). ``step_up_url`` is where the decision page sends a reviewer whom the policy wants freshly signed in:
through the provider with ``prompt=login`` and ``max_age``, then back to the decision.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.urls import reverse
from django.views.generic import View
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from approvals.sso import identities, provider, session
from approvals.web.auth import ThrottledLoginView
from approvals.web.auth_audit import _origin

MAX_AGE_LIMIT = 24 * 3600


class SignInView(ThrottledLoginView):
    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(
            sso_enabled=provider.enabled(),
            sso_provider_name=provider.display_name(),
            local_login=settings.COUNTERSIGN_LOCAL_LOGIN,
            break_glass=self.request.GET.get("break_glass") == "1" or self.request.method == "POST",
        )
        return context


def step_up_url(next_path: str, minutes: int) -> str:
    """The provider's sign-in, forced (prompt=login) and at most ``minutes`` old (max_age), back to ``next_path``."""
    query = urlencode({"next": next_path, "max_age": max(0, minutes) * 60})
    return f"{reverse('oidc_authentication_init')}?{query}"


class ProviderRedirectView(OIDCAuthenticationRequestView):
    """Sends the browser to the provider's authorization endpoint (state, nonce, PKCE S256)."""

    def __init__(self, **kwargs):
        View.__init__(self, **kwargs)  # the endpoint comes from discovery, at the request

    def get(self, request):
        if not provider.enabled():
            raise Http404("single sign-on is not configured")
        try:
            found = provider.discover()
        except provider.DiscoveryFailed as exc:
            identities.refuse(f"the provider's discovery document: {exc}", origin=_origin(request))
            messages.error(request, f"{provider.display_name()} cannot be reached right now; try again shortly.")
            return HttpResponseRedirect(resolve_url(settings.LOGIN_URL))
        self.OIDC_OP_AUTH_ENDPOINT = found.authorization_endpoint
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        return super().get(request)

    def get_extra_params(self, request):
        raw = request.GET.get("max_age", "")
        if raw.isdigit() and int(raw) <= MAX_AGE_LIMIT:
            # Step-up: the provider asks for the password (and second factor) again, whatever its session.
            return {"prompt": "login", "max_age": raw}
        return {}


class ProviderCallbackView(OIDCAuthenticationCallbackView):
    """The provider sends the browser back here with a code; OidcBackend checks it and signs the person in."""

    def get(self, request):
        if request.GET.get("error"):
            description = str(request.GET.get("error_description") or "")[:200]
            identities.refuse(
                f"the provider answered {str(request.GET['error'])[:60]}: {description}".rstrip(": "),
                origin=_origin(request),
            )
        elif "code" in request.GET and "state" in request.GET:
            states = request.session.get("oidc_states") or {}
            if request.GET["state"] not in states:
                # A replayed or forged callback (or one from another browser): never exchanged.
                identities.refuse("the callback's state is not this browser's", origin=_origin(request))
                return self.login_failure()
        return super().get(request)

    def login_success(self):
        response = super().login_success()
        signed = getattr(self.user, "countersign_sign_in", None)
        # A new sign-in, a step-up included: the session's age and the authentication time start again.
        session.mark_signed_in(self.request, auth_time=signed.auth_time.timestamp() if signed else None)
        return response

    def login_failure(self):
        messages.error(
            self.request, f"Signing in with {provider.display_name()} failed. Try again, or ask an administrator."
        )
        return HttpResponseRedirect(resolve_url(settings.LOGIN_URL))
