"""The settings modules (config/settings/__init__.py): base has no side effects, embedded makes what is missing,
local chooses between them, and each module sets each setting once."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = sorted((ROOT / "config" / "settings").glob("*.py"))
KEYS = {
    "SECRET_KEY": "layout-test-secret-key-0123456789-0123456789-0123456789",
    "COUNTERSIGN_CREDENTIAL_KEYS": "yGJBSU187eXkGrQ0HtwNUkuxb3XfR5Rd7fKrKFBT3Ts=",
    "COUNTERSIGN_AUDIT_CHECKPOINT_KEY": "layout-test-audit-checkpoint-key-0123456789",
}
SERVICES = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/nowhere", "REDIS_URL": "redis://127.0.0.1:6379/15"}
READ = """
import importlib, json, sys
settings = importlib.import_module(sys.argv[1])
print(json.dumps({"engine": settings.DATABASES.get("default", {}).get("ENGINE"), "broker": settings.CELERY_BROKER_URL,
                  "socket": str(settings.COUNTERSIGN_EMBEDDED_REDIS_SOCKET), "secret": bool(settings.SECRET_KEY),
                  "credential_keys": len(settings.COUNTERSIGN_CREDENTIAL_KEYS),
                  "prepare": settings.DATABASES.get("default", {}).get("OPTIONS", {}).get("prepare_threshold")}))
"""


def read_settings(module: str, var_dir: Path, **env: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", READ, module],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "COUNTERSIGN_VAR_DIR": str(var_dir), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_base_makes_nothing_even_with_nothing_given(tmp_path):
    read = read_settings("config.settings.base", tmp_path / "var")
    assert not (tmp_path / "var").exists()
    assert read == {"engine": None, "broker": "redis://127.0.0.1:6379/0", "socket": "None", "secret": False,
                    "credential_keys": 0, "prepare": None}  # fmt: skip


def test_the_default_is_embedded_while_anything_is_missing(tmp_path):
    var = tmp_path / "var"
    read = read_settings("config.settings.local", var)
    assert read["engine"] == "django.db.backends.sqlite3"
    assert read["broker"] == f"redis+socket://{read['socket']}" and read["socket"].endswith(".sock")
    assert {p.name for p in var.iterdir()} == {"secret_key", "credential_key", "audit_checkpoint_key", "static"}
    # The README's PostgreSQL + Redis line gives no key: they are still kept in var/.
    other = tmp_path / "other"
    read = read_settings("config.settings.local", other, **SERVICES)
    assert read["engine"] == "config.postgresql" and read["broker"] == SERVICES["REDIS_URL"]
    assert read["socket"] == "None" and (other / "credential_key").is_file()


def test_the_default_is_base_when_everything_is_given(tmp_path):
    read = read_settings("config.settings.local", tmp_path / "var", **SERVICES, **KEYS)
    assert read["engine"] == "config.postgresql" and read["secret"] and read["credential_keys"] == 1
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize(("given", "prepare"), [(None, 5), ("2", 2), ("0", 0), ("off", None), ("OFF", None)])
def test_statements_are_prepared_after_five_runs_unless_told_otherwise(tmp_path, given, prepare):
    env = {**SERVICES, **KEYS, **({"DB_PREPARE_THRESHOLD": given} if given is not None else {})}
    assert read_settings("config.settings.local", tmp_path / "var", **env)["prepare"] == prepare


def test_a_prepare_threshold_that_is_no_number_stops_the_start(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", READ, "config.settings.local"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "COUNTERSIGN_VAR_DIR": str(tmp_path), **SERVICES, **KEYS,
             "DB_PREPARE_THRESHOLD": "sometimes"},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and "DB_PREPARE_THRESHOLD='sometimes' is not an integer" in done.stderr


@pytest.mark.parametrize("empty", sorted(KEYS))
def test_production_refuses_a_key_file_that_holds_nothing(tmp_path, empty):
    (tmp_path / "empty").write_text("\n")
    env = {**SERVICES, **KEYS, "DJANGO_SETTINGS_MODULE": "config.settings.production"}
    env[f"{empty}_FILE"] = str(tmp_path / "empty")
    done = subprocess.run(
        [sys.executable, "-c", "import config.settings.production"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "COUNTERSIGN_VAR_DIR": str(tmp_path / "var"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and f"{empty} (or _FILE) must be set in production" in done.stderr
    assert not (tmp_path / "var").exists()


def assignments(statements: list[ast.stmt]) -> Counter:
    """How many times each UPPERCASE name is assigned on one path through the module's top level (the branches of
    an `if` are alternatives; function bodies are not settings)."""
    counted: Counter = Counter()
    for node in statements:
        if isinstance(node, ast.If):
            body, orelse = assignments(node.body), assignments(node.orelse)
            counted.update({name: max(body[name], orelse[name]) for name in body.keys() | orelse.keys()})
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            counted.update(t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper())
    return counted


@pytest.mark.parametrize("path", SETTINGS, ids=lambda p: p.name)
def test_each_module_sets_each_setting_once(path):
    twice = {name: n for name, n in assignments(ast.parse(path.read_text()).body).items() if n > 1}
    assert not twice, f"{path.name} sets these more than once: {twice}"
