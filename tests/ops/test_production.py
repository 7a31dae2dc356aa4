"""What an operator signs off: static files, /metrics, the compose file and beat's heartbeat (issue 17, point 7)."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from celery import signals
from django.core.management import CommandError, call_command
from django.test import Client, override_settings

ROOT = Path(__file__).resolve().parents[2]
ONE_YEAR = "max-age=31536000, public, immutable"
BUILD_ENV = {
    # What the Dockerfile's collectstatic step has: production settings, throwaway values, no database.
    "PATH": "/usr/bin:/bin",
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "SECRET_KEY": "build-only-not-a-secret",
    "DATABASE_URL": "postgres://build@localhost/build",
    "COUNTERSIGN_CREDENTIAL_KEYS": "build-only",
    "COUNTERSIGN_AUDIT_CHECKPOINT_KEY": "build-only",
}


def production():
    """The production settings module, read as values (the test process keeps its own settings)."""
    return importlib.import_module("config.settings.production")


# --- static files ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("release")
    env = {**BUILD_ENV, "COUNTERSIGN_VAR_DIR": str(root / "var"), "STATIC_ROOT": str(root / "static")}
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return root


SERVE = """
import json
import django
django.setup()
from django.templatetags.static import static
from django.test import Client

client = Client()
url = static("vendor/swagger-ui/swagger-ui-bundle.js")
out = {"url": url}
for encoding in ("br", "gzip", "identity"):
    r = client.get(url, secure=True, headers={"Accept-Encoding": encoding})
    out[encoding] = {
        "status": r.status_code,
        "cache": r.get("Cache-Control", ""),
        "encoding": r.get("Content-Encoding", ""),
        "length": int(r["Content-Length"]),
        "vary": r.get("Vary", ""),
    }
plain = client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js", secure=True)
out["plain_cache"] = plain.get("Cache-Control", "")
print(json.dumps(out))
"""


def test_production_serves_static_files_hashed_compressed_and_cached_for_a_year(collected):
    env = {
        **BUILD_ENV,
        "COUNTERSIGN_VAR_DIR": str(collected / "var"),
        "STATIC_ROOT": str(collected / "static"),
        "ALLOWED_HOSTS": "testserver",
    }
    result = subprocess.run(
        [sys.executable, "-c", SERVE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])

    assert re.fullmatch(r"/static/vendor/swagger-ui/swagger-ui-bundle\.[0-9a-f]{12}\.js", out["url"])
    for encoding in ("br", "gzip", "identity"):
        assert out[encoding]["status"] == 200
        assert out[encoding]["cache"] == ONE_YEAR
        assert "Accept-Encoding" in out[encoding]["vary"]
    assert out["br"]["encoding"] == "br" and out["gzip"]["encoding"] == "gzip"
    assert out["identity"]["encoding"] == ""
    # The 1.5 MB bundle goes out at a quarter of its size or less.
    assert out["identity"]["length"] > 1_000_000
    assert out["br"]["length"] < out["identity"]["length"] / 4
    assert out["gzip"]["length"] < out["identity"]["length"] / 3
    # The unhashed name still answers (an old page), but briefly cached: it changes with the next release.
    assert "immutable" not in out["plain_cache"]


@pytest.mark.django_db
def test_the_api_docs_page_loads_swagger_ui_by_its_hashed_names(collected):
    prod = production()
    with override_settings(STORAGES=prod.STORAGES, STATIC_ROOT=collected / "static"):
        html = Client().get("/api/docs/").content.decode()
    assert re.search(r'src="/static/vendor/swagger-ui/swagger-ui-bundle\.[0-9a-f]{12}\.js"', html), html
    assert re.search(r'href="/static/vendor/swagger-ui/swagger-ui\.[0-9a-f]{12}\.css"', html)


def test_finders_serve_the_checkout_only_outside_production():
    from django.conf import settings

    assert settings.WHITENOISE_USE_FINDERS  # tests, development, the embedded demo
    prod = production()
    assert prod.WHITENOISE_USE_FINDERS is False
    assert prod.STORAGES["staticfiles"]["BACKEND"] == "config.staticfiles.StaticFilesStorage"


def test_templates_and_scripts_name_static_files_only_through_the_static_tag():
    offenders = []
    for path in [*ROOT.glob("templates/**/*.html"), *ROOT.glob("*/templates/**/*.html"), *ROOT.glob("static/js/*.js")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"""["'(]/static/""", line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "use {% static %}:\n" + "\n".join(offenders)


# --- /metrics ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_production_metrics_without_a_token_are_not_served():
    """A scraper, or anyone else, finds nothing unless the operator set a token or opened /metrics on purpose."""
    prod = production()
    assert prod.COUNTERSIGN_METRICS_PUBLIC is False
    with override_settings(COUNTERSIGN_METRICS_TOKEN="", COUNTERSIGN_METRICS_PUBLIC=prod.COUNTERSIGN_METRICS_PUBLIC):
        response = Client().get("/metrics")
        assert response.status_code == 404
        assert b"countersign_" not in response.content
    with override_settings(COUNTERSIGN_METRICS_TOKEN="", COUNTERSIGN_METRICS_PUBLIC=True):
        assert Client().get("/metrics").status_code == 200


@pytest.mark.django_db
@override_settings(COUNTERSIGN_METRICS_TOKEN="scrape-me", COUNTERSIGN_METRICS_PUBLIC=True)
def test_a_metrics_token_is_required_once_set_even_if_metrics_were_opened():
    client = Client()
    for header in ("", "Bearer wrong", "scrape-me", "Bearer scrape-me2", "Bearer scrapé-me"):
        response = client.get("/metrics", headers={"Authorization": header} if header else {})
        assert response.status_code == 401, header
        assert b"countersign_" not in response.content
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).status_code == 200


@pytest.mark.django_db
def test_production_redirects_plain_http_metrics_but_not_the_probes():
    """The bearer token must not cross the network in clear text; health probes carry nothing and stay plain."""
    prod = production()
    with override_settings(SECURE_SSL_REDIRECT=True, SECURE_REDIRECT_EXEMPT=prod.SECURE_REDIRECT_EXEMPT):
        client = Client()
        metrics = client.get("/metrics", headers={"Authorization": "Bearer x"})
        assert metrics.status_code == 301 and metrics["Location"].startswith("https://")
        assert client.get("/healthz").status_code == 200


# --- beat's heartbeat -------------------------------------------------------------------------------------------


def test_beat_heartbeat_check_fails_without_a_recent_heartbeat(tmp_path, capsys):
    from config.heartbeat import HEARTBEAT_SECONDS, HEARTBEAT_TASK, record_heartbeat

    with override_settings(VAR_DIR=tmp_path):
        with pytest.raises(CommandError, match="no beat heartbeat"):
            call_command("check_beat_heartbeat", "--max-age", "120")

        # What beat does each time it publishes its heartbeat task.
        signals.after_task_publish.send(sender=HEARTBEAT_TASK, body=None, exchange="", routing_key="celery")
        call_command("check_beat_heartbeat", "--max-age", "120")
        assert "beat ok" in capsys.readouterr().out

        import time

        record_heartbeat(now=time.time() - 600)  # beat hung ten minutes ago
        with pytest.raises(CommandError, match="beat is stuck"):
            call_command("check_beat_heartbeat", "--max-age", "120")

        # Another task's publication is no heartbeat.
        signals.after_task_publish.send(sender="approvals.sweep_outbox", body=None, exchange="", routing_key="celery")
        with pytest.raises(CommandError):
            call_command("check_beat_heartbeat", "--max-age", "120")

    from django.conf import settings

    entry = settings.CELERY_BEAT_SCHEDULE["beat-heartbeat"]
    assert entry["task"] == HEARTBEAT_TASK and entry["schedule"] == HEARTBEAT_SECONDS < 120 / 2


def test_check_beat_heartbeat_on_bad_input_is_one_line():
    result = subprocess.run(
        [sys.executable, "manage.py", "check_beat_heartbeat", "--max-age", "-1"],
        cwd=ROOT,
        env={**BUILD_ENV, "DJANGO_SETTINGS_MODULE": "config.settings.test", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["CommandError: --max-age must be a positive number of seconds"]


# --- docker-compose.yml and the Dockerfile ----------------------------------------------------------------------
# No Docker on the machines that run these tests: this reads the files as compose and docker would.

SECRET_SETTINGS = {
    "SECRET_KEY",
    "COUNTERSIGN_CREDENTIAL_KEYS",
    "COUNTERSIGN_AUDIT_CHECKPOINT_KEY",
    "COUNTERSIGN_METRICS_TOKEN",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "EMAIL_HOST_PASSWORD",
    "POSTGRES_PASSWORD",
    "DATABASE_PASSWORD",
}
APP_SERVICES = ("migrate", "web", "worker", "beat")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_pins_every_image_and_rotates_every_log(compose):
    for name, service in compose["services"].items():
        if "image" in service and "build" not in service:
            assert re.fullmatch(
                r"[a-z0-9./-]+:\d+\.\d+(\.\d+)?(-[a-z0-9]+)?(@sha256:[0-9a-f]{64})?", service["image"]
            ), name
        logging = service["logging"]
        assert logging["driver"] == "json-file", name
        assert logging["options"]["max-size"] and int(logging["options"]["max-file"]) >= 2, name
    base = re.search(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE).group(1)
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", base), base


def test_compose_passes_settings_by_env_file_and_secrets_only_as_files(compose):
    declared = compose["secrets"]
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["env_file"] == ".env", name
        env = service["environment"]
        assert not SECRET_SETTINGS & set(env), f"{name} passes a secret as a plain variable"
        assert ":" not in env["DATABASE_URL"].split("//", 1)[1].split("@", 1)[0], "a password in DATABASE_URL"
        for variable, value in env.items():
            if variable.endswith("_FILE"):
                secret = value.removeprefix("/run/secrets/")
                assert secret in declared and secret in service["secrets"], (name, variable)
    db = compose["services"]["db"]["environment"]
    assert "POSTGRES_PASSWORD" not in db and db["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    # The same file is the app's DATABASE_PASSWORD: one secret, not two copies to keep equal.
    assert compose["services"]["web"]["environment"]["DATABASE_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    # Every documented setting in the example .env is one a container reads (no secrets in it).
    example = (ROOT / "docs" / "deploy.env.example").read_text()
    names = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    assert names and not names & SECRET_SETTINGS


def test_compose_checks_worker_and_beat_health(compose):
    worker = compose["services"]["worker"]["healthcheck"]["test"]
    assert "celery -A config inspect ping -d celery@$$HOSTNAME" in " ".join(worker)
    beat = compose["services"]["beat"]["healthcheck"]["test"]
    assert beat[-4:] == ["manage.py", "check_beat_heartbeat", "--max-age", "120"]
    # Beat's heartbeat file lives where its healthcheck runs: beat's own volume at COUNTERSIGN_VAR_DIR.
    assert compose["services"]["beat"]["environment"]["COUNTERSIGN_VAR_DIR"] == "/app/var"
    assert any(v.endswith(":/app/var") for v in compose["services"]["beat"]["volumes"])
    for name in ("db", "redis", "web", "worker", "beat"):
        assert compose["services"][name]["healthcheck"]["test"], name


def test_dockerfile_collects_static_files_with_the_production_settings():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "DJANGO_SETTINGS_MODULE=config.settings.production" in dockerfile
    assert "manage.py collectstatic --noinput" in dockerfile
