"""The OpenID Connect provider as configured: its discovery document, the group map, what is switched on.

Nothing here runs at import: the discovery document (``<issuer>/.well-known/openid-configuration``) is fetched when
a sign-in first needs it and kept for ``DISCOVERY_TTL`` seconds. Its ``issuer`` must be exactly the configured one
(OpenID Connect Discovery 1.0, section 4.3), so a document served from elsewhere cannot name another issuer.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DISCOVERY_TTL = 3600
# The map's value that makes someone staff instead of naming a reviewer group.
STAFF = "staff"

_lock = threading.Lock()
_discovered: dict[str, tuple[float, Provider]] = {}


class DiscoveryFailed(Exception):
    """The provider's discovery document could not be read or does not describe the configured issuer."""


@dataclass(frozen=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str


def enabled() -> bool:
    """Single sign-on is configured: an issuer and a client id."""
    return bool(settings.OIDC_OP_ISSUER and settings.OIDC_RP_CLIENT_ID)


def local_login_allowed(username: str | None = None) -> bool:
    """Password log-in is on, or ``username`` is a break-glass account (COUNTERSIGN_BREAK_GLASS_USERS)."""
    if settings.COUNTERSIGN_LOCAL_LOGIN:
        return True
    return username is not None and username in settings.COUNTERSIGN_BREAK_GLASS_USERS


def display_name() -> str:
    return settings.COUNTERSIGN_OIDC_PROVIDER_NAME or "single sign-on"


def discover(*, refresh: bool = False) -> Provider:
    """The configured issuer's endpoints, from its discovery document (cached)."""
    issuer = settings.OIDC_OP_ISSUER
    if not issuer:
        raise DiscoveryFailed("OIDC_OP_ISSUER is not set")
    now = time.monotonic()
    with _lock:
        found = _discovered.get(issuer)
        if found and not refresh and now - found[0] < DISCOVERY_TTL:
            return found[1]
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT, verify=settings.OIDC_VERIFY_SSL)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise DiscoveryFailed(f"could not read {url}: {exc}") from None
    if not isinstance(document, dict) or document.get("issuer") != issuer:
        raise DiscoveryFailed(f"{url} describes issuer {document.get('issuer')!r}, not {issuer!r}")
    try:
        provider = Provider(
            issuer=issuer,
            authorization_endpoint=str(document["authorization_endpoint"]),
            token_endpoint=str(document["token_endpoint"]),
            userinfo_endpoint=str(document["userinfo_endpoint"]),
            jwks_uri=str(document["jwks_uri"]),
        )
    except KeyError as exc:
        raise DiscoveryFailed(f"{url} has no {exc.args[0]}") from None
    with _lock:
        _discovered[issuer] = (now, provider)
    return provider


def forget_discovery() -> None:
    """Drop the cached documents (tests; a provider that moved its endpoints)."""
    with _lock:
        _discovered.clear()


def group_map() -> dict[str, tuple[str, ...]]:
    """COUNTERSIGN_OIDC_GROUP_MAP: provider group -> Countersign reviewer groups and/or "staff"."""
    return _parse_group_map(settings.COUNTERSIGN_OIDC_GROUP_MAP or "")


@lru_cache(maxsize=8)
def _parse_group_map(raw: str) -> dict[str, tuple[str, ...]]:
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"COUNTERSIGN_OIDC_GROUP_MAP is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ImproperlyConfigured('COUNTERSIGN_OIDC_GROUP_MAP is a JSON object: {"provider group": ["reviewers"]}')
    parsed: dict[str, tuple[str, ...]] = {}
    for provider_group, targets in data.items():
        targets = [targets] if isinstance(targets, str) else targets
        if not isinstance(targets, list) or not all(isinstance(t, str) and t.strip() for t in targets):
            raise ImproperlyConfigured(
                f'COUNTERSIGN_OIDC_GROUP_MAP[{provider_group!r}] is a group name or a list of them (or "staff")'
            )
        parsed[str(provider_group)] = tuple(dict.fromkeys(t.strip() for t in targets))
    return parsed


def managed_groups() -> set[str]:
    """The Countersign groups the provider decides (every reviewer group the map names); others stay local."""
    return {target for targets in group_map().values() for target in targets if target != STAFF}


def manages_staff() -> bool:
    return any(STAFF in targets for targets in group_map().values())


def provider_groups(claims: dict) -> tuple[str, ...]:
    """The groups the provider says this person is in (the OIDC_GROUPS_CLAIM claim); none when it is missing."""
    value = claims.get(settings.OIDC_GROUPS_CLAIM)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return ()
    return tuple(dict.fromkeys(str(g) for g in value if isinstance(g, (str, int)) and str(g)))


def mapped(groups: tuple[str, ...]) -> tuple[set[str], bool]:
    """(the reviewer groups, staff or not) that ``groups`` at the provider give in Countersign."""
    targets = {target for group in groups for target in group_map().get(group, ())}
    return targets - {STAFF}, STAFF in targets
