# Countersign: one image for web, worker and beat (docs/deploy.md). Production settings; secrets from the
# environment (or NAME_FILE for mounted secrets). Build: docker build -t countersign .
# Pinned to a patch release: a rebuild gets the same interpreter; bump it on purpose (and docker-compose.yml's images).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin countersign

# The same layout as a checkout (.venv/bin/...), so the Procfile's commands work in the image too.
COPY requirements.txt ./
RUN python -m venv /app/.venv && /app/.venv/bin/pip install -r requirements.txt
ENV PATH=/app/.venv/bin:$PATH

COPY . .

# Static files are collected at build time: hashed names, gzip and brotli copies, which WhiteNoise serves with a
# one-year cache (config/settings/production.py). The settings need a secret key, a database URL and keys to
# import; these build-time values exist only in this RUN step and are never used to run anything.
RUN SECRET_KEY=build-only-not-a-secret DATABASE_URL=postgres://build@localhost/build \
    COUNTERSIGN_CREDENTIAL_KEYS=build-only COUNTERSIGN_AUDIT_CHECKPOINT_KEY=build-only \
    COUNTERSIGN_VAR_DIR=/tmp/build-var STATIC_ROOT=/app/staticfiles \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    python manage.py collectstatic --noinput -v 0 \
    && rm -rf /tmp/build-var \
    && mkdir -p /app/var \
    && chown countersign /app/var

ENV DJANGO_SETTINGS_MODULE=config.settings.production \
    STATIC_ROOT=/app/staticfiles \
    COUNTERSIGN_VAR_DIR=/app/var

USER countersign
EXPOSE 8000

# The web process; docker-compose.yml runs the worker and beat from the same image with their own commands.
# WEB_CONCURRENCY (uvicorn reads it) = worker processes; FORWARDED_ALLOW_IPS = the TLS proxy's address.
# Keep-alive longer than the proxy's idle timeout, and a graceful shutdown that outlasts the longest `wait` (60 s)
# and ends before the orchestrator's SIGKILL (docs/deploy.md, "Keep-alive and graceful shutdown"). `exec`: uvicorn
# is PID 1 and gets the SIGTERM itself.
CMD ["sh", "-c", "exec uvicorn config.asgi:application --host 0.0.0.0 --port 8000 --no-access-log --timeout-keep-alive ${WEB_KEEPALIVE_SECONDS:-75} --timeout-graceful-shutdown ${WEB_GRACEFUL_SHUTDOWN_SECONDS:-65}"]
