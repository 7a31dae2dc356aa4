"""The gateway's MCP upstreams: register, change, set their secrets (write-only), refresh their tool lists. Audited;
the secrets' values never are (only their names)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from approvals.action_types.mcp_client import UpstreamError, UpstreamSecrets, connect, seal_secrets
from approvals.credentials.crypto import rotate_token
from approvals.errors import InvalidInput
from approvals.models import McpUpstream
from approvals.models.mcp import check_secret_maps
from audit.chain import Actor, record_event

# What staff may change on an upstream besides its secrets; its name is fixed (grants and capabilities name it).
SETTINGS = ("description", "transport", "command", "args", "url", "trust_annotations", "enabled", "timeout_seconds")


def _state(upstream: McpUpstream) -> dict[str, Any]:
    return {field: getattr(upstream, field) for field in SETTINGS}


def _audit(actor: Actor, verb: str, upstream: McpUpstream, data: dict | None = None) -> None:
    record_event(
        actor=actor,
        verb=verb,
        object_type="mcp_upstream",
        object_id=str(upstream.pk),
        data={"name": upstream.name, **_state(upstream), "secret_names": upstream.secret_names, **(data or {})},
    )


def _seal(upstream: McpUpstream, env: dict[str, str], headers: dict[str, str]) -> None:
    errors = check_secret_maps(env, headers)
    if errors:
        raise InvalidInput("Invalid environment or headers.", errors=errors)
    upstream.secrets_encrypted = seal_secrets(UpstreamSecrets(env=dict(env), headers=dict(headers)))
    upstream.secret_names = {"env": sorted(env), "headers": sorted(headers)}


def create_upstream(
    *,
    name: str,
    transport: str,
    actor: Actor,
    command: str = "",
    args: list[str] | None = None,
    url: str = "",
    env: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    description: str = "",
    trust_annotations: bool = False,
    enabled: bool = True,
    timeout_seconds: int = 30,
) -> McpUpstream:
    """Register an upstream (its tools are listed by ``refresh_tools``). Annotations are not trusted unless asked."""
    with transaction.atomic():
        upstream = McpUpstream(
            name=name,
            transport=transport,
            command=command,
            args=list(args or []),
            url=url,
            description=description,
            trust_annotations=trust_annotations,
            enabled=enabled,
            timeout_seconds=timeout_seconds,
        )
        _seal(upstream, env or {}, headers or {})
        upstream.full_clean(exclude=["secrets_encrypted"])
        upstream.save()
        _audit(actor, "mcp_upstream.created", upstream)
    return upstream


def update_upstream(*, upstream: McpUpstream, actor: Actor, **changes: Any) -> McpUpstream:
    """Change any of ``SETTINGS`` (validated, audited with the values before); unknown names are refused."""
    unknown = sorted(set(changes) - set(SETTINGS))
    if unknown:
        raise ValueError(f"not an MCP upstream setting: {', '.join(unknown)}")
    with transaction.atomic():
        upstream = McpUpstream.objects.select_for_update().get(pk=upstream.pk)
        before = _state(upstream)
        for field, value in changes.items():
            setattr(upstream, field, value)
        if _state(upstream) != before:
            upstream.full_clean(exclude=["secrets_encrypted"])
            upstream.updated_at = timezone.now()
            upstream.save()
            _audit(actor, "mcp_upstream.changed", upstream, {"before": before})
    return upstream


def set_upstream_secrets(
    *, upstream: McpUpstream, actor: Actor, env: dict[str, str], headers: dict[str, str]
) -> McpUpstream:
    """Replace the stored environment and headers (write-only: the audit event names them, never their values)."""
    with transaction.atomic():
        upstream = McpUpstream.objects.select_for_update().get(pk=upstream.pk)
        _seal(upstream, env, headers)
        upstream.updated_at = timezone.now()
        upstream.save(update_fields=["secrets_encrypted", "secret_names", "updated_at"])
        _audit(actor, "mcp_upstream.secrets_set", upstream)
    return upstream


def refresh_tools(*, upstream: McpUpstream, actor: Actor) -> McpUpstream:
    """Connect to the upstream and store the tools it lists now (outside any transaction while it answers).

    Raises UpstreamError when it cannot be reached; the stored list is then left as it was."""
    tools = connect(upstream).list_tools()
    with transaction.atomic():
        upstream = McpUpstream.objects.select_for_update().get(pk=upstream.pk)
        before = sorted(t["name"] for t in upstream.tools or [])
        upstream.tools = tools
        upstream.tools_refreshed_at = timezone.now()
        upstream.save(update_fields=["tools", "tools_refreshed_at"])
        after = sorted(t["name"] for t in tools)
        _audit(
            actor,
            "mcp_upstream.tools_listed",
            upstream,
            {"tools": after, "added": sorted(set(after) - set(before)), "removed": sorted(set(before) - set(after))},
        )
    return upstream


def rotate_upstream_keys(*, actor: Actor) -> int:
    """Re-encrypt every upstream's secrets with the newest of ``COUNTERSIGN_CREDENTIAL_KEYS`` (as credentials are,
    approvals.services.credentials.rotate_all_keys), so that the old key can be retired."""
    count = 0
    with transaction.atomic():
        for upstream in McpUpstream.objects.select_for_update().exclude(secrets_encrypted=b"").order_by("pk"):
            upstream.secrets_encrypted = rotate_token(upstream.secrets_encrypted)
            upstream.save(update_fields=["secrets_encrypted"])
            count += 1
        record_event(
            actor=actor,
            verb="mcp_upstream.keys_rotated",
            object_type="mcp_upstream",
            object_id="*",
            data={"count": count},
        )
    return count


__all__ = [
    "SETTINGS",
    "UpstreamError",
    "create_upstream",
    "refresh_tools",
    "rotate_upstream_keys",
    "set_upstream_secrets",
    "update_upstream",
]
