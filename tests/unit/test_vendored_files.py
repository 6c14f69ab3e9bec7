"""The console's third-party files are the npm packages the lock pins, unchanged: the copies,
their manifest and `services/admin/vendor/package-lock.json` agree (`tools/vendor_console.py`
refreshes all three together)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "services" / "admin" / "vendor" / "package-lock.json"
PACKAGE = ROOT / "services" / "admin" / "vendor" / "package.json"
VENDORED = ROOT / "services" / "admin" / "src" / "jobmanager" / "admin" / "console" / "static"
MANIFEST = VENDORED / "vendor" / "MANIFEST.json"


def test_each_vendored_file_is_the_locked_packages() -> None:
    lock = json.loads(LOCK.read_text())["packages"]
    wanted = json.loads(PACKAGE.read_text())["dependencies"]
    manifest = json.loads(MANIFEST.read_text())
    assert set(manifest) == set(wanted)
    for package, entry in manifest.items():
        locked = lock[f"node_modules/{package}"]
        assert entry["version"] == locked["version"] == wanted[package], package
        assert entry["integrity"] == locked["integrity"], package
        for name, digest in entry["files"].items():
            body = (VENDORED / "vendor" / package / name).read_bytes()
            assert hashlib.sha256(body).hexdigest() == digest, f"{package}/{name} was changed"


def test_the_chart_library_says_its_version() -> None:
    banner = (VENDORED / "vendor" / "uplot" / "uPlot.iife.min.js").read_text()[:100]
    version = json.loads(MANIFEST.read_text())["uplot"]["version"]
    assert f"(v{version})" in banner
