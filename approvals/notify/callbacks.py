"""Where Countersign may send webhooks: never to loopback, private or link-local addresses unless allow-listed.

An agent chooses its ``callback_url``; without this check it could make
Countersign's network position do its requests (SSRF). The host is resolved
at proposal time and again just before each delivery (DNS can change).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for item in settings.COUNTERSIGN_CALLBACK_ALLOWED_NETWORKS:
        networks.append(ipaddress.ip_network(item, strict=False))
    return networks


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def callback_refusal(url: str) -> str | None:
    """Why ``url`` may not receive webhooks, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "only http and https URLs with a host are accepted"
    if parts.username or parts.password:
        return "credentials in the URL are not accepted"
    host = parts.hostname
    if host in settings.COUNTERSIGN_CALLBACK_ALLOWED_HOSTS:
        return None
    try:
        infos = socket.getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except (socket.gaierror, UnicodeError, ValueError):
        return f"the host {host!r} does not resolve"
    allowed = _allowed_networks()
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not _is_public(address) and not any(address in network for network in allowed):
            return (
                f"{host} resolves to {address}, a loopback, private or reserved address; "
                "ask an operator to allow-list it (COUNTERSIGN_CALLBACK_ALLOWED_NETWORKS)"
            )
    return None
