from django.urls import path

from approvals.sso import views

# Names as mozilla-django-oidc reverses them (the callback's redirect_uri).
urlpatterns = [
    path("authenticate/", views.ProviderRedirectView.as_view(), name="oidc_authentication_init"),
    path("callback/", views.ProviderCallbackView.as_view(), name="oidc_authentication_callback"),
]
