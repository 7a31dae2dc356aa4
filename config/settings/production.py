"""Production: everything from the environment, TLS in front, secure cookies, HSTS.

Use with DJANGO_SETTINGS_MODULE=config.settings.production; `manage.py check
--deploy` is clean with it (tests/web/test_security.py runs it).
"""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

if not (os.environ.get("SECRET_KEY") or os.environ.get("SECRET_KEY_FILE")):
    raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) must be set in production")
if not (os.environ.get("DATABASE_URL") or os.environ.get("DATABASE_URL_FILE")):
    raise ImproperlyConfigured("DATABASE_URL must be set in production (PostgreSQL)")
# Never generated here (config/settings/embedded.py does that for the demo, and production never imports it): a
# production installation gives its own, the same to every process, kept outside the database.
if not (os.environ.get("COUNTERSIGN_CREDENTIAL_KEYS") or os.environ.get("COUNTERSIGN_CREDENTIAL_KEYS_FILE")):
    raise ImproperlyConfigured("COUNTERSIGN_CREDENTIAL_KEYS (or _FILE) must be set in production")
if not (os.environ.get("COUNTERSIGN_AUDIT_CHECKPOINT_KEY") or os.environ.get("COUNTERSIGN_AUDIT_CHECKPOINT_KEY_FILE")):
    raise ImproperlyConfigured("COUNTERSIGN_AUDIT_CHECKPOINT_KEY (or _FILE) must be set in production")

from config.env import env_bool, env_int
from config.settings.base import *  # noqa: F403
from config.settings.base import COUNTERSIGN_AUDIT_CHECKPOINT_KEYS, COUNTERSIGN_CREDENTIAL_KEYS, SECRET_KEY
from config.staticfiles import one_year_for_hashed_files

# A NAME_FILE that holds nothing gives no key either (base.py leaves it empty; nothing fills it in here).
for _name, _value in (
    ("SECRET_KEY", SECRET_KEY),
    ("COUNTERSIGN_CREDENTIAL_KEYS", COUNTERSIGN_CREDENTIAL_KEYS),
    ("COUNTERSIGN_AUDIT_CHECKPOINT_KEY", COUNTERSIGN_AUDIT_CHECKPOINT_KEYS),
):
    if not _value:
        raise ImproperlyConfigured(f"{_name} (or _FILE) must be set in production")

DEBUG = False
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
# Load balancers and container healthchecks probe these over plain HTTP inside the network; they carry no secret.
# approvals/web/probes.py answers them before SecurityMiddleware anyway (and before host validation); listed here
# too so that the exemption holds wherever they are served from.
# /metrics is not exempt: its bearer token must not travel in clear text (scrape it through the TLS proxy).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^healthz/dependencies$"]
if env_bool("BEHIND_TLS_PROXY", default=True):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True

# /metrics needs COUNTERSIGN_METRICS_TOKEN (or _FILE) as a bearer token; without one it answers 404, unless the
# operator opens it on purpose with COUNTERSIGN_METRICS_PUBLIC=true (approvals/web/ops.py).
COUNTERSIGN_METRICS_PUBLIC = env_bool("COUNTERSIGN_METRICS_PUBLIC", default=False)

# Static files: collected once per release (`manage.py collectstatic`, the Dockerfile does it) under hashed names,
# pre-compressed (gzip and brotli), served by WhiteNoise with a one-year immutable cache. No finders: what is served
# is exactly what was collected, and a template naming a file that was not collected fails loudly.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "config.staticfiles.StaticFilesStorage"},  # WhiteNoise's manifest storage
}
WHITENOISE_USE_FINDERS = False
WHITENOISE_ADD_HEADERS_FUNCTION = one_year_for_hashed_files
