"""Test settings: the real PostgreSQL and Redis on this machine unless told otherwise."""

from __future__ import annotations

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/9")
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-use-0123456789")
os.environ.setdefault("COUNTERSIGN_CREDENTIAL_KEYS", "yGJBSU187eXkGrQ0HtwNUkuxb3XfR5Rd7fKrKFBT3Ts=")

from config.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
