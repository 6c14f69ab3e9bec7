"""The executor: runs allow-listed scripts for job requests from the work queue.

Entry points: `jobmanager.executor.service.serve` (the service),
`jobmanager.executor.config.ExecutorSettings` (its settings),
`jobmanager.executor.scripts.ScriptCatalogue` (the allow-list) and
`jobmanager.executor.runner.Runner` (runs one request). They are also importable from here.

This module imports nothing eagerly: every Python worker process imports this package
first, and must stay small.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobmanager.executor.config import ExecutorSettings
    from jobmanager.executor.runner import Runner
    from jobmanager.executor.scripts import Script, ScriptCatalogue
    from jobmanager.executor.service import serve

__all__ = ["ExecutorSettings", "Runner", "Script", "ScriptCatalogue", "serve"]

_HOMES = {
    "ExecutorSettings": "config",
    "Runner": "runner",
    "Script": "scripts",
    "ScriptCatalogue": "scripts",
    "serve": "service",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
