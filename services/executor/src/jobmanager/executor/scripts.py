"""The script catalogue: the allow-list of what an executor may run, by construction.

A script is a file directly in the scripts directory:

* ``NAME.py`` defining ``run(command, ctx)`` at module level (a Python script), or
* any other regular file with its execute bit set (an executable, in any language).

The name is the file name without its last extension and must match ``NAME_PATTERN``, so
that it can never look like a path or an option. Hidden files, names starting with ``_``
(helpers that scripts import) and editor backups are not scripts. A symbolic link is followed
only if it stays inside the directory. Nothing outside this catalogue is ever executed.
"""

from __future__ import annotations

import ast
import logging
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
BACKUP_SUFFIXES = ("~", ".bak", ".orig", ".rej", ".swp", ".swo", ".tmp", ".old", ".pyc")
# A lookup that misses rescans (a file may just have been made executable), at most this often.
MISS_RESCAN_S = 1.0

ScriptKind = Literal["python", "executable"]


@dataclass(frozen=True)
class Script:
    """One allow-listed script."""

    name: str
    kind: ScriptKind
    path: Path  # resolved, inside the scripts directory


def valid_name(name: str) -> bool:
    """Whether `name` is acceptable as a script name at all (before any file lookup)."""
    return bool(NAME_PATTERN.fullmatch(name))


def _binds_run(body: list[ast.stmt]) -> bool:
    """Whether module-level statements (also inside top-level if/try) bind the name `run`."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "run":
            return True
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "run" for t in node.targets
        ):
            return True
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.target.id == "run":
                return True
        if isinstance(node, ast.ImportFrom) and any(
            (alias.asname or alias.name) == "run" for alias in node.names
        ):
            return True
        if isinstance(node, ast.If | ast.Try):
            nested = [*node.body, *node.orelse]
            if isinstance(node, ast.Try):
                nested += [*node.finalbody, *(s for h in node.handlers for s in h.body)]
            if _binds_run(nested):
                return True
    return False


class ScriptCatalogue:
    """The scripts of one directory, rescanned only when the directory changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stamp: tuple[int, int] | None = None
        self._scanned_at = 0.0
        self._scripts: dict[str, Script] = {}
        self._python: dict[Path, tuple[tuple[int, int], bool]] = {}

    def catalogue(self) -> dict[str, Script]:
        """All scripts by name (a fresh copy; rescans if the directory changed)."""
        self._refresh(force=False)
        return dict(self._scripts)

    def names(self) -> list[str]:
        return sorted(self.catalogue())

    def get(self, name: str) -> Script | None:
        """The script called `name`, or None if there is none (or the name is not valid)."""
        if not valid_name(name):
            return None
        self._refresh(force=False)
        script = self._scripts.get(name)
        if script is None and time.monotonic() - self._scanned_at >= MISS_RESCAN_S:
            self._refresh(force=True)
            script = self._scripts.get(name)
        return script

    def _refresh(self, *, force: bool) -> None:
        try:
            st = os.stat(self.directory)
            stamp: tuple[int, int] | None = (st.st_ino, st.st_mtime_ns)
        except OSError:
            stamp = None
        if stamp == self._stamp and not force and self._scanned_at:
            return
        scripts = self._scan() if stamp is not None else {}
        if stamp is None and (self._stamp is not None or not self._scanned_at):
            log.warning("scripts directory %s does not exist", self.directory)
        if scripts.keys() != self._scripts.keys() and self._scanned_at:
            log.info("scripts in %s now: %s", self.directory, ", ".join(sorted(scripts)) or "none")
        self._scripts, self._stamp, self._scanned_at = scripts, stamp, time.monotonic()

    def _scan(self) -> dict[str, Script]:
        root = self.directory.resolve()
        found: dict[str, Script] = {}
        try:
            entries = sorted(os.scandir(root), key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list scripts directory %s: %s", root, exc)
            return found
        for entry in entries:
            script = self._inspect(root, entry.name)
            if script is None:
                continue
            other = found.get(script.name)
            if other is not None:
                keep = script if script.kind == "python" and other.kind != "python" else other
                log.warning(
                    "two scripts are called %r (%s and %s); using %s",
                    script.name,
                    other.path.name,
                    script.path.name,
                    keep.path.name,
                )
                script = keep
            found[script.name] = script
        return found

    def _inspect(self, root: Path, filename: str) -> Script | None:
        if filename.startswith((".", "_")) or filename.endswith(BACKUP_SUFFIXES):
            return None
        stem, dot, extension = filename.rpartition(".")
        name = stem if dot else filename
        if not valid_name(name):
            log.debug("not a script (name): %s", filename)
            return None
        try:
            path = (root / filename).resolve(strict=True)
        except (OSError, RuntimeError):  # broken link or link loop
            return None
        if not path.is_relative_to(root):
            log.warning("refusing script %s: it resolves to %s, outside %s", filename, path, root)
            return None
        try:
            st = path.stat()
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if dot and extension == "py":
            return Script(name, "python", path) if self._defines_run(path, st) else None
        if st.st_mode & 0o111 and os.access(path, os.X_OK):
            return Script(name, "executable", path)
        return None

    def _defines_run(self, path: Path, st: os.stat_result) -> bool:
        key = (st.st_mtime_ns, st.st_size)
        cached = self._python.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except SyntaxError:
            # Kept in the catalogue: running it reports the syntax error, which is clearer
            # to an operator than "unknown script".
            defines = True
        except (OSError, ValueError):
            defines = False
        else:
            defines = _binds_run(tree.body)
            if not defines:
                log.debug("not a script (no run function): %s", path.name)
        self._python[path] = (key, defines)
        return defines
