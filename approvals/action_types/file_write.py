"""``file.write``: create or replace one UTF-8 text file under ``COUNTERSIGN_FILE_ROOT``.

The path is checked twice: its shape when proposed (relative, no ``..``, no
NUL, backslash or invisible characters, not through a symbolic link), and again
when executing, where every directory is opened with ``O_NOFOLLOW`` relative to
its parent, so a symbolic link planted after approval cannot redirect the write
outside the root. The write is atomic: a temporary file in the same directory,
fsync, then ``os.replace`` (or ``os.link`` for ``create``, which refuses an
existing file atomically).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
import unicodedata
from pathlib import Path
from typing import Any

from django.conf import settings

from catalog.base import ActionType, ExecutionError, ParamsRejected, Preview, Reverse, shorten
from catalog.risk import Risk

MAX_PATH = 1024
MAX_CONTENT_BYTES = 1024 * 1024
MAX_NAME_BYTES = 255
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class PathRefused(Exception):
    """The path is not a plain file under the root (anymore)."""


def file_root() -> str:
    """The configured root, created if missing, as a real path (symbolic links resolved)."""
    root = Path(settings.COUNTERSIGN_FILE_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    return os.path.realpath(root)


def path_problem(path: str) -> str | None:
    """Why ``path`` is not an acceptable relative path, or None."""
    if "\x00" in path:
        return "must not contain NUL"
    if "\\" in path:
        return "must use '/' and not contain backslashes"
    if path.startswith("/"):
        return "must be relative to the file root, not absolute"
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in path):
        return "must not contain control or invisible formatting characters"
    parts = path.split("/")
    if any(part == ".." for part in parts):
        return "must not contain '..'"
    if any(part in ("", ".") for part in parts):
        return "must not contain empty or '.' segments (no '//', no trailing '/')"
    if any(len(part.encode("utf-8")) > MAX_NAME_BYTES for part in parts):
        return f"has a name longer than {MAX_NAME_BYTES} bytes"
    return None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RootedFile:
    """One relative path under one root; reads and writes it without following symbolic links."""

    __slots__ = ("_parts", "_root", "path")

    def __init__(self, root: str, path: str):
        problem = path_problem(path)
        if problem:
            raise PathRefused(f"path {problem}")
        self._root = root
        self._parts = path.split("/")
        self.path = path

    def __repr__(self) -> str:
        return f"<RootedFile {self.path}>"

    def check_real_path(self) -> None:
        """Refuse a path that resolves outside the root or through a symbolic link (as the disk is now)."""
        joined = os.path.join(self._root, *self._parts)
        real = os.path.realpath(joined)
        if os.path.commonpath([real, self._root]) != self._root:
            raise PathRefused("path leaves the file root (through a symbolic link)")
        if real != joined:
            raise PathRefused("path goes through a symbolic link")

    # --- directory walking -----------------------------------------------------------

    def _open_dir(self, fd: int, name: str, *, create: bool) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):  # made by someone else meanwhile: opened below
                os.mkdir(name, 0o755, dir_fd=fd)
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    raise PathRefused(f"path goes through a symbolic link ({name})") from None
                raise PathRefused(f"path goes through {name!r}, which is not a directory") from None
            raise

    def _parent_fd(self, *, create: bool) -> int:
        """An fd of the file's directory, reached component by component with O_NOFOLLOW."""
        fd = os.open(self._root, _DIR_FLAGS)
        try:
            for name in self._parts[:-1]:
                child = self._open_dir(fd, name, create=create)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def missing_dirs(self) -> list[str]:
        """The directories a create would make, outermost first."""
        try:
            fd = os.open(self._root, _DIR_FLAGS)
        except OSError:
            return ["/".join(self._parts[: i + 1]) for i in range(len(self._parts) - 1)]
        try:
            for i, name in enumerate(self._parts[:-1]):
                try:
                    child = self._open_dir(fd, name, create=False)
                except FileNotFoundError:
                    return ["/".join(self._parts[: j + 1]) for j in range(i, len(self._parts) - 1)]
                os.close(fd)
                fd = child
        finally:
            os.close(fd)
        return []

    # --- reading ---------------------------------------------------------------------

    def _stat_in(self, dir_fd: int) -> os.stat_result | None:
        try:
            st = os.stat(self._parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            raise PathRefused("the file is a symbolic link; Countersign does not write through links")
        if not stat.S_ISREG(st.st_mode):
            raise PathRefused("the path exists and is not a regular file")
        return st

    def _open_file_in(self, dir_fd: int) -> int:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self._parts[-1], flags, dir_fd=dir_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise PathRefused("the path exists and is not a regular file")
        return fd

    def _read_in(self, dir_fd: int, limit: int) -> bytes:
        fd = self._open_file_in(dir_fd)
        try:
            chunks, size = [], 0
            while size <= limit:
                chunk = os.read(fd, min(65536, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _sha256_in(self, dir_fd: int) -> str:
        fd = self._open_file_in(dir_fd)
        try:
            digest = hashlib.sha256()
            while chunk := os.read(fd, 65536):
                digest.update(chunk)
            return digest.hexdigest()
        finally:
            os.close(fd)

    def read(self, limit: int = MAX_CONTENT_BYTES) -> bytes | None:
        """The current bytes (at most ``limit`` + 1 of them), or None if the file does not exist."""
        self.check_real_path()
        try:
            dir_fd = self._parent_fd(create=False)
        except FileNotFoundError:
            return None
        try:
            if self._stat_in(dir_fd) is None:
                return None
            return self._read_in(dir_fd, limit)
        finally:
            os.close(dir_fd)

    # --- writing ---------------------------------------------------------------------

    def write(self, data: bytes, *, mode: str, expected_sha256: str | None = None) -> dict[str, Any]:
        self.check_real_path()
        new_sha = sha256_hex(data)
        result = {"path": self.path, "sha256": new_sha, "bytes": len(data), "created": mode == "create"}
        try:
            dir_fd = self._parent_fd(create=mode == "create")
        except FileNotFoundError:
            raise PathRefused("the file does not exist (mode replace)") from None
        try:
            current = self._stat_in(dir_fd)
            if mode == "create" and current is not None:
                raise PathRefused("the file already exists (mode create)")
            if mode == "replace":
                if current is None:
                    raise PathRefused("the file does not exist (mode replace)")
                existing_sha = self._sha256_in(dir_fd)
                if existing_sha == new_sha:
                    return result  # already what was approved: a retry, or a no-op
                if expected_sha256 and existing_sha != expected_sha256:
                    raise PathRefused(
                        f"the file changed: its sha256 is {existing_sha}, the approval expected {expected_sha256}"
                    )
            self._write_atomically(dir_fd, data, mode=mode, current=current)
        finally:
            os.close(dir_fd)
        return result

    def _write_atomically(self, dir_fd: int, data: bytes, *, mode: str, current: os.stat_result | None) -> None:
        name = self._parts[-1]
        tmp = f".countersign-{secrets.token_hex(8)}.tmp"
        perms = stat.S_IMODE(current.st_mode) if current is not None else 0o644
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(tmp, flags, perms, dir_fd=dir_fd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if current is not None:
                    os.fchmod(fd, perms)
                os.fsync(fd)
            finally:
                os.close(fd)
            if mode == "create":
                try:
                    # link() refuses an existing name atomically, unlike rename().
                    os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
                except FileExistsError:
                    raise PathRefused("the file already exists (mode create)") from None
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                        raise
                    if self._stat_in(dir_fd) is not None:  # file systems without hard links
                        raise PathRefused("the file already exists (mode create)") from None
                    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            else:
                os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.fsync(dir_fd)
        finally:
            with contextlib.suppress(FileNotFoundError):  # gone once renamed
                os.unlink(tmp, dir_fd=dir_fd)


class FileWrite(ActionType):
    name = "file.write"
    title = "Write a file"
    description = (
        "Creates or replaces one UTF-8 text file under Countersign's file root (COUNTERSIGN_FILE_ROOT). "
        "Reviewers see the current file next to the new content. `create` refuses an existing file, `replace` a "
        "missing one; `expected_sha256` makes `replace` refuse a file that changed since the agent read it."
    )
    risk = Risk.MEDIUM
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path", "content", "mode"],
        "properties": {
            "path": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_PATH,
                "description": "Path relative to the file root, with '/' separators.",
            },
            "content": {
                "type": "string",
                "maxLength": MAX_CONTENT_BYTES,
                "description": "The whole new content (UTF-8 text, at most 1 MiB).",
            },
            "mode": {"type": "string", "enum": ["create", "replace"]},
            "expected_sha256": {
                "type": "string",
                "pattern": "^[0-9a-f]{64}$",
                "description": "For replace: the SHA-256 (hex) the current file must have.",
            },
        },
    }

    def describe(self, params: dict[str, Any]) -> str:
        content = str(params.get("content") or "")
        lines = content.count("\n") + (1 if content and not content.endswith("\n") else 0)
        how = {"create": " (a new file)", "replace": " (replacing it)"}.get(str(params.get("mode")), "")
        return f"Write {lines} line{'' if lines == 1 else 's'} to {shorten(params.get('path') or '', 100)}{how}"

    def check_params(self, params: dict[str, Any], credential) -> None:
        errors: dict[str, list[str]] = {}
        problem = path_problem(params["path"])
        if problem:
            errors["path"] = [f"The path {problem}."]
        else:
            try:
                RootedFile(file_root(), params["path"]).check_real_path()
            except PathRefused as exc:
                errors["path"] = [f"The {exc}."]
        try:
            if len(params["content"].encode("utf-8")) > MAX_CONTENT_BYTES:
                errors["content"] = [f"The content is larger than {MAX_CONTENT_BYTES} bytes as UTF-8."]
        except UnicodeEncodeError:
            errors["content"] = ["The content is not valid Unicode text (lone surrogates)."]
        if params.get("expected_sha256") and params["mode"] != "replace":
            errors["expected_sha256"] = ["expected_sha256 applies to mode replace only."]
        if errors:
            raise ParamsRejected(errors)

    def is_idempotent(self, params: dict[str, Any]) -> bool:
        # Replacing with the same content twice leaves the same file (and write() reports the same result).
        return params.get("mode") == "replace"

    def make_client(self, credential, params: dict[str, Any], *, idempotency_key: str) -> RootedFile:
        try:
            return RootedFile(file_root(), params["path"])
        except PathRefused as exc:
            raise ExecutionError(f"refused: {exc}") from None

    def record_before(self, params: dict[str, Any], client: RootedFile) -> dict[str, Any] | None:
        """The text a ``replace`` overwrites, for its undo; None for a new file (file.write does not delete) or a
        file too large or not UTF-8 text (not restorable as a file.write)."""
        if params.get("mode") != "replace":
            return None
        try:
            current = client.read(MAX_CONTENT_BYTES)
        except PathRefused as exc:
            raise ExecutionError(f"refused: {exc}", details={"path": params["path"]}) from None
        if current is None or len(current) > MAX_CONTENT_BYTES:
            return None
        try:
            text = current.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return {"content": text, "sha256": sha256_hex(current)}

    def reverse(
        self, params: dict[str, Any], result: dict[str, Any], before: dict[str, Any] | None, credential
    ) -> Reverse | None:
        """Write back the content recorded before the write, only if the file still holds what was written
        (``expected_sha256``): an undo never overwrites a later change."""
        if not before or "content" not in before or before.get("sha256") == result.get("sha256"):
            return None
        undo = {
            "path": params["path"],
            "content": before["content"],
            "mode": "replace",
            "expected_sha256": result["sha256"],
        }
        return Reverse(self.name, undo, f"Restore {shorten(params['path'], 100)} as it was before")

    def execute(self, params: dict[str, Any], client: RootedFile) -> dict[str, Any]:
        try:
            data = params["content"].encode("utf-8")
        except UnicodeEncodeError:
            raise ExecutionError("refused: the content is not valid Unicode text") from None
        try:
            return client.write(data, mode=params["mode"], expected_sha256=params.get("expected_sha256"))
        except PathRefused as exc:
            raise ExecutionError(f"refused: {exc}", details={"path": params["path"]}) from None
        except OSError as exc:
            raise ExecutionError(
                f"writing {params['path']} failed: {exc.strerror or type(exc).__name__}",
                permanent=exc.errno not in (errno.ENOSPC, errno.EAGAIN, errno.EINTR),
                details={"path": params["path"]},
            ) from None

    def preview(self, params: dict[str, Any], client: RootedFile) -> Preview:
        notes: list[str] = []
        try:
            current = client.read(MAX_CONTENT_BYTES)
            missing = client.missing_dirs() if current is None else []
        except PathRefused as exc:
            return Preview(kind="unavailable", title=params["path"], error=f"refused: {exc}")
        content = params["content"]
        before: str | None
        failure = ""  # what write() will refuse, known from the read: said first, before the diff
        if current is None:
            before = ""
            notes.append("new file")
            if missing:
                notes.append(f"creates the directories {', '.join(missing)}")
            if params["mode"] == "replace":
                notes.append("the file does not exist: mode replace will fail")
                failure = f"Execution will fail: {params['path']} does not exist, and mode replace needs it."
        else:
            if params["mode"] == "create":
                notes.append("the file already exists: mode create will fail")
                failure = f"Execution will fail: {params['path']} already exists, and mode create refuses it."
            if len(current) > MAX_CONTENT_BYTES:
                before = None
                notes.append(f"the current file is larger than {MAX_CONTENT_BYTES} bytes and is not shown")
            else:
                try:
                    before = current.decode("utf-8")
                except UnicodeDecodeError:
                    before = None
                    notes.append(f"file is not UTF-8 text ({len(current)} bytes); its content is not shown")
                if params.get("expected_sha256") and sha256_hex(current) != params["expected_sha256"]:
                    notes.append("the file changed since the agent read it (expected_sha256 does not match)")
                    failure = failure or (
                        "Execution will fail: the file changed since the agent read it "
                        "(expected_sha256 does not match)."
                    )
                if before == content:
                    notes.append("no change: the file already has this content")
        return Preview(
            kind="text",
            title=params["path"],
            before=before,
            after=content,
            notes=notes,
            will_fail=bool(failure),
            failure=failure,
        )
