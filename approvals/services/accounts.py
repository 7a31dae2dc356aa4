"""The people who use Countersign: reviewers, their groups, staff. Created and changed here, audited.

- A **reviewer** is an active user in a reviewer group: the default group
  (``COUNTERSIGN_DEFAULT_REVIEWER_GROUP``, ``reviewers``) or one a policy rule names. Groups are Django groups,
  made on first use.
- **Staff** (``is_staff``) open the Django admin for Countersign's own models through the ``countersign-staff``
  group, which holds exactly the model permissions the admin pages need (kept in step here, idempotently, each
  time someone is made staff). It grants nothing over users or groups: people are managed with
  ``create_reviewer`` (or by a superuser), so staff cannot make themselves superusers or join a group.
- Passwords are never on a command line: one comes from stdin, or the person gets a one-time set-password link
  (Django's password-reset token: it stops working once the password is set, or after
  ``PASSWORD_RESET_TIMEOUT``).

Every change is one audit event (``user.created`` / ``user.updated``, ``user.password_set``,
``user.password_link_issued``); a password or token never is. ``approvals.policies.people`` (who a piece of text names)
only reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group, Permission
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from audit.chain import Actor, record_event

if TYPE_CHECKING:
    from django.db.models import Field, Model

STAFF_GROUP = "countersign-staff"

# What the admin pages of approvals/admin/agents.py and approvals/admin/__init__.py let staff do, per model. Changes
# there go
# through audited services; models the admin shows read-only need only "view". No auth.* permission: staff
# must not be able to change people or groups (their own included).
STAFF_PERMISSIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("agents", "agent"): ("view", "add", "change"),
    ("agents", "agentkey"): ("view", "change"),
    ("agents", "capability"): ("view", "add", "change", "delete"),
    ("approvals", "actionrequest"): ("view",),
    ("approvals", "review"): ("view",),
    ("audit", "auditevent"): ("view",),
    ("approvals", "outboxmessage"): ("view",),
    ("approvals", "credential"): ("view", "add", "change"),
    ("approvals", "mcpupstream"): ("view", "add", "change"),  # approvals/admin/mcp.py
    ("approvals", "policyrule"): ("view", "add", "change", "delete"),
    ("approvals", "policyversion"): ("view",),
    ("approvals", "slackidentity"): ("view", "add", "change", "delete"),
    ("approvals", "webhookdelivery"): ("view",),
    ("approvals", "executionswitch"): ("view", "change"),
}


@dataclass
class PersonChange:
    user: object
    created: bool
    changes: dict = field(default_factory=dict)  # what the audit event says changed


def _permissions() -> list[Permission]:
    query = Q(pk__in=[])
    wanted = set()
    for (app_label, model), verbs in STAFF_PERMISSIONS.items():
        codenames = [f"{verb}_{model}" for verb in verbs]
        wanted |= {(app_label, c) for c in codenames}
        query |= Q(content_type__app_label=app_label, codename__in=codenames)
    found = list(Permission.objects.filter(query).select_related("content_type"))
    missing = wanted - {(p.content_type.app_label, p.codename) for p in found}
    if missing:
        # Only before migrate has created them; never silently hand out a partial set.
        raise RuntimeError(f"permissions missing (run migrate): {', '.join(sorted(c for _, c in missing))}")
    return found


def ensure_staff_group() -> Group:
    """The ``countersign-staff`` group with exactly ``STAFF_PERMISSIONS`` (made or corrected; idempotent)."""
    group, _ = Group.objects.get_or_create(name=STAFF_GROUP)
    wanted = _permissions()
    if set(group.permissions.all()) != set(wanted):
        group.permissions.set(wanted)
    return group


def _name_column(model: type[Model], name: str) -> tuple[Field[Any, Any], int]:
    """A name column of ``model`` and its length limit: the username and a group's name are CharFields, which
    always have a max_length."""
    column = cast("Field[Any, Any]", model._meta.get_field(name))
    return column, cast(int, column.max_length)


def _clean_username(username: str) -> str:
    User = get_user_model()
    username = User.normalize_username((username or "").strip())
    name_field, limit = _name_column(User, User.USERNAME_FIELD)
    if not username:
        raise ValidationError("a username is required")
    if len(username) > limit:
        raise ValidationError(f"a username has at most {limit} characters")
    for validator in name_field.validators:
        try:
            validator(username)
        except ValidationError:
            raise ValidationError(
                f"{username!r} is not a valid username (letters, digits and @ . + - _ only)"
            ) from None
    return username


def _clean_email(email: str, user) -> str:
    email = (email or "").strip()
    try:
        validate_email(email)
    except ValidationError:
        raise ValidationError(f"{email!r} is not an email address") from None
    # People are compared as people (approvals.policies.people, Slack link by email): one address, one person.
    taken = get_user_model().objects.filter(email__iexact=email)
    if user is not None and user.pk:
        taken = taken.exclude(pk=user.pk)
    other = taken.first()
    if other is not None:
        raise ValidationError(f"{other.get_username()} already has the email {email}")
    return email


def _clean_group_names(names: list[str]) -> list[str]:
    cleaned = []
    _, limit = _name_column(Group, "name")
    for name in names:
        name = (name or "").strip()
        if not name or len(name) > limit:
            raise ValidationError(f"a group name is 1 to {limit} characters, not {name!r}")
        if name == STAFF_GROUP:
            raise ValidationError(f"{STAFF_GROUP} is given with --staff, not as a reviewer group")
        cleaned.append(name)
    return list(dict.fromkeys(cleaned))


def save_person(
    *,
    username: str,
    actor: Actor,
    email: str | None = None,
    groups: list[str] | None = None,
    remove_groups: list[str] | None = None,
    staff: bool | None = None,
    password: str | None = None,
) -> PersonChange:
    """Create ``username`` or update them; one audit event for what changed, or none when nothing did.

    ``groups`` are joined (each made when missing) and ``remove_groups`` left; ``staff`` True makes them staff
    with the ``countersign-staff`` group, False takes both away, None leaves them. A new person needs an email
    and, without a ``password``, gets an unusable one until they follow a set-password link. Raises
    ValidationError (nothing written) on a bad name, email, group or password.
    """
    User = get_user_model()
    username = _clean_username(username)
    groups = _clean_group_names(groups or [])
    remove_groups = _clean_group_names(remove_groups or [])
    both = sorted(set(groups) & set(remove_groups))
    if both:
        raise ValidationError(f"both joining and leaving {', '.join(both)}")
    with transaction.atomic():
        user = User.objects.select_for_update().filter(username=username).first()
        created = user is None
        if user is None:
            other = User.objects.filter(username__iexact=username).first()
            if other is not None:
                # on_behalf_of names people in any case (approvals.policies.people): "Alice" and "alice" would be one
                # name.
                raise ValidationError(f"{other.get_username()} already exists (usernames are compared in any case)")
            if email is None:
                raise ValidationError(f"{username} is a new person: give their --email")
            user = User(username=username)
        changes: dict = {}
        if email is not None:
            email = _clean_email(email, user)
            if email != user.email:
                changes["email"] = email
                user.email = email
        if password is not None:
            if not password:
                raise ValidationError("the password is empty")
            password_validation.validate_password(password, user)
            user.set_password(password)
            changes["password_changed"] = True  # that it changed, never what to
        elif created:
            user.set_unusable_password()
        if staff is not None and staff != user.is_staff:
            user.is_staff = staff
            changes["staff"] = staff
        user.save()
        current = set(user.groups.values_list("name", flat=True))
        joined = [name for name in groups if name not in current]
        for name in joined:
            user.groups.add(Group.objects.get_or_create(name=name)[0])
        left = [name for name in remove_groups if name in current]
        if left:
            user.groups.remove(*Group.objects.filter(name__in=left))
        if staff is True:
            # Also when already staff: a staff account made before this group existed gets its permissions.
            if STAFF_GROUP not in current:
                joined.append(STAFF_GROUP)
            user.groups.add(ensure_staff_group())
        elif staff is False and STAFF_GROUP in current:
            user.groups.remove(Group.objects.get(name=STAFF_GROUP))
            left.append(STAFF_GROUP)
        if joined:
            changes["joined"] = joined
        if left:
            changes["left"] = left
        if created or changes:
            record_event(
                actor=actor,
                verb="user.created" if created else "user.updated",
                object_type="user",
                object_id=str(user.pk),
                data={"user": username, **changes},
            )
    return PersonChange(user=user, created=created, changes=changes)


def password_link(user, *, actor: Actor, base_url: str | None = None) -> str:
    """A one-time link where ``user`` sets their password (valid until used or ``PASSWORD_RESET_TIMEOUT``)."""
    uidb64 = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    path = reverse("password_set", kwargs={"uidb64": uidb64, "token": token})
    with transaction.atomic():
        record_event(
            actor=actor,
            verb="user.password_link_issued",
            object_type="user",
            object_id=str(user.pk),
            data={"user": user.get_username(), "valid_seconds": settings.PASSWORD_RESET_TIMEOUT},
        )
    return (base_url or settings.COUNTERSIGN_BASE_URL).rstrip("/") + path


def record_password_set(user, *, via: str) -> None:
    """The person set their own password through a link (inside the transaction that saved it)."""
    record_event(
        actor=Actor.user(user, via),
        verb="user.password_set",
        object_type="user",
        object_id=str(user.pk),
        data={"user": user.get_username()},
    )
