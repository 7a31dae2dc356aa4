"""The default settings (manage.py, config/asgi.py, config/celery_app.py, config/supervise.py): a run on this machine.

Embedded (config/settings/embedded.py: SQLite, a redis-server of its own, keys generated into var/) unless the
environment gives everything a server needs: DATABASE_URL, REDIS_URL and the three kinds of keys. Then the base
settings, as they are, and nothing is made. A key counts as given with NAME or NAME_FILE (config/env.py), so the
README's `DATABASE_URL=… REDIS_URL=… make demo` line, which gives no key, still gets its keys kept in var/.
Production is chosen on purpose: DJANGO_SETTINGS_MODULE=config.settings.production.
"""

from __future__ import annotations

from config.env import env_list

# What embedded.py makes when it is not given.
_MADE_WHEN_MISSING = (
    "DATABASE_URL",
    "REDIS_URL",
    "SECRET_KEY",
    "COUNTERSIGN_CREDENTIAL_KEYS",
    "COUNTERSIGN_AUDIT_CHECKPOINT_KEY",
)

if all(env_list(name) for name in _MADE_WHEN_MISSING):  # given, and not only blanks or commas
    from config.settings.base import *  # noqa: F403
else:
    from config.settings.embedded import *  # noqa: F403
