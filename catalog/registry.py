"""Which action types exist: the ones the app registers when it is ready (approvals.apps: the built-ins of
``approvals.action_types.BUILTIN_TYPES``) plus ``COUNTERSIGN_ACTION_TYPES`` (dotted class paths)."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from catalog.base import ActionType

_registry: dict[str, ActionType] = {}


def register(action_type: ActionType) -> None:
    if action_type.name in _registry and type(_registry[action_type.name]) is not type(action_type):
        raise ImproperlyConfigured(f"action type {action_type.name!r} registered twice")
    _registry[action_type.name] = action_type


def load_configured_types(builtin: list[str]) -> None:
    for path in [*builtin, *settings.COUNTERSIGN_ACTION_TYPES]:
        cls = import_string(path)
        if not (isinstance(cls, type) and issubclass(cls, ActionType)):
            raise ImproperlyConfigured(f"{path} is not an ActionType subclass")
        register(cls())


def get(name: str) -> ActionType | None:
    return _registry.get(name)


def all_types() -> list[ActionType]:
    return sorted(_registry.values(), key=lambda t: t.name)
