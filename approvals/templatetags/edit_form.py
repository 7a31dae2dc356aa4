"""``{% load edit_form %}``: the widgets of an action type's edit form (approvals/presentation/edit_form.py)."""

from __future__ import annotations

from typing import Any

from django import template

from approvals.presentation.edit_form import form_spec
from catalog import registry

register = template.Library()


@register.simple_tag
def edit_form_spec(action) -> dict[str, Any] | None:
    """The form for editing ``action``'s parameters; None when its type is no longer installed (raw JSON only)."""
    action_type = registry.get(action.action_type)
    return form_spec(action_type.params_schema) if action_type is not None else None
