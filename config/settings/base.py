"""Countersign settings: what the environment gives, and nothing else.

Importing this module has no side effects: it creates no directory, writes no file and reads nothing from disk but
the ``NAME_FILE`` secrets the environment points at (config/env.py). What the environment does not give stays
empty here: no database without ``DATABASE_URL``, no keys without ``SECRET_KEY`` and its kin. The modules built on
it (config/settings/__init__.py lists them) fill that in: ``embedded`` makes it under ``var/`` (the demo),
``production`` refuses to start without it, ``test`` points at this machine's PostgreSQL and Redis.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from redis.exceptions import ConnectionError as _RedisConnectionError

from config.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# Where this installation keeps its files (beat's heartbeat and schedule, mail, file.write's root, the embedded
# database, Redis and keys). Only a path here: config/settings/embedded.py creates it, a container mounts it.
VAR_DIR = Path(env_str("COUNTERSIGN_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", default=False)
# Empty when not given: config/settings/embedded.py generates one into var/, production.py refuses to start.
SECRET_KEY = env_str("SECRET_KEY")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# Websockets open only from these exact origins (scheme://host[:port]); empty: the socket's own scheme and Host.
# Set it behind a proxy that terminates TLS or rewrites the host, e.g. "https://countersign.example.com".
COUNTERSIGN_WEBSOCKET_ORIGINS = env_list("COUNTERSIGN_WEBSOCKET_ORIGINS")
# Absolute base for links sent outside the browser (Slack, email, webhooks).
COUNTERSIGN_BASE_URL = env_str("COUNTERSIGN_BASE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "audit",
    "agents",
    "approvals",
]

MIDDLEWARE = [
    "config.request_id.RequestIdMiddleware",  # first: every response and log line carries the id
    # /healthz, /readyz, /healthz/dependencies answered here, before host validation, redirects, sessions and
    # auth: a platform probes by the instance's address, over plain HTTP (approvals/web/probes.py).
    "approvals.web.probes.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # A session ends COUNTERSIGN_SESSION_MAX_AGE_SECONDS after its sign-in: groups come from the provider then.
    "approvals.sso.middleware.SessionMaxAgeMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "approvals.web.middleware.ContentSecurityPolicyMiddleware",
    "approvals.web.middleware.MethodNotAllowedMiddleware",  # inside the CSP one: its pages get the header too
    "approvals.web.middleware.DatabaseUnavailableMiddleware",  # a lost database is a 503 to retry, not a 500
    "approvals.api.refusals.AgentKeyOnPagesMiddleware",  # an agent key on a reviewer page: audited
]
# The JSON APIs (API_PATHS) are served by a handler of their own with only the middleware JSON needs: no
# static files, CSRF middleware (DRF checks CSRF itself for session-authenticated requests), messages, frame or CSP
# headers, agent-key-on-pages audit or probes. The same URLs and views; about a third of a read's cost
# (config/asgi.py, docs/BENCHMARKS.md). Sessions stay: reviewers may use the API with their web session.
API_PATHS = ("/api/v1/", "/humanlayer/v1/")
API_MIDDLEWARE = [
    "config.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "approvals.sso.middleware.SessionMaxAgeMiddleware",  # a session past its age decides nothing here either
    "approvals.web.middleware.MethodNotAllowedMiddleware",
    "approvals.web.middleware.DatabaseUnavailableMiddleware",
]
# Body size limits and unreadable addresses are refused before Django reads anything:
# approvals.web.middleware.RequestGuard
# (ASGI, config/asgi.py). A POST without a CSRF token is answered in the path's dialect (problem JSON under /api/).
CSRF_FAILURE_VIEW = "approvals.web.ops.csrf_failure"
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
# No inline scripts anywhere (styles may be inline: the admin and Swagger UI use them).
COUNTERSIGN_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "approvals.web.context_processors.containment",
                "approvals.web.context_processors.live",
            ],
        },
    },
]

# --- database -------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
POSTGRESQL_ENGINE = "config.postgresql"
# No database without DATABASE_URL (Django then refuses every query): config/settings/embedded.py puts SQLite in var/.
DATABASES = (
    {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 0))} if DATABASE_URL else {}
)
if DATABASE_URL:
    # DATABASE_PASSWORD (usually DATABASE_PASSWORD_FILE) replaces the URL's password: the secret the database
    # container reads (docker-compose.yml) then serves both, and the URL in the environment holds none.
    if env_str("DATABASE_PASSWORD"):
        DATABASES["default"]["PASSWORD"] = env_str("DATABASE_PASSWORD")
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Django's backend, with psycopg's compiled loader for times (config/postgresql/base.py).
        DATABASES["default"]["ENGINE"] = POSTGRESQL_ENGINE
    if DATABASES["default"]["ENGINE"] == POSTGRESQL_ENGINE:
        # Parameters bound by the server, not spliced into the SQL text by psycopg: no quoting of every value and
        # re-scanning of every statement in Python, on every request (docs/BENCHMARKS.md).
        DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = env_bool(
            "DB_SERVER_SIDE_BINDING", default=True
        )
        # A statement run DB_PREPARE_THRESHOLD times on a connection is prepared there (psycopg's own default, 5):
        # PostgreSQL then no longer parses and plans it on every request, which was half the database's time on an
        # approval (docs/BENCHMARKS.md). "off" for a pooler in transaction mode that cannot keep prepared statements
        # (PgBouncer before 1.21, or with max_prepared_statements = 0).
        if env_str("DB_PREPARE_THRESHOLD").strip().lower() != "off":
            DATABASES["default"]["OPTIONS"]["prepare_threshold"] = env_int("DB_PREPARE_THRESHOLD", 5)
    # DB_POOL=N: a psycopg pool of up to N connections per process (web: under ASGI each request runs in its
    # own thread, so persistent connections don't carry over and each request would connect anew; see
    # docs/deploy.md). Needs psycopg[pool] and DB_CONN_MAX_AGE=0.
    if env_int("DB_POOL", 0) > 0 and DATABASES["default"]["ENGINE"] == POSTGRESQL_ENGINE:
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": min(2, env_int("DB_POOL", 0)),
            "max_size": env_int("DB_POOL", 0),
            "timeout": env_int("DB_POOL_TIMEOUT", 10),
        }
        # Check each pooled connection as it is handed out (by its socket, or one empty query: config/postgresql): after
        # a PostgreSQL restart the idle ones are dead, and without the check the requests that drew them answered 500
        # (docs/RELIABILITY.md).
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# An agent's polling reads (one action, its wait once settled, its first page) are answered on the event loop over
# up to this many async PostgreSQL connections per web process, besides DB_POOL (approvals.api.agent_reads), and an
# open wait's reads after each change run there too (approvals.api.wait); 0 sends all of them through threads.
AGENT_READS_CONNECTIONS = env_int("AGENT_READS_CONNECTIONS", 4)
# How many API requests of a web process run their synchronous part (middleware, view, ORM) at once; the rest wait
# their turn on the event loop (config/api_handler.py). 0: no limit.
API_THREADS = env_int("API_THREADS", 2)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- redis, channels, celery ---------------------------------------------------
# One Redis serves the channel layer, the Celery broker and the cache: REDIS_URL. Without it
# config/settings/embedded.py gives the channel layer and the broker a redis-server of its own on a socket in var/
# (and the cache stays in memory); this module alone falls back to Redis's usual local address.
REDIS_URL = env_str("REDIS_URL")
# The embedded redis-server's socket, which config/supervise.py starts when it is set (only embedded.py sets it).
COUNTERSIGN_EMBEDDED_REDIS_SOCKET: Path | None = None
# Where the channel layer and the broker live (the probes check it: approvals/ops/health.py).
COUNTERSIGN_CHANNEL_REDIS_URL = REDIS_URL or "redis://127.0.0.1:6379/0"
# Every process shares one channel layer (Redis, embedded or not): a push is sent from whichever process delivers
# it (approvals/outbox/dispatcher.py).


def channel_layers(address: str) -> dict:
    """CHANNEL_LAYERS on the Redis at ``address`` (config/settings/embedded.py passes its socket's)."""
    return {
        "default": {
            # Pub/sub: a group message is published once and each web process hands it to its own sockets.
            # The list-based RedisChannelLayer copies it into every member channel (serialised once per
            # socket, in the sending request) and each process then pops its copies one by one: with 200
            # reviewers connected that was most of a push's latency (docs/BENCHMARKS.md, "Live push").
            # Nothing here relies on what the list layer adds (messages kept a while for a consumer that is
            # not listening): a page that missed events asks for them again from the database (``resume``,
            # approvals/live/consumers.py), and a wait re-reads the action after joining its group.
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                # retry_on_error: after a Redis restart every pooled connection is dead, and redis-py's
                # asyncio client does not retry by default, so each would fail one websocket connect or
                # push; one retry on a fresh connection instead, which also subscribes again
                # (docs/RELIABILITY.md).
                "hosts": [
                    {
                        "address": address,
                        "socket_timeout": 30,
                        # A Redis that drops packets instead of refusing: give up connecting after 2 s, not the
                        # kernel's minutes (the receive loop retries every second; docs/RELIABILITY.md).
                        "socket_connect_timeout": 2,
                        "retry_on_error": [_RedisConnectionError],
                    }
                ],
                # Pub/sub channels ignore the database number: name them after it, so that installations
                # (or test runs) on different databases of one Redis never hear each other.
                "prefix": f"countersign.db{(urlsplit(REDIS_URL).path.strip('/') if REDIS_URL else '') or '0'}.",
            },
        }
    }


CHANNEL_LAYERS = channel_layers(COUNTERSIGN_CHANNEL_REDIS_URL)
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", COUNTERSIGN_CHANNEL_REDIS_URL)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Longer than any task may run (task_time_limit below), so a task is
    # redelivered only when its worker really died; execution is guarded
    # in the database anyway (see approvals.services.execution).
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 600),
    # How often a worker looks for messages a dead worker left unacknowledged (seconds, and every Nth look).
    "unacked_restore_interval": env_int("CELERY_UNACKED_RESTORE_INTERVAL", 10),
    "unacked_restore_throttle": env_int("CELERY_UNACKED_RESTORE_THROTTLE", 10),
    # A connection attempt to a Redis that drops packets gives up after 2 s, so the next (at most
    # COUNTERSIGN_RECONNECT_MAX_SECONDS later) can find it back.
    "socket_connect_timeout": 2,
}
# Reconnecting to the broker: at most this many seconds between attempts, in the worker, beat and the web
# (config/celery_app.py: Celery's own backoff grows to 30 s, and came 12 s late after a 30 s outage), and never
# giving up (Celery stops after 100 attempts by default: 100 s at this pace).
COUNTERSIGN_RECONNECT_MAX_SECONDS = env_int("COUNTERSIGN_RECONNECT_MAX_SECONDS", 1)
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 270
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# A worker renews a running execution's heartbeat this often (seconds); an execution whose heartbeat missed
# COUNTERSIGN_EXECUTION_HEARTBEAT_MISSES beats in a row is interrupted (its worker died): the sweep, which runs once
# per beat interval, re-queues it if it is idempotent, else settles it `unknown` (approvals/services/execution.py).
COUNTERSIGN_EXECUTION_HEARTBEAT_SECONDS = max(1, env_int("COUNTERSIGN_EXECUTION_HEARTBEAT_SECONDS", 5))
COUNTERSIGN_EXECUTION_HEARTBEAT_MISSES = max(2, env_int("COUNTERSIGN_EXECUTION_HEARTBEAT_MISSES", 3))
CELERY_BEAT_SCHEDULE = {
    "expire-pending-actions": {"task": "approvals.expire_due_actions", "schedule": 5.0},
    "sweep-outbox": {"task": "approvals.sweep_outbox", "schedule": 5.0},
    # Once per heartbeat interval; a copy that waited longer than that for a worker is dropped (the next one is
    # on its way), so sweeps that piled up while no worker ran do not all run at once.
    "settle-interrupted-executions": {
        "task": "approvals.settle_interrupted_executions",
        "schedule": float(COUNTERSIGN_EXECUTION_HEARTBEAT_SECONDS),
        "options": {"expires": float(COUNTERSIGN_EXECUTION_HEARTBEAT_SECONDS)},
    },
    "send-reminders": {"task": "approvals.send_due_reminders", "schedule": 15.0},
    # Time-boxed access whose time ran out, and reverts to retry (approvals/services/access.py): due reverts are
    # rows in the database, so this sweep also catches those missed while Countersign was down, late not never.
    "revert-due-access": {
        "task": "approvals.revert_due_access",
        "schedule": float(env_int("COUNTERSIGN_REVERT_SWEEP_SECONDS", 5)),
        "options": {"expires": float(env_int("COUNTERSIGN_REVERT_SWEEP_SECONDS", 5))},
    },
    "report-refusal-counts": {"task": "approvals.report_refusal_counts", "schedule": 60.0},
    "audit-checkpoint": {
        "task": "approvals.audit_checkpoint",
        "schedule": float(env_int("COUNTERSIGN_AUDIT_CHECKPOINT_SECONDS", 300)),
    },
    # Delivered outbox rows, webhook delivery logs, finished actions' notifications (approvals/services/retention.py).
    "prune-expired-records": {"task": "approvals.prune_expired_records", "schedule": 3600.0},
    # Beat's liveness, for its healthcheck (config/heartbeat.py; HEARTBEAT_SECONDS).
    "beat-heartbeat": {"task": "approvals.beat_heartbeat", "schedule": 30.0},
}
# Days to keep delivered outbox rows, webhook delivery logs and finished actions' notifications; 0 keeps them.
# Audit events are never pruned.
COUNTERSIGN_RETENTION_DAYS = env_int("COUNTERSIGN_RETENTION_DAYS", 30)
# A revert of time-boxed access that failed is tried again after 30 s, then twice as long each time, at most an hour
# (approvals/services/access.py); one started over COUNTERSIGN_REVERT_LATE_SECONDS after it was due is audited as
# missed, with how late it was.
COUNTERSIGN_REVERT_RETRY_SECONDS = env_int("COUNTERSIGN_REVERT_RETRY_SECONDS", 30)
COUNTERSIGN_REVERT_RETRY_MAX_SECONDS = env_int("COUNTERSIGN_REVERT_RETRY_MAX_SECONDS", 3600)
COUNTERSIGN_REVERT_LATE_SECONDS = env_int("COUNTERSIGN_REVERT_LATE_SECONDS", 60)

# --- auth and sessions -------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# /metrics: with a token, only `Authorization: Bearer <token>` reads it. Without one it is open here (development,
# the embedded demo) and answers 404 in production unless COUNTERSIGN_METRICS_PUBLIC=true (production.py).
COUNTERSIGN_METRICS_TOKEN = env_str("COUNTERSIGN_METRICS_TOKEN")
COUNTERSIGN_METRICS_PUBLIC = env_bool("COUNTERSIGN_METRICS_PUBLIC", default=True)
# How long /readyz and /healthz/dependencies wait for each dependency's answer (approvals/ops/health.py): short enough
# that a probe answers within 250 ms whatever is down.
COUNTERSIGN_HEALTH_TIMEOUT_MS = env_int("COUNTERSIGN_HEALTH_TIMEOUT_MS", 150)
# Where the workers of a multi-process uvicorn keep their request counters (one directory per server, made by the
# first worker that starts, never here; config/request_metrics.py). A tmpfs is best; it must be the workers' own.
COUNTERSIGN_METRICS_DIR = Path(env_str("COUNTERSIGN_METRICS_DIR", str(VAR_DIR / "metrics")))
# Failed log-ins slow down per (username, address): 1, 2, 4 … 60 s; never a lock (approvals/web/auth.py).
COUNTERSIGN_LOGIN_WINDOW_SECONDS = env_int("COUNTERSIGN_LOGIN_WINDOW_SECONDS", 900)
COUNTERSIGN_LOGIN_DELAY_BASE_SECONDS = env_int("COUNTERSIGN_LOGIN_DELAY_BASE_SECONDS", 1)
COUNTERSIGN_LOGIN_DELAY_MAX_SECONDS = env_int("COUNTERSIGN_LOGIN_DELAY_MAX_SECONDS", 60)
COUNTERSIGN_LOGIN_MAX_FAILURES_PER_IP = env_int("COUNTERSIGN_LOGIN_MAX_FAILURES_PER_IP", 30)
# --- single sign-on: OpenID Connect (approvals/sso, docs/sso.md) ---------------------------------
# Password log-in (off with COUNTERSIGN_LOCAL_LOGIN=false but for COUNTERSIGN_BREAK_GLASS_USERS), then the provider.
AUTHENTICATION_BACKENDS = ["approvals.sso.backends.LocalPasswordBackend", "approvals.sso.backends.OidcBackend"]
# The issuer exactly as the provider names it; its endpoints come from <issuer>/.well-known/openid-configuration.
OIDC_OP_ISSUER = env_str("OIDC_OP_ISSUER")
OIDC_RP_CLIENT_ID = env_str("OIDC_RP_CLIENT_ID")
OIDC_RP_CLIENT_SECRET = env_str("OIDC_RP_CLIENT_SECRET")  # usually OIDC_RP_CLIENT_SECRET_FILE
OIDC_RP_SCOPES = env_str("OIDC_RP_SCOPES", "openid email profile")
OIDC_RP_SIGN_ALGO = env_str("OIDC_RP_SIGN_ALGO", "RS256")
# The claim (ID token or userinfo) that lists the person's groups; missing means none.
OIDC_GROUPS_CLAIM = env_str("OIDC_GROUPS_CLAIM", "groups")
OIDC_TIMEOUT = env_int("OIDC_TIMEOUT_SECONDS", 10)
OIDC_VERIFY_SSL = True
OIDC_USE_NONCE = True
OIDC_USE_PKCE = True
OIDC_PKCE_CODE_CHALLENGE_METHOD = "S256"
# "Sign in with <name>" on the log-in page.
COUNTERSIGN_OIDC_PROVIDER_NAME = env_str("COUNTERSIGN_OIDC_PROVIDER_NAME", "single sign-on")
# JSON: provider group -> Countersign reviewer groups and/or "staff", synced at every sign-in.
COUNTERSIGN_OIDC_GROUP_MAP = env_str("COUNTERSIGN_OIDC_GROUP_MAP")
COUNTERSIGN_LOCAL_LOGIN = env_bool("COUNTERSIGN_LOCAL_LOGIN", default=True)
# Superusers who may still log in with a password when COUNTERSIGN_LOCAL_LOGIN=false (docs/sso.md, break-glass).
COUNTERSIGN_BREAK_GLASS_USERS = env_list("COUNTERSIGN_BREAK_GLASS_USERS")
# A session ends this long after its sign-in, however active (0: only SESSION_COOKIE_AGE and log-out end it).
COUNTERSIGN_SESSION_MAX_AGE_SECONDS = env_int("COUNTERSIGN_SESSION_MAX_AGE_SECONDS", 12 * 3600)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "approvals:queue"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Only a path here: config/settings/embedded.py creates it (WhiteNoise warns when it is missing).
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
# Development, the embedded demo and tests serve static/ as it is in the checkout (finders, plain names): no
# collectstatic step, and an edited file shows on reload. Production (config/settings/production.py) serves
# collected, hashed, compressed files with a one-year cache instead.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# Pages' bodies (forms, Slack's interactivity posts) up to this size; the API and HumanLayer take 256 KiB. Larger
# bodies are refused with 413 by the ASGI guard (approvals.web.middleware.RequestGuard) before they are read.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "agents.authentication.AgentKeyAuthentication",
        "approvals.api.authentication.ReviewerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["approvals.api.renderers.APIJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["approvals.api.parsers.StrictJSONParser"],
    "EXCEPTION_HANDLER": "approvals.api.problems.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_THROTTLE_CLASSES": ["agents.throttling.AgentKeyThrottle"],
}
# Per agent key: every request, and proposals (which reach reviewers) on their own budget.
COUNTERSIGN_AGENT_RATES = {
    "requests": env_str("COUNTERSIGN_AGENT_REQUEST_RATE", "600/min"),
    "proposals": env_str("COUNTERSIGN_AGENT_PROPOSAL_RATE", "60/min"),
    # Calls through the HTTP gateway (each one an action; most auto-approved reads): on top of ``requests``.
    "gateway": env_str("COUNTERSIGN_AGENT_GATEWAY_RATE", "600/min"),
}

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "countersign",
            # Not one pool per request (config/cache.py). Connecting gives up after 2 s (a Redis that drops
            # packets): the rate limit then fails open instead of holding the request.
            "OPTIONS": {"pool_class": "config.cache.ProcessConnectionPool", "socket_connect_timeout": 2},
        }
    }
else:
    # Embedded: in memory, one per process, so that management commands work while the demo (and its Redis) is not
    # running; the rate limit then counts per web process.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
SPECTACULAR_SETTINGS = {
    "TITLE": "Countersign API",
    "DESCRIPTION": "Human-in-the-loop approval for AI agents. Agents propose; humans countersign.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "approvals.api.schema.add_wait_endpoint",
    ],
    "COMPONENT_SPLIT_REQUEST": True,
    # Served from static/vendor, never a CDN.
    "SWAGGER_UI_DIST": "/static/vendor/swagger-ui",
    "SWAGGER_UI_FAVICON_HREF": "/static/vendor/swagger-ui/favicon-32x32.png",
}

# --- email (the email.send action type) ---------------------------------------------
# SMTP when EMAIL_HOST is set; otherwise (embedded default) each message is
# written to a file under var/mail, so the demo works without a mail server.
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if env_str("EMAIL_HOST")
    else "django.core.mail.backends.filebased.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST") or "localhost"
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", default=False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30)
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
# The From of every email.send message (agents cannot choose it).
COUNTERSIGN_EMAIL_FROM = env_str("COUNTERSIGN_EMAIL_FROM", "countersign@localhost")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", COUNTERSIGN_EMAIL_FROM)

# --- countersign ----------------------------------------------------------------
COUNTERSIGN_DEFAULT_REVIEWER_GROUP = env_str("COUNTERSIGN_DEFAULT_REVIEWER_GROUP", "reviewers")
# Webhook targets on loopback/private networks are refused unless listed here (hosts; CIDRs).
COUNTERSIGN_CALLBACK_ALLOWED_HOSTS = env_list("COUNTERSIGN_CALLBACK_ALLOWED_HOSTS")
COUNTERSIGN_CALLBACK_ALLOWED_NETWORKS = env_list("COUNTERSIGN_CALLBACK_ALLOWED_NETWORKS")
# Where the default rule sends pending actions, e.g. "slack:#approvals,email:ops@example.com".
COUNTERSIGN_DEFAULT_NOTIFY = env_list("COUNTERSIGN_DEFAULT_NOTIFY")
COUNTERSIGN_DEFAULT_TTL_SECONDS = env_int("COUNTERSIGN_DEFAULT_TTL_SECONDS", 24 * 3600)
COUNTERSIGN_MAX_TTL_SECONDS = env_int("COUNTERSIGN_MAX_TTL_SECONDS", 7 * 24 * 3600)
COUNTERSIGN_GRANT_TTL_SECONDS = env_int("COUNTERSIGN_GRANT_TTL_SECONDS", 600)
# A reviewer's approval waits this long before its execution is dispatched, so they can undo it (triage mode's
# undo; approvals.services.undo). 0: dispatched at once, no undo.
COUNTERSIGN_UNDO_SECONDS = env_int("COUNTERSIGN_UNDO_SECONDS", 5)
# A push its writer delivered is marked delivered by a thread of the process, with the others of this many
# milliseconds, in one statement (approvals/outbox/marks.py); 0 marks each at once, in the request. Below the outbox's
# writer lease (15 s), or the sweep would send the push again.
COUNTERSIGN_PUSH_MARK_MS = env_int("COUNTERSIGN_PUSH_MARK_MS", 200)
if not 0 <= COUNTERSIGN_PUSH_MARK_MS <= 5000:
    raise ImproperlyConfigured(
        f"COUNTERSIGN_PUSH_MARK_MS={COUNTERSIGN_PUSH_MARK_MS}: 0 to 5000 (the writer's lease is 15 s)"
    )
COUNTERSIGN_MAX_EXECUTION_ATTEMPTS = env_int("COUNTERSIGN_MAX_EXECUTION_ATTEMPTS", 3)
# An approved action whose execute task was handed to the broker at least this long ago, never started, and is no
# longer in the broker (neither queued nor held by a worker) is queued again (a Redis restart without persistence
# loses queued tasks; redispatch_lost_executions in approvals/services/execution.py).
COUNTERSIGN_EXECUTE_REDISPATCH_SECONDS = env_int("COUNTERSIGN_EXECUTE_REDISPATCH_SECONDS", 10)
# A worker took the execute task this long ago and never started it: it died holding it (the broker would give it
# back only after CELERY_VISIBILITY_TIMEOUT); queued again, once (approvals.services.execution).
COUNTERSIGN_EXECUTE_ABANDONED_SECONDS = env_int("COUNTERSIGN_EXECUTE_ABANDONED_SECONDS", 30)
COUNTERSIGN_HTTP_TIMEOUT_SECONDS = env_int("COUNTERSIGN_HTTP_TIMEOUT_SECONDS", 30)
# The HTTP gateway (/gateway/<credential>/<path>, docs/gateway.md): how long a call that needs a human is held
# (the agent's Countersign-Wait header, at most the maximum), the largest body it takes, and the request headers it
# forwards to the target (everything else the client sends is dropped; Authorization, Cookie, Host, X-Forwarded-*
# and hop-by-hop headers never reach the target whatever this says).
COUNTERSIGN_GATEWAY_DEFAULT_WAIT_SECONDS = env_int("COUNTERSIGN_GATEWAY_DEFAULT_WAIT_SECONDS", 25)
COUNTERSIGN_GATEWAY_MAX_WAIT_SECONDS = env_int("COUNTERSIGN_GATEWAY_MAX_WAIT_SECONDS", 60)
COUNTERSIGN_GATEWAY_MAX_BODY_BYTES = env_int("COUNTERSIGN_GATEWAY_MAX_BODY_BYTES", 256 * 1024)
GATEWAY_FORWARDED_BY_DEFAULT = ["accept", "accept-language", "prefer"] + [
    f"if-{condition}" for condition in ("match", "none-match", "modified-since", "unmodified-since")
]
COUNTERSIGN_GATEWAY_FORWARD_HEADERS = [
    name.lower() for name in env_list("COUNTERSIGN_GATEWAY_FORWARD_HEADERS", GATEWAY_FORWARDED_BY_DEFAULT)
]
# Headers the deployment's own reverse proxy adds (e.g. x-forwarded-for,x-forwarded-proto): dropped by the gateway
# instead of refused as an agent's attempt to smuggle them to the target.
COUNTERSIGN_GATEWAY_PROXY_HEADERS = [name.lower() for name in env_list("COUNTERSIGN_GATEWAY_PROXY_HEADERS")]
# Fernet keys, newest first; the first encrypts, all decrypt. Empty when not given (embedded.py generates one).
COUNTERSIGN_CREDENTIAL_KEYS = env_list("COUNTERSIGN_CREDENTIAL_KEYS")
# HMAC keys for signed audit checkpoints, newest first (the first signs, all verify). Kept outside the
# database on purpose: whoever can rewrite the audit table must not be able to re-sign its head. Empty when not
# given (embedded.py generates one).
COUNTERSIGN_AUDIT_CHECKPOINT_KEYS = env_list("COUNTERSIGN_AUDIT_CHECKPOINT_KEY")
# Optional: also append each checkpoint the beat task makes to this file (JSON lines), e.g. on another volume.
COUNTERSIGN_AUDIT_CHECKPOINT_FILE = env_str("COUNTERSIGN_AUDIT_CHECKPOINT_FILE")
COUNTERSIGN_ACTION_TYPES = env_list("COUNTERSIGN_ACTION_TYPES")
# slack.post_message talks to this Slack Web API (trailing slash: WebClient joins method names onto it).
COUNTERSIGN_SLACK_API_URL = env_str("COUNTERSIGN_SLACK_API_URL", "https://slack.com/api/").rstrip("/") + "/"
# --- slack: approvals where reviewers already are (docs/slack.md) --------------------------
# The bot that posts approval requests: SLACK_BOT_TOKEN (or SLACK_BOT_TOKEN_FILE) wins; otherwise the
# secret of the Credential (kind slack_bot, managed in the admin) named COUNTERSIGN_SLACK_CREDENTIAL.
SLACK_BOT_TOKEN = env_str("SLACK_BOT_TOKEN")
COUNTERSIGN_SLACK_CREDENTIAL = env_str("COUNTERSIGN_SLACK_CREDENTIAL", "countersign-slack")
# Verifies POST /slack/interactivity; without it the endpoint refuses every request.
SLACK_SIGNING_SECRET = env_str("SLACK_SIGNING_SECRET")
# Link a Slack user to the active Countersign user with the same email (users.info) when no explicit
# Slack identity (admin) exists. Off: only explicit links count.
COUNTERSIGN_SLACK_LINK_BY_EMAIL = env_bool("COUNTERSIGN_SLACK_LINK_BY_EMAIL", default=True)
COUNTERSIGN_SLACK_TIMEOUT_SECONDS = env_int("COUNTERSIGN_SLACK_TIMEOUT_SECONDS", 10)
# file.write creates and replaces files only under this directory (created on first use).
COUNTERSIGN_FILE_ROOT = Path(env_str("COUNTERSIGN_FILE_ROOT", str(VAR_DIR / "files")))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # One JSON object per line, with the request id (config/logging.py); LOG_FORMAT=plain for humans.
    "formatters": {
        "json": {"()": "config.logging.JsonFormatter"},
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": env_str("LOG_FORMAT", "json")}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # uvicorn installs its own plain handler; route its server lines through ours. Its access log is left
        # as `--no-access-log` sets it (off in the Procfile): countersign.request logs each request instead.
        "uvicorn.error": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO"), "propagate": False},
    },
}
