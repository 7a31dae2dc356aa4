"""A person sets their own password from the one-time link ``create_reviewer`` printed (approvals.services.accounts).

Django's password-reset confirmation: the token in the link is checked (it stops working once the password
changes, or after ``PASSWORD_RESET_TIMEOUT``), moved into the session and the address bar loses it. Setting
the password is audited in the same transaction. There is no "forgot my password" form on purpose: only an
operator issues links.
"""

from __future__ import annotations

from django.contrib.auth.views import PasswordResetCompleteView, PasswordResetConfirmView
from django.db import transaction
from django.urls import reverse_lazy

from approvals.services.accounts import record_password_set


class SetPasswordView(PasswordResetConfirmView):
    template_name = "registration/set_password.html"
    success_url = reverse_lazy("password_set_done")

    def form_valid(self, form):
        with transaction.atomic():
            response = super().form_valid(form)
            record_password_set(form.user, via="web")
        return response


class PasswordSetDoneView(PasswordResetCompleteView):
    template_name = "registration/password_set_done.html"
