"""Every setting Countersign reads from the environment is in README.md's configuration table."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Where the server's code lives (the SDK and the benchmarks document their own variables).
CODE = ("config", "approvals", "agents")
# Read only by the test settings, to point a test run at its own database and Redis (README "Development").
TEST_ONLY = {"config/settings/test.py"}
READS = re.compile(
    r"""(?:env_(?:str|int|bool|list)\(\s*|os\.environ\.get\(\s*|os\.environ\[\s*|os\.getenv\(\s*)["']([A-Z][A-Z0-9_]*)["']"""
)


def settings_read_by_the_code() -> dict[str, str]:
    found: dict[str, str] = {}
    for package in CODE:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative in TEST_ONLY or "/migrations/" in relative:
                continue
            for name in READS.findall(path.read_text()):
                found.setdefault(name, relative)
    return found


def documented_settings() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Configuration", 1)[1]
    table = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            table.append(line.split("|")[1])  # the first column names the variables
    return set(re.findall(r"`([A-Z][A-Z0-9_]*)(?:=[^`]*)?`", "\n".join(table)))


def test_the_scan_sees_settings_in_every_form_the_code_reads_them():
    found = settings_read_by_the_code()
    assert {"DATABASE_URL", "COUNTERSIGN_RETENTION_DAYS", "SECURE_HSTS_SECONDS", "DB_POOL"} <= set(found)
    assert "SECRET_KEY_FILE" in found  # os.environ.get in config/settings/production.py


def test_every_setting_the_code_reads_is_in_the_readme_table():
    documented = documented_settings()
    missing = {
        name: where
        for name, where in settings_read_by_the_code().items()
        # NAME_FILE is documented once, for every NAME, under the table.
        if name not in documented and not (name.endswith("_FILE") and name.removesuffix("_FILE") in documented)
    }
    assert not missing, "add to README.md's configuration table:\n" + "\n".join(
        f"  {name} (read in {where})" for name, where in sorted(missing.items())
    )
