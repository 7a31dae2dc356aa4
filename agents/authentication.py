"""``Authorization: Bearer cs_<public id>_<secret>`` for agents."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from agents.keys import parse_key, secret_matches
from agents.models import Agent, AgentKey
from audit.chain import Actor, record_refusal
from config.prepared import PreparedQuery, concrete_columns, from_row

# last_used_at is written at most this often per key, not on every request.
LAST_USED_RESOLUTION = timedelta(seconds=30)


def authenticate_agent_key(raw: str) -> AgentKey | None:
    """The usable key for ``raw``, or None. Used by AgentKeyAuthentication (every API request, the async wait
    view included) and by the middleware that records an agent key shown to a reviewer page."""
    parsed = parse_key(raw)
    if parsed is None:
        return None
    key = _key_with_agent(parsed.public_id)
    if key is None or not secret_matches(parsed.secret, key.secret_hash):
        return None
    refusal = key.refusal()
    if refusal is not None:
        # The real key of a frozen, disabled or revoked identity: worth knowing it is still in use somewhere.
        _record_refused_key(key, refusal)
        return None
    now = timezone.now()
    if _last_use_due(key, now):
        AgentKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def _last_use_due(key: AgentKey, now) -> bool:
    return key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION


def key_and_agent_columns(key: str = "", agent: str = "agent__") -> list[str]:
    """``values_list`` names of a key's and its agent's columns, as ``key_from_row`` takes them; ``key`` and ``agent``
    are the lookups to them from the query's model (approvals.selectors.actions reads them from an action)."""
    return [*concrete_columns(AgentKey, through=key), *concrete_columns(Agent, through=agent)]


# Every agent request reads its key and agent, fresh: a revoked key or a frozen agent is refused on the very next
# request, in every process. Only the statement is kept (config/prepared.py), not the row.
_KEY_AND_AGENT = PreparedQuery(
    lambda public_id: AgentKey.objects.filter(public_id=public_id).values_list(*key_and_agent_columns()),
    public_id=AgentKey._meta.get_field("public_id"),
)


def _key_with_agent(public_id: str) -> AgentKey | None:
    return key_from_row(_KEY_AND_AGENT.first(public_id=public_id))


def nothing_to_write(key: AgentKey, secret: str) -> bool:
    """Whether ``secret`` authenticates ``key`` with nothing to write: no refusal to audit, no last use to record.
    False when it does not authenticate *or* something must be written: only ``authenticate_agent_key`` decides
    those, so a refusal is refused and recorded in one place."""
    if not secret_matches(secret, key.secret_hash):
        return False
    now = timezone.now()
    return key.refusal(now) is None and not _last_use_due(key, now)


_KEY_FIELDS = tuple(concrete_columns(AgentKey))
_AGENT_FIELDS = tuple(concrete_columns(Agent))
_KEY_WIDTH = len(_KEY_FIELDS)
_KEY_AGENT = AgentKey._meta.get_field("agent")


def key_from_row(row: tuple | None) -> AgentKey | None:
    """The key, holding its agent, from a row of ``key_and_agent_columns``."""
    if row is None:
        return None
    key = from_row(AgentKey, _KEY_FIELDS, row[:_KEY_WIDTH])
    _KEY_AGENT.set_cached_value(key, from_row(Agent, _AGENT_FIELDS, row[_KEY_WIDTH:]))
    return key


def _record_refused_key(key: AgentKey, refusal: str) -> None:
    agent = key.agent
    reason = f"{refusal}: {agent.frozen_reason}" if refusal == "agent frozen" and agent.frozen_reason else refusal
    record_refusal(
        actor=Actor.agent(agent),
        verb="access.refused",
        kind=refusal,
        reason=reason,
        object_type="agent_key",
        object_id=key.prefix,
        agent_name=agent.name,
        data={"key": key.prefix},
    )


def bearer_credentials(request) -> str | None:
    """What follows ``Bearer`` in the request's Authorization header, or None: no such header or another scheme."""
    header = authentication.get_authorization_header(request).decode("latin-1")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip()


class AgentKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        credentials = bearer_credentials(request)
        if credentials is None:
            return None
        key = authenticate_agent_key(credentials)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid, revoked or expired agent key.")
        return key.agent, key

    def authenticate_header(self, request):
        return 'Bearer realm="countersign"'
