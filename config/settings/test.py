"""Test settings: the base settings on the real PostgreSQL and Redis of this machine unless told otherwise.

Every value comes from the environment, as in production; nothing is generated and no directory is made (the
embedded default has tests of its own: tests/ops/test_embedded.py, tests/ops/test_readme_commands.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/9")
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-use-0123456789")
os.environ.setdefault("COUNTERSIGN_CREDENTIAL_KEYS", "yGJBSU187eXkGrQ0HtwNUkuxb3XfR5Rd7fKrKFBT3Ts=")
os.environ.setdefault("COUNTERSIGN_AUDIT_CHECKPOINT_KEY", "test-only-audit-checkpoint-key-0123456789")
# Approvals dispatch at once, as before the undo window existed: the many tests that wait for an execution stay
# fast. The undo tests set a window of their own (tests/execution/test_undo.py, tests/web/test_triage_browser.py).
os.environ.setdefault("COUNTERSIGN_UNDO_SECONDS", "0")
# A push is marked delivered in the request that delivered it, as before approvals/outbox/marks.py: most tests run
# inside a transaction that a thread's own connection cannot see. tests/execution/test_outbox_marks.py sets a delay.
os.environ.setdefault("COUNTERSIGN_PUSH_MARK_MS", "0")

from config.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The audit table is append-only (trigger, approvals/migrations/0005); pytest-django resets tables with
# TRUNCATE between transactional tests, which the trigger allows only in a session that sets this switch.
# Test connections only: production connections never set it.
if DATABASES["default"]["ENGINE"] == POSTGRESQL_ENGINE:  # noqa: F405
    _options = DATABASES["default"].setdefault("OPTIONS", {})  # noqa: F405
    _options["options"] = f"{_options.get('options', '')} -c countersign.audit_maintenance=on".strip()
# Many tests log in from 127.0.0.1 within one window; the per-(username, address) delay is what tests check.
COUNTERSIGN_LOGIN_MAX_FAILURES_PER_IP = 1000
# Static files are served through finders (base.py); no collected directory to look in, so WhiteNoise does not warn
# that var/static is missing (nothing is made here). tests/ops/test_production.py collects into a STATIC_ROOT of its
# own.
STATIC_ROOT = None
