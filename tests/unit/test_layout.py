"""The layout's rules (docs/ARCHITECTURE.md): no import circles, agents below approvals, reads below writes.

The rules live in .importlinter and run in `make lint`; these tests run them on the real tree, and on a copy of
it with one forbidden import added, to show that each rule catches what it is there to catch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agents", "approvals", "audit", "catalog", "config")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / ".importlinter"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def circles_in(packages: tuple[str, ...]) -> list[list[str]]:
    """Every set of modules that import each other, directly or around a circle (imports inside functions too)."""
    graph = grimp.build_graph(*packages, cache_dir=None)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        order[module] = low[module] = len(order)
        stack.append(module)
        on_stack.add(module)
        for other in edges.get(module, ()):
            if other not in order:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], order[other])
        if low[module] == order[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(edges):
        if module not in order:
            visit(module)
    return circles


def import_circles(tree: Path) -> list[list[str]]:
    """The circles of the tree at ``tree``, found in a process of its own (this one has imported the real tree)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    result = subprocess.run(
        [sys.executable, __file__, *PACKAGES], cwd=tree, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def copy_of_tree(tmp_path):
    """The packages and the rules, copied: a test may add an import without touching the real tree."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def add_import(tree: Path, module_path: str, line: str) -> None:
    path = tree / module_path
    path.write_text(path.read_text() + f"\n{line}\n")


def test_every_import_rule_holds_on_the_tree():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_module_imports_itself_around_a_circle():
    assert import_circles(ROOT) == []


def test_approvals_keeps_a_handful_of_modules_at_its_top():
    top = sorted(p.name for p in (ROOT / "approvals").glob("*.py"))
    assert top == ["__init__.py", "apps.py", "errors.py", "tasks.py", "validation.py"]


@pytest.mark.parametrize(
    ("module_path", "line", "broken"),
    [
        ("agents/services.py", "from approvals.models import ActionRequest", "agents never imports approvals"),
        ("agents/models.py", "    import approvals.services  # inside a function", "agents never imports approvals"),
        ("audit/chain.py", "from agents.models import Agent", "The foundations (audit, catalog) import neither app"),
        ("approvals/selectors/desk.py", "from approvals.services import reviews", "Reads and rules never import"),
        ("approvals/policies/edits.py", "from approvals.outbox import dispatcher", "Reads and rules never import"),
        ("approvals/models/action.py", "from approvals.policies import store", "each package imports only the ones"),
        ("config/request_id.py", "from audit import chain", "config's foundations"),
    ],
)
def test_an_import_against_the_rules_is_caught(copy_of_tree, module_path, line, broken):
    add_import(copy_of_tree, module_path, line)
    result = lint_imports(copy_of_tree)
    assert result.returncode != 0
    assert broken in result.stdout.replace("\n", " ")


def test_an_import_circle_is_caught(copy_of_tree):
    add_import(copy_of_tree, "approvals/credentials/redaction.py", "from approvals.credentials import scoped")
    circles = import_circles(copy_of_tree)
    assert circles == [["approvals.credentials.redaction", "approvals.credentials.scoped"]]


if __name__ == "__main__":
    print(json.dumps(circles_in(tuple(sys.argv[1:]))))
