"""What the MCP gateway's tests share: a real git repository with a change staged, the unmodified
``mcp-server-git`` registered as the ``git`` upstream over stdio, an agent granted its tools on that repository
only, and the policy a deployment would start from: git reads auto-approved, everything else held."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agents.services import grant_capability
from approvals.policies import store as policy_store
from approvals.services.mcp_upstreams import create_upstream, refresh_tools
from audit.chain import Actor
from tests.factories import CLI, AgentFactory
from tests.support.servers import VENV_BIN

STAFF = Actor("user", "ada", "admin")
GIT_READS = ["git_status", "git_log", "git_diff_staged", "git_show"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def make_repo(path: Path) -> Path:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "dev@example.com")
    git(path, "config", "user.name", "Dev")
    (path / "README").write_text("hello\n")
    git(path, "add", "README")
    git(path, "commit", "-q", "-m", "first")
    (path / "notes.txt").write_text("a change waiting to be committed\n")
    git(path, "add", "notes.txt")
    return path


def commits(repo: Path) -> list[str]:
    return git(repo, "log", "--format=%s").split("\n")[:-1]


def git_upstream(name: str, repo: Path, **options):
    upstream = create_upstream(
        name=name,
        transport="stdio",
        command=str(VENV_BIN / "mcp-server-git"),
        args=["--repository", str(repo)],
        description=f"git on {repo.name}",
        actor=STAFF,
        **options,
    )
    return refresh_tools(upstream=upstream, actor=STAFF)


def git_reads_rule():
    return policy_store.save_rule(
        {
            "name": "git-reads",
            "action_type": "mcp.tool_call",
            "effect": "auto_approve",
            "conditions": [
                {"path": "params.server", "op": "equals", "value": "git"},
                {"path": "params.tool", "op": "in", "value": GIT_READS},
            ],
        },
        actor=STAFF,
    )


@pytest.fixture
def repo(tmp_path):
    return make_repo(tmp_path / "repo")


@pytest.fixture
def git_server(db, repo):
    return git_upstream("git", repo)


@pytest.fixture
def coder(owner, repo):
    """An agent that may call the git server's tools, on this repository only."""
    agent = AgentFactory(name="coder", owner=owner, allow=[])
    grant_capability(agent=agent, action_type="mcp.git.*", actor=CLI, constraints={"repo_path": [str(repo)]})
    return agent


def call_body(tool: str, server: str = "git", **arguments) -> dict:
    return {
        "action_type": "mcp.tool_call",
        "params": {"server": server, "tool": tool, "arguments": arguments},
        "summary": f"Call {server}.{tool}",
    }
