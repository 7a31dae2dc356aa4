# Countersign: one image for web, worker and beat (docs/deploy.md). Production settings; secrets from the
# environment (or NAME_FILE for mounted secrets). Build: docker build -t countersign .
FROM python:3.11-slim-bookworm

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

# Static files are collected at build time (WhiteNoise serves them, compressed). The settings need a secret
# key and a database URL to import; these build-time values are never used to run anything.
RUN SECRET_KEY=build-only-not-a-secret DATABASE_URL=postgres://build@localhost/build \
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
CMD ["uvicorn", "config.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--no-access-log"]
