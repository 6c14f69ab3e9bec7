"""The script catalogue: discovery on a directory, and the allow-list's refusals."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from jobmanager.executor.scripts import Script, ScriptCatalogue, valid_name

REPOSITORY = Path(__file__).resolve().parents[2]
PY = "def run(command, ctx):\n    return 3, ''\n"


def write(path: Path, text: str, *, executable: bool = False) -> Path:
    path.write_text(text)
    path.chmod(0o755 if executable else 0o644)
    return path


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    directory = tmp_path / "scripts"
    directory.mkdir()
    return directory


def test_discovers_python_scripts_and_executables(scripts: Path) -> None:
    write(scripts / "alpha.py", PY)
    write(scripts / "beta.sh", "#!/bin/sh\necho hi\n", executable=True)
    write(scripts / "gamma", "#!/bin/sh\n", executable=True)
    write(scripts / "async_one.py", "async def run(command, ctx):\n    return 3, ''\n")
    write(scripts / "assigned.py", "def _impl(c, x):\n    return 3\nrun = _impl\n")
    write(scripts / "imported.py", "from os.path import join as run\n")
    write(
        scripts / "guarded.py",
        "try:\n    import json\nexcept ImportError:\n    pass\n"
        "else:\n    pass\nif True:\n    def run(c, x):\n        return 3\n",
    )
    found = ScriptCatalogue(scripts).catalogue()
    assert {name: s.kind for name, s in found.items()} == {
        "alpha": "python",
        "async_one": "python",
        "assigned": "python",
        "imported": "python",
        "guarded": "python",
        "beta": "executable",
        "gamma": "executable",
    }
    assert found["beta"].path == (scripts / "beta.sh").resolve()


def test_skips_what_is_not_a_script(scripts: Path) -> None:
    write(scripts / "notes.txt", "hello")  # no exec bit
    write(scripts / "README.md", "# scripts")
    write(scripts / "helper.py", "def helper():\n    pass\n")  # no run()
    write(scripts / "_private.py", PY)
    write(scripts / ".hidden.py", PY)
    write(scripts / ".hidden", "#!/bin/sh\n", executable=True)
    write(scripts / "old.py~", PY, executable=True)
    write(scripts / "report.sh.bak", "#!/bin/sh\n", executable=True)
    write(scripts / "report.swp", "#!/bin/sh\n", executable=True)
    write(scripts / "two.dots.sh", "#!/bin/sh\n", executable=True)  # name "two.dots"
    write(scripts / "-rf", "#!/bin/sh\n", executable=True)
    write(scripts / "spa ce.sh", "#!/bin/sh\n", executable=True)
    (scripts / "subdir").mkdir()
    (scripts / "link_to_dir").symlink_to(scripts / "subdir")
    (scripts / "dangling").symlink_to(scripts / "missing")
    os.mkfifo(scripts / "fifo")
    assert ScriptCatalogue(scripts).catalogue() == {}


def test_a_python_script_with_a_syntax_error_is_listed(scripts: Path) -> None:
    # Running it reports the error, which says more than "unknown script".
    write(scripts / "broken.py", "def run(:\n")
    assert list(ScriptCatalogue(scripts).catalogue()) == ["broken"]


def test_symlinks_inside_are_followed_and_escapes_refused(
    scripts: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outside = write(tmp_path / "outside.sh", "#!/bin/sh\n", executable=True)
    write(scripts / "_real.py", PY)
    (scripts / "alias.py").symlink_to(scripts / "_real.py")
    (scripts / "escape.sh").symlink_to(outside)
    (scripts / "sneaky.py").symlink_to(Path("..") / "outside.sh")
    with caplog.at_level(logging.WARNING):
        found = ScriptCatalogue(scripts).catalogue()
    assert list(found) == ["alias"]
    assert found["alias"].path == (scripts / "_real.py").resolve()
    assert "refusing script escape.sh" in caplog.text
    assert "refusing script sneaky.py" in caplog.text


def test_a_name_clash_keeps_the_python_script(
    scripts: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(scripts / "report.py", PY)
    write(scripts / "report.sh", "#!/bin/sh\n", executable=True)
    write(scripts / "other.js", "#!/usr/bin/env node\n", executable=True)
    write(scripts / "other.sh", "#!/bin/sh\n", executable=True)
    with caplog.at_level(logging.WARNING):
        found = ScriptCatalogue(scripts).catalogue()
    assert found["report"].kind == "python"
    assert found["other"].path.name == "other.js"  # the first by name
    assert "two scripts are called 'report'" in caplog.text


@pytest.mark.parametrize(
    "name",
    [
        "../etc/passwd",
        "-rf",
        "--help",
        "",
        ".hidden",
        "_private",
        "a/b",
        "a b",
        "x.py",
        "ünïcode",
        "a" * 101,
        "noop\n",
    ],
)
def test_invalid_names_are_refused_without_a_lookup(scripts: Path, name: str) -> None:
    write(scripts / "noop.py", PY)
    assert not valid_name(name)
    assert ScriptCatalogue(scripts).get(name) is None


def test_rescans_when_the_directory_changes(scripts: Path) -> None:
    catalogue = ScriptCatalogue(scripts)
    assert catalogue.catalogue() == {}
    write(scripts / "late.py", PY)
    assert list(catalogue.catalogue()) == ["late"]
    (scripts / "late.py").unlink()
    assert catalogue.get("late") is None


def test_does_not_rescan_an_unchanged_directory(
    scripts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(scripts / "one.py", PY)
    catalogue = ScriptCatalogue(scripts)
    assert list(catalogue.catalogue()) == ["one"]
    scans = 0
    original = catalogue._scan

    def counting() -> dict[str, Script]:
        nonlocal scans
        scans += 1
        return original()

    monkeypatch.setattr(catalogue, "_scan", counting)
    for _ in range(100):
        assert catalogue.get("one") is not None
    assert scans == 0


def test_a_missing_directory_is_an_empty_catalogue(tmp_path: Path) -> None:
    assert ScriptCatalogue(tmp_path / "nowhere").catalogue() == {}


def test_the_shipped_scripts() -> None:
    found = ScriptCatalogue(REPOSITORY / "scripts").catalogue()
    assert {name: s.kind for name, s in found.items()} == {
        "ipx_update": "python",
        "noop": "python",
        "channel_report": "executable",
    }
