"""Agent key format: ``cs_<public id>_<secret>``.

The public id finds the row; only SHA-256 of the secret is stored. Secrets
carry 256 bits of randomness, so a fast hash is the right one (a slow KDF
guards low-entropy passwords, not random keys) and it keeps authentication
cheap on every request. Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX = "cs"
PUBLIC_ID_BYTES = 8
SECRET_BYTES = 32


@dataclass(frozen=True)
class ParsedKey:
    public_id: str
    secret: str


def new_key() -> tuple[str, str, str]:
    """Return (full key, public id, secret hash)."""
    public_id = secrets.token_hex(PUBLIC_ID_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES).replace("_", "x").replace("-", "y")
    return f"{PREFIX}_{public_id}_{secret}", public_id, hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(raw: str) -> ParsedKey | None:
    parts = raw.split("_")
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    public_id, secret = parts[1], parts[2]
    if len(public_id) != PUBLIC_ID_BYTES * 2 or not secret or len(secret) > 128:
        return None
    return ParsedKey(public_id=public_id, secret=secret)


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
