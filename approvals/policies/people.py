"""Who a piece of text names: ``on_behalf_of`` resolved to a person, and people compared as people.

An agent says who asked it in free text (``on_behalf_of``). Separation of duties must not depend on
how that text is spelled, so it is resolved once, when the action is proposed, to a user:

- a username, in any case (``ivan``, ``IVAN``);
- an email address, in any case, bare or as ``Name <email>`` (``Ivan Petrov <IVAN@example.com>``);
- a linked Slack member id (``U0123ABCD`` or the mention form ``<@U0123ABCD>``), through SlackIdentity.

Only active users are resolved, and only when the text names exactly one of them: an ambiguous or
unknown name resolves to nobody (``None``), which the access floor refuses (approvals.services.proposals).
Pure reads; no writes.
"""

from __future__ import annotations

import re
from email.utils import parseaddr

from django.contrib.auth import get_user_model

from approvals.models import SlackIdentity

# "U0123ABCD", "<@U0123ABCD>" or "<@U0123ABCD|ivan>" (Slack's mention forms).
_SLACK_ID = re.compile(r"<@([UW][A-Z0-9]{2,30})(?:\|[^>]*)?>|([UW][A-Z0-9]{2,30})")
_EMAIL = re.compile(r"[^@\s<>]+@[^@\s<>]+")
MAX_TEXT = 254


def slack_id_in(text: str) -> str | None:
    match = _SLACK_ID.fullmatch(text.strip())
    return (match.group(1) or match.group(2)) if match else None


def email_in(text: str) -> str | None:
    """The address in ``ivan@example.com`` or ``Ivan Petrov <ivan@example.com>``, lower-cased; else None."""
    _, address = parseaddr(text.strip())
    address = address.strip().lower()
    return address if _EMAIL.fullmatch(address) else None


def _only(qs):
    found = list(qs[:2])
    return found[0] if len(found) == 1 else None


def resolve_person(text: str):
    """The one active user ``text`` names, or None (nobody, or more than one)."""
    text = (text or "").strip()
    if not text or len(text) > MAX_TEXT:
        return None
    users = get_user_model().objects.filter(is_active=True)
    slack_id = slack_id_in(text)
    if slack_id:
        link = SlackIdentity.objects.select_related("user").filter(slack_user_id=slack_id).first()
        if link is not None and link.user.is_active:
            return link.user
    address = email_in(text)
    if address:
        user = _only(users.filter(email__iexact=address))
        if user is not None:
            return user
    return _only(users.filter(username__iexact=text))


def names_user(text: str, user, *, check_slack: bool = True) -> bool:
    """Does ``text`` name ``user``, in any of the forms above? For actions proposed before resolution existed.

    ``check_slack=False`` skips the Slack link lookup (a query) when the text was already resolved at proposal.
    """
    text = (text or "").strip()
    if not text or user is None:
        return False
    if text.lower() == user.get_username().lower():
        return True
    address = email_in(text)
    if address and user.email and address == user.email.lower():
        return True
    slack_id = slack_id_in(text) if check_slack else None
    return bool(slack_id) and SlackIdentity.objects.filter(slack_user_id=slack_id, user=user).exists()
