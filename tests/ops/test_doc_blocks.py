"""Every code block in README.md, docs/agents.md and sdk/python/README.md runs as written, against a live stack
(uvicorn and a Celery worker on the test database), seeded as ``make demo`` seeds it.

Each document is one reader's terminal session, block after block: shell blocks run in bash (``set -e``, and
``curl`` fails on an HTTP error, so a block "runs" only if every request in it succeeded) with what earlier blocks
exported; Python blocks run in a fresh interpreter of the venv (the SDK importable); JSON blocks are parsed, and
an MCP client configuration is started and asked for its tools; YAML blocks (policy files) go through
``import_policies --dry-run``. The only substitutions are the ones a reader makes: the service's URL, the agent
key the earlier step printed, the id the earlier step returned (``<id>``), and where ``countersign-mcp`` is
installed. A reviewer approves what is pending while a block waits for a decision.

A block that cannot run here (``make demo`` itself, an LLM framework that is not installed) says so in the
document, on the line before its fence: ``<!-- not run: why -->``. Blocks without a language are sample output.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import json
import os
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from approvals.models import ActionRequest, ActionStatus, ReviewerToken
from tests.support.servers import ROOT, VENV_BIN, ManagedProcess, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

DOCS = ["README.md", "docs/agents.md", "sdk/python/README.md"]
# Every block a document marks as not run, by document. Adding one means saying why here too: keep it short.
NOT_RUN = {
    "README.md": 1,  # `make demo` on PostgreSQL + Redis: runs until stopped (tests/ops/test_readme_commands.py runs its steps)
    # LangGraph and the OpenAI Agents SDK: not installed here, and they need an LLM; time-boxed SCIM access: the demo
    # has no identity provider (tests/access runs the same request against the suite's SCIM server)
    "docs/agents.md": 3,
    "sdk/python/README.md": 0,
}
RUNNABLE = {"sh", "bash", "python", "json", "yaml"}
PLACEHOLDER_URLS = ("https://countersign.internal", "http://127.0.0.1:8000")
PLACEHOLDER_KEYS = ("cs_...", "cs_…")
INSTALLED_MCP = "/opt/countersign/.venv/bin/countersign-mcp"
MARKER = re.compile(r"<!--\s*not run:\s*(?P<why>.+?)\s*-->")
ACTION_ID = re.compile(r'"id":\s*"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"')
KEY = re.compile(r"\bcs_[A-Za-z0-9]+_[A-Za-z0-9_-]+")
# curl fails on an HTTP error (and shows the problem): a documented request that answers 4xx does not "run".
# -a: variables stay for the next block, as in a terminal.
SHELL_PRELUDE = 'set -aeo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'


@dataclass
class Block:
    doc: str
    line: int
    lang: str
    text: str
    not_run: str | None

    def __str__(self) -> str:
        return f"{self.doc}:{self.line} ({self.lang or 'no language'})"


def blocks(doc: str) -> list[Block]:
    """The fenced blocks of a Markdown file, each with the ``not run`` reason written just before it, if any."""
    found, lines = [], (ROOT / doc).read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start, indent = i, fence.group(1)
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        before = next((line for line in reversed(lines[:start]) if line.strip()), "")
        marker = MARKER.search(before)
        found.append(Block(doc, start + 1, fence.group(2), "\n".join(body) + "\n", marker and marker["why"]))
        i += 1
    return found


class Approver:
    """The reviewer of the seeded demo, approving whatever is pending while it is switched on."""

    def __init__(self, base_url: str, user: User):
        _, token = ReviewerToken.issue(user)
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Token {token}"}, timeout=30)
        self.on = threading.Event()
        self.stopped = threading.Event()
        self.approved: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            if self.on.wait(timeout=0.1) and not self.stopped.is_set():
                with contextlib.suppress(httpx.HTTPError):  # a person at a flaky connection tries again
                    pending = self.http.get("/api/v1/actions", params={"status": "pending"}).json()["results"]
                    for action in pending:
                        answer = self.http.post(
                            f"/api/v1/actions/{action['id']}/approve", json={"comment": "Approved in the docs test."}
                        )
                        if answer.status_code == 200:
                            self.approved.append(action["id"])
                self.stopped.wait(0.1)

    @contextlib.contextmanager
    def deciding(self, active: bool):
        if active:
            self.on.set()
        try:
            yield
        finally:
            self.on.clear()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)
        self.http.close()


class Session:
    """One reader's terminal: the environment earlier blocks exported, the key and id they printed."""

    def __init__(self, url: str, env: dict[str, str], key: str, tmp: Path):
        self.url, self.key, self.tmp = url, key, tmp
        self.env = {**env, "COUNTERSIGN_URL": url, "COUNTERSIGN_API_KEY": key}
        self.last_id: str | None = None
        self.servers: list[ManagedProcess] = []
        self.outputs: list[str] = []

    def substitute(self, text: str) -> str:
        for placeholder in PLACEHOLDER_URLS:
            text = text.replace(placeholder, self.url)
        for placeholder in PLACEHOLDER_KEYS:
            text = text.replace(placeholder, self.key)
        if self.last_id:
            text = text.replace("<id>", self.last_id)
        return text.replace(INSTALLED_MCP, str(VENV_BIN / "countersign-mcp"))

    def remember(self, output: str) -> None:
        self.outputs.append(output)
        if (found := ACTION_ID.search(output)) is not None:
            self.last_id = found.group(1)
        if (printed := KEY.search(output)) is not None:
            self.key = printed.group(0)  # create_agent printed a new key: later blocks use it

    def run(self, block: Block) -> None:
        if block.lang in ("sh", "bash"):
            # A key placeholder after a command that prints the key (create_agent, then `export ...=cs_...`): the
            # reader pastes what was just printed, so the block runs in parts, substituted as it goes.
            for part in _split_before_keys(block.text):
                self.shell(block, self.substitute(part))
            return
        text = self.substitute(block.text)
        {"python": self.python, "json": self.json, "yaml": self.yaml}[block.lang](block, text)

    def _check(self, block: Block, done: subprocess.CompletedProcess) -> None:
        assert done.returncode == 0, f"{block} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        self.remember(done.stdout)

    def shell(self, block: Block, text: str) -> None:
        if re.search(r"^countersign-mcp .*--transport http", text, re.M):
            self.serve(block, text)
            return
        env_file = self.tmp / "env"
        script = f'{SHELL_PRELUDE}{text}\nenv -0 > "{env_file}"\n'
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
        )
        self._check(block, done)
        self.env = dict(item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)

    def serve(self, block: Block, text: str) -> None:
        """A block that starts a server: it runs in the background until the document is done."""
        port = re.search(r"--port (\d+)", text).group(1)
        server = ManagedProcess(f"doc-{port}", ["bash", "-c", text], self.env, self.tmp / "logs").start()
        self.servers.append(server)

        def up() -> bool:
            assert server.proc.poll() is None, f"{block} exited:\n{server.log()}"
            with contextlib.suppress(httpx.HTTPError):
                return httpx.post(f"http://127.0.0.1:{port}/mcp", json={}, timeout=1).status_code == 401
            return False

        wait_until(up, timeout=30, message=f"{block} to listen")

    def python(self, block: Block, text: str) -> None:
        source = self.tmp / f"block_{block.line}.py"
        source.write_text(text)
        done = subprocess.run(
            [str(VENV_BIN / "python"), str(source)],
            cwd=self.tmp,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
        )
        self._check(block, done)

    def json(self, block: Block, text: str) -> None:
        config = json.loads(text)
        for name, server in config.get("mcpServers", {}).items():
            listed = asyncio.run(_mcp_tools(server, self.env))
            assert "propose_action" in listed and "decision.only" in listed["list_action_types"], (block, name)

    def yaml(self, block: Block, text: str) -> None:
        policy = self.tmp / f"policies_{block.line}.yaml"
        policy.write_text(text)
        done = subprocess.run(
            [str(VENV_BIN / "python"), "manage.py", "import_policies", str(policy), "--dry-run"],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self._check(block, done)

    def close(self) -> None:
        for server in self.servers:
            server.stop()


def _split_before_keys(text: str) -> list[str]:
    """The block cut before each line holding a key placeholder, where what precedes is complete shell."""
    parts, current = [], []
    for line in text.splitlines(keepends=True):
        if current and any(k in line for k in PLACEHOLDER_KEYS):
            chunk = "".join(current)
            if subprocess.run(["bash", "-n"], input=chunk, text=True, capture_output=True).returncode == 0:
                parts.append(chunk)
                current = []
        current.append(line)
    return [*parts, "".join(current)]


async def _mcp_tools(server: dict, env: dict[str, str]) -> dict[str, str]:
    """Connect as an MCP client would with this configuration; the tools, and what list_action_types said."""
    from mcp import Client, StdioServerParameters
    from mcp.client.streamable_http import streamable_http_client

    if "command" in server:
        transport = StdioServerParameters(command=server["command"], env={**env, **server.get("env", {})})
    else:
        import httpx2

        http = httpx2.AsyncClient(headers=server.get("headers", {}), timeout=httpx2.Timeout(30, read=60))
        transport = streamable_http_client(server["url"], http_client=http)
    async with Client(transport) as client:
        tools = {t.name: "" for t in (await client.list_tools()).tools}
        listed = await client.call_tool("list_action_types", {})
        assert not listed.is_error, listed.content
        tools["list_action_types"] = listed.content[0].text
        return tools


def waits_for_a_decision(block: Block) -> bool:
    """Blocks in which the reader waits for a reviewer: the approver decides while they run."""
    return block.lang == "python" or "/wait" in block.text


@pytest.fixture
def demo(web_server, celery_worker):
    """What `make demo` leaves behind: the reviewer, the demo agent (its key) and the countersign-self credential."""
    out = io.StringIO()
    call_command("seed_demo", base_url=web_server.url, stdout=out)
    return KEY.search(out.getvalue()).group(0)


def test_documents_mark_few_blocks_as_not_run_and_say_why():
    for doc in DOCS:
        marked = [b for b in blocks(doc) if b.not_run]
        assert len(marked) == NOT_RUN[doc], [str(b) for b in marked]
        for block in blocks(doc):
            assert block.lang in RUNNABLE | {""}, f"{block}: no runner for {block.lang!r}"
            if block.lang == "python":
                ast.parse(block.text)  # even a block not run here is valid Python (no top-level await)
            if block.lang == "json":
                json.loads(block.text)


@pytest.mark.parametrize("doc", DOCS)
def test_every_code_block_runs_as_written(doc, demo, web_server, stack_env, tmp_path):
    session = Session(web_server.url, {**stack_env, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}, demo, tmp_path)
    approver = Approver(web_server.url, User.objects.get(username="reviewer"))
    ran, skipped = [], []
    try:
        for block in blocks(doc):
            if block.not_run or not block.lang:
                skipped.append(block)
                continue
            with approver.deciding(waits_for_a_decision(block)):
                session.run(block)
            ran.append(block)
    finally:
        approver.close()
        session.close()
    assert ran and all(b.not_run or not b.lang for b in skipped)
    assert len([b for b in skipped if b.not_run]) == NOT_RUN[doc]

    if doc == "README.md":
        # The first run's proposal was approved, executed by the worker against /healthz, and the wait saw it.
        action = ActionRequest.objects.get(action_type="http.request")
        assert action.status == ActionStatus.SUCCEEDED and action.id.hex in session.last_id.replace("-", "")
        # The wait block's output shows it finished.
        assert any('"succeeded"' in out and str(action.id) in out for out in session.outputs), session.outputs
    if doc == "docs/agents.md":
        assert any("Refunded 30 EUR to c-42." in out for out in session.outputs)
        assert ActionRequest.objects.filter(agent__name="billing-bot", status=ActionStatus.CANCELLED).exists()
