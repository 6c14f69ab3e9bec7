"""Copy the console's third-party files from the npm packages `services/admin/vendor/`
pins (its package-lock.json) into the admin's static files, with a manifest.

    python tools/vendor_console.py

runs `npm ci` there (npm checks each package against the lock's integrity hash), copies the
files listed in `FILES`, and writes `static/vendor/MANIFEST.json`: each package's version and
integrity from the lock, each file's SHA-256. The copies are committed, so neither the tests
nor the demo need npm; `tests/unit/test_vendored_files.py` fails when a copy, the manifest
and the lock disagree.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "services" / "admin" / "vendor"
STATIC = ROOT / "services" / "admin" / "src" / "jobmanager" / "admin" / "console" / "static"
TARGET = STATIC / "vendor"
# package -> files of its npm package that the console serves (the allow-list).
FILES: dict[str, list[str]] = {
    "uplot": ["dist/uPlot.iife.min.js", "dist/uPlot.min.css", "LICENSE"],
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(lock: dict[str, Any]) -> dict[str, object]:
    """What the lock says of each vendored package, and the copies' digests."""
    packages = lock["packages"]
    out: dict[str, object] = {}
    for package, names in FILES.items():
        locked = packages[f"node_modules/{package}"]
        out[package] = {
            "version": locked["version"],
            "integrity": locked["integrity"],
            "files": {
                Path(name).name: sha256(TARGET / package / Path(name).name) for name in names
            },
        }
    return out


def main() -> int:
    npm = shutil.which("npm")
    if npm is None:
        print("npm is needed to vendor the console's files", file=sys.stderr)
        return 1
    subprocess.run(  # noqa: S603 (npm found on PATH, fixed arguments)
        [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=VENDOR, check=True
    )
    for package, names in FILES.items():
        (TARGET / package).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copyfile(
                VENDOR / "node_modules" / package / name, TARGET / package / Path(name).name
            )
    lock = json.loads((VENDOR / "package-lock.json").read_text())
    text = json.dumps(manifest(lock), indent=2, sort_keys=True) + "\n"
    (TARGET / "MANIFEST.json").write_text(text)
    print(f"vendored {', '.join(FILES)} into {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
