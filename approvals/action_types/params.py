"""An action's parameters checked against its type: the schema, the credential they name, the type's own checks.

Below both the services that write (a proposal, an approval with edits, minting an execution grant) and the
reads that check without writing (the desk's live check of edited parameters, previews), so none of them
imports another for it. Reads only.
"""

from __future__ import annotations

from typing import Any

from approvals.errors import InvalidInput
from approvals.models import Credential
from approvals.validation import schema_errors
from catalog.base import ActionType, ParamsRejected


def resolve_credential(action_type: ActionType, params: dict[str, Any]) -> Credential | None:
    """The credential ``params`` name, of a kind ``action_type`` uses; None for a type that uses none.

    Raises InvalidInput when the type needs one and none by that name (and kind) exists."""
    name = action_type.credential_name(params)
    if not action_type.credential_kinds:
        return None
    credential = Credential.objects.filter(name=name, kind__in=action_type.credential_kinds).first() if name else None
    if credential is None:
        kinds = ", ".join(action_type.credential_kinds)
        raise InvalidInput(
            "Unknown credential.", errors={"params.credential": [f"No credential named {name!r} of kind {kinds}."]}
        )
    return credential


def validate_params(action_type: ActionType, params: dict[str, Any], prefix: str = "params") -> Credential | None:
    """``params`` checked against the type's schema, credential and own checks; the credential they name.

    Raises InvalidInput, its ``errors`` keyed by dotted path under ``prefix``."""
    errors = schema_errors(action_type.params_schema, params, prefix)
    if errors:
        raise InvalidInput("Parameters do not match the action type's schema.", errors=errors)
    credential = resolve_credential(action_type, params)
    try:
        action_type.check_params(params, credential)
    except ParamsRejected as exc:
        raise InvalidInput(
            "Parameters were rejected.", errors={f"{prefix}.{k}": v for k, v in exc.errors.items()}
        ) from None
    return credential
