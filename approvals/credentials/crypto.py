"""Credential encryption at rest (Fernet, with key rotation via MultiFernet).

``COUNTERSIGN_CREDENTIAL_KEYS`` lists keys newest first: the first encrypts,
every listed key decrypts, so an old key keeps working until
``rotate_credential_keys`` has re-encrypted every row with the new one.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class CredentialDecryptError(Exception):
    """The stored secret can't be decrypted with any configured key."""


def _fernet() -> MultiFernet:
    keys = settings.COUNTERSIGN_CREDENTIAL_KEYS
    if not keys:
        raise ImproperlyConfigured("COUNTERSIGN_CREDENTIAL_KEYS must list at least one Fernet key")
    try:
        return MultiFernet([Fernet(key.encode() if isinstance(key, str) else key) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(f"COUNTERSIGN_CREDENTIAL_KEYS holds an invalid Fernet key: {exc}") from None


def encrypt_secret(secret: str) -> bytes:
    return _fernet().encrypt(secret.encode())


def decrypt_secret(token: bytes) -> str:
    try:
        return _fernet().decrypt(bytes(token)).decode()
    except InvalidToken:
        raise CredentialDecryptError("credential can't be decrypted with the configured keys") from None


def rotate_token(token: bytes) -> bytes:
    try:
        return _fernet().rotate(bytes(token))
    except InvalidToken:
        raise CredentialDecryptError("credential can't be decrypted with the configured keys") from None
