"""``file.write`` on a real directory (tmp_path as COUNTERSIGN_FILE_ROOT): previews read the real file,
execution really writes it, and every escape (``..``, absolute paths, symbolic links planted before or after
approval) is refused."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest
from django.test import override_settings

from agents.services import grant_capability
from approvals import services
from approvals.action_types import file_write
from approvals.action_types.file_write import FileWrite, RootedFile
from approvals.errors import InvalidInput
from approvals.models import ActionRequest, ActionStatus, Review
from approvals.presentation.previews import compute_preview
from audit.models import AuditEvent
from catalog import registry
from tests import factories
from tests.conftest import CLI

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "root"  # not created: the type creates its root on first use
    with override_settings(COUNTERSIGN_FILE_ROOT=root):
        yield root


@pytest.fixture
def outside(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("outside, keep out\n")
    return outside


@pytest.fixture
def file_agent(agent):
    grant_capability(agent=agent, action_type="file.write", actor=CLI)
    return agent


def propose(agent, **params) -> ActionRequest:
    return factories.propose(agent, "file.write", params, summary="Write a file")


def approve(action, reviewer) -> None:
    # The reason is needed only where the preview says execution will fail; these tests check that the executor
    # refuses such a write too, whatever a reviewer approved.
    reason = "the executor must refuse it as well"
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API, override_reason=reason)


def execute(action) -> ActionRequest:
    services.execute_action(action.id)
    action.refresh_from_db()
    return action


def run(agent, reviewer, **params) -> ActionRequest:
    action = propose(agent, **params)
    approve(action, reviewer)
    return execute(action)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(directory) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".countersign-")]


def test_the_type_is_registered_and_idempotent_only_for_replace():
    file_type = registry.get("file.write")
    assert isinstance(file_type, FileWrite) and file_type.credential_kinds == ()
    assert file_type.is_idempotent({"mode": "replace"}) is True
    assert file_type.is_idempotent({"mode": "create"}) is False


def test_create_writes_a_new_file_and_its_directories(file_agent, reviewer, root):
    content = "# Runbook\n\nRestart with `systemctl restart db` — ✓\n"
    action = run(file_agent, reviewer, path="runbooks/db/restart.md", content=content, mode="create")

    assert action.status == ActionStatus.SUCCEEDED, action.result
    written = root / "runbooks" / "db" / "restart.md"
    assert written.read_bytes() == content.encode()
    assert action.result == {
        "path": "runbooks/db/restart.md",
        "sha256": sha(content.encode()),
        "bytes": len(content.encode()),
        "created": True,
    }
    assert leftovers(written.parent) == []


def test_create_refuses_a_file_that_appeared_after_approval(file_agent, reviewer, root):
    action = propose(file_agent, path="notes.txt", content="mine\n", mode="create")
    approve(action, reviewer)
    (root / "notes.txt").write_text("someone else's\n")
    action = execute(action)
    assert action.status == ActionStatus.FAILED
    assert action.result["error"] == "refused: the file already exists (mode create)"
    assert (root / "notes.txt").read_text() == "someone else's\n"
    assert leftovers(root) == []


def test_replace_previews_against_the_real_file_then_replaces_it(file_agent, reviewer, root):
    root.mkdir()
    target = root / "config.ini"
    target.write_text("[db]\nhost = old\n")
    target.chmod(0o640)
    action = propose(file_agent, path="config.ini", content="[db]\nhost = new\n", mode="replace")

    preview = compute_preview("file.write", action.params)
    assert (preview.kind, preview.title) == ("text", "config.ini")
    assert (preview.before, preview.after) == ("[db]\nhost = old\n", "[db]\nhost = new\n")
    assert preview.notes == [] and preview.error == ""

    target.write_text("[db]\nhost = changed meanwhile\n")  # the preview follows the disk, not a cache
    assert compute_preview("file.write", action.params).before == "[db]\nhost = changed meanwhile\n"

    approve(action, reviewer)
    action = execute(action)
    assert action.status == ActionStatus.SUCCEEDED, action.result
    assert target.read_text() == "[db]\nhost = new\n"
    assert action.result["created"] is False and action.result["sha256"] == sha(b"[db]\nhost = new\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # permissions survive the replace
    assert leftovers(root) == []


def test_replace_refuses_a_missing_file(file_agent, reviewer, root):
    action = run(file_agent, reviewer, path="absent.txt", content="x", mode="replace")
    assert action.status == ActionStatus.FAILED
    assert action.result["error"] == "refused: the file does not exist (mode replace)"
    assert not (root / "absent.txt").exists()


def test_replace_refuses_a_file_that_changed_since_the_agent_read_it(file_agent, reviewer, root):
    root.mkdir()
    (root / "a.txt").write_text("v1\n")
    stale = run(file_agent, reviewer, path="a.txt", content="v2\n", mode="replace", expected_sha256=sha(b"v0\n"))
    assert stale.status == ActionStatus.FAILED
    assert "the file changed" in stale.result["error"]
    assert (root / "a.txt").read_text() == "v1\n"

    fresh = run(file_agent, reviewer, path="a.txt", content="v2\n", mode="replace", expected_sha256=sha(b"v1\n"))
    assert fresh.status == ActionStatus.SUCCEEDED, fresh.result
    assert (root / "a.txt").read_text() == "v2\n"


def test_replacing_with_the_same_content_twice_has_the_same_result(root):
    root.mkdir()
    (root / "a.txt").write_text("v1\n")
    client = RootedFile(file_write.file_root(), "a.txt")
    first = client.write(b"v2\n", mode="replace", expected_sha256=sha(b"v1\n"))
    # A retry after a crash: the expected hash is stale now, but the approved end state already holds.
    second = client.write(b"v2\n", mode="replace", expected_sha256=sha(b"v1\n"))
    assert first == second == {"path": "a.txt", "sha256": sha(b"v2\n"), "bytes": 3, "created": False}


@pytest.mark.parametrize(
    "path",
    [
        "../outside/secret.txt",
        "a/../../outside/secret.txt",
        "a/..",
        "/etc/passwd",
        "..\\outside\\secret.txt",
        "a\\b.txt",
        "./a.txt",
        "a//b.txt",
        "dir/",
        "invoice\u202egpj.exe",
        "tab\there",
    ],
)
def test_traversal_and_odd_paths_are_400_at_propose(file_agent, agent_api, root, outside, path):
    body = {
        "action_type": "file.write",
        "params": {"path": path, "content": "pwned", "mode": "create"},
        "summary": "Write",
    }
    response = agent_api.post("/api/v1/actions", body, format="json")
    assert response.status_code == 400, response.content
    assert "params.path" in response.json()["errors"]
    assert not ActionRequest.objects.exists()
    assert (outside / "secret.txt").read_text() == "outside, keep out\n"


def test_a_nul_in_the_path_is_refused(file_agent, root):
    # The JSON parser refuses NUL before the type sees it; the type refuses it on its own as well.
    with pytest.raises(InvalidInput) as raised:
        propose(file_agent, path="a\x00b", content="x", mode="create")
    assert "params.path" in raised.value.errors


def test_symlinks_existing_at_propose_time_are_400(file_agent, agent_api, root, outside):
    root.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "inner.txt").write_text("inside\n")
    (root / "inner-link.txt").symlink_to(root / "inner.txt")  # even a link that stays inside is not written through
    for path, mode in [("escape/new.txt", "create"), ("link.txt", "replace"), ("inner-link.txt", "replace")]:
        body = {"action_type": "file.write", "params": {"path": path, "content": "x", "mode": mode}, "summary": "W"}
        response = agent_api.post("/api/v1/actions", body, format="json")
        assert response.status_code == 400, (path, response.content)
        assert "symbolic link" in response.json()["errors"]["params.path"][0]
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "outside, keep out\n"


def test_a_directory_swapped_for_a_symlink_after_approval_fails_the_execution(file_agent, reviewer, root, outside):
    (root / "reports").mkdir(parents=True)
    action = propose(file_agent, path="reports/today.txt", content="pwned\n", mode="create")
    approve(action, reviewer)
    (root / "reports").rmdir()
    (root / "reports").symlink_to(outside, target_is_directory=True)

    action = execute(action)
    assert action.status == ActionStatus.FAILED
    assert action.result["error"].startswith("refused: path leaves the file root")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert AuditEvent.objects.filter(verb="execution.failed", action_id=action.id).exists()


def test_a_file_swapped_for_a_symlink_after_approval_is_not_written_through(file_agent, reviewer, root, outside):
    root.mkdir()
    (root / "motd").write_text("hello\n")
    action = propose(file_agent, path="motd", content="pwned\n", mode="replace")
    approve(action, reviewer)
    (root / "motd").unlink()
    (root / "motd").symlink_to(outside / "secret.txt")

    action = execute(action)
    assert action.status == ActionStatus.FAILED
    assert "symbolic link" in action.result["error"]
    assert (outside / "secret.txt").read_text() == "outside, keep out\n"
    assert (root / "motd").is_symlink()


def test_the_write_itself_never_follows_links_even_if_the_path_check_is_fooled(root, outside, monkeypatch):
    """A link planted between the realpath check and the write: the O_NOFOLLOW walk still refuses it."""
    root.mkdir()
    (root / "logs").symlink_to(outside, target_is_directory=True)
    (root / "f.txt").symlink_to(outside / "secret.txt")
    monkeypatch.setattr(RootedFile, "check_real_path", lambda self: None)
    real_root = file_write.file_root()
    with pytest.raises(file_write.PathRefused, match="symbolic link"):
        RootedFile(real_root, "logs/new.txt").write(b"pwned", mode="create")
    with pytest.raises(file_write.PathRefused, match="symbolic link"):
        RootedFile(real_root, "f.txt").write(b"pwned", mode="replace")
    with pytest.raises(file_write.PathRefused, match="symbolic link"):
        RootedFile(real_root, "f.txt").read()
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "outside, keep out\n"


def test_paths_through_files_or_onto_directories_fail_the_execution(file_agent, reviewer, root):
    root.mkdir()
    (root / "motd").write_text("hello\n")
    (root / "dir").mkdir()
    through_file = run(file_agent, reviewer, path="motd/x.txt", content="x", mode="create")
    assert through_file.status == ActionStatus.FAILED
    assert through_file.result["error"] == "refused: path goes through 'motd', which is not a directory"
    onto_dir = run(file_agent, reviewer, path="dir", content="x", mode="replace")
    assert onto_dir.status == ActionStatus.FAILED
    assert onto_dir.result["error"] == "refused: the path exists and is not a regular file"
    assert (root / "motd").read_text() == "hello\n" and (root / "dir").is_dir()


def test_previews_say_what_will_happen(file_agent, root, outside):
    new = compute_preview("file.write", {"path": "a/b/new.txt", "content": "hi\n", "mode": "create"})
    assert (new.kind, new.title, new.before, new.after) == ("text", "a/b/new.txt", "", "hi\n")
    assert new.notes == ["new file", "creates the directories a, a/b"]
    assert root.is_dir() and not (root / "a").exists()  # a preview writes nothing (but the root)

    (root / "bin.dat").write_bytes(b"\xff\xfe\x00binary")
    binary = compute_preview("file.write", {"path": "bin.dat", "content": "text", "mode": "replace"})
    assert binary.before is None
    assert binary.notes == ["file is not UTF-8 text (9 bytes); its content is not shown"]

    (root / "same.txt").write_text("same\n")
    same = compute_preview("file.write", {"path": "same.txt", "content": "same\n", "mode": "create"})
    assert same.notes == [
        "the file already exists: mode create will fail",
        "no change: the file already has this content",
    ]
    stale = compute_preview(
        "file.write", {"path": "same.txt", "content": "x", "mode": "replace", "expected_sha256": sha(b"other")}
    )
    assert "the file changed since the agent read it (expected_sha256 does not match)" in stale.notes
    missing = compute_preview("file.write", {"path": "nope.txt", "content": "x", "mode": "replace"})
    assert "the file does not exist: mode replace will fail" in missing.notes

    (root / "link").symlink_to(outside / "secret.txt")
    link = compute_preview("file.write", {"path": "link", "content": "x", "mode": "replace"})
    assert link.kind == "unavailable" and "symbolic link" in link.error
    assert "outside, keep out" not in str(link)


def test_params_the_type_refuses(file_agent, root):
    with pytest.raises(InvalidInput) as raised:
        propose(file_agent, path="a.txt", content="x", mode="create", expected_sha256=sha(b"x"))
    assert "params.expected_sha256" in raised.value.errors
    with pytest.raises(InvalidInput) as raised:
        propose(file_agent, path="a.txt", content="é" * (512 * 1024 + 1), mode="create")  # 1 MiB + 2 bytes
    assert "params.content" in raised.value.errors
    with pytest.raises(InvalidInput) as raised:
        propose(file_agent, path="a.txt", content="x", mode="append")
    assert "params.mode" in raised.value.errors
    with pytest.raises(InvalidInput):
        propose(file_agent, path="x" * 1025, content="x", mode="create")
    with pytest.raises(InvalidInput) as raised:
        propose(file_agent, path="n" * 256, content="x", mode="create")
    assert "255 bytes" in raised.value.errors["params.path"][0]


def test_a_file_root_given_as_a_symlink_is_resolved(tmp_path, file_agent, reviewer):
    real = tmp_path / "real-root"
    real.mkdir()
    (tmp_path / "root-link").symlink_to(real, target_is_directory=True)
    with override_settings(COUNTERSIGN_FILE_ROOT=tmp_path / "root-link"):
        action = run(file_agent, reviewer, path="ok.txt", content="fine\n", mode="create")
    assert action.status == ActionStatus.SUCCEEDED, action.result
    assert (real / "ok.txt").read_text() == "fine\n"


def test_the_default_root_is_under_var_dir():
    from django.conf import settings

    assert os.fspath(settings.COUNTERSIGN_FILE_ROOT).endswith("files")
