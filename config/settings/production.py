"""Production: everything from the environment, TLS in front, secure cookies, HSTS.

Use with DJANGO_SETTINGS_MODULE=config.settings.production; `manage.py check
--deploy` is clean with it (tests/test_security.py runs it).
"""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

if not (os.environ.get("SECRET_KEY") or os.environ.get("SECRET_KEY_FILE")):
    raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) must be set in production")
if not (os.environ.get("DATABASE_URL") or os.environ.get("DATABASE_URL_FILE")):
    raise ImproperlyConfigured("DATABASE_URL must be set in production (PostgreSQL)")

from config.env import env_bool, env_int
from config.settings.base import *  # noqa: F403

DEBUG = False
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
# Load balancers probe these over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
if env_bool("BEHIND_TLS_PROXY", default=True):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
