"""`python -m jobmanager.executor [--concurrency N]`: run one executor in the foreground.

Settings come from the environment (`JOBMANAGER_*`). SIGTERM or SIGINT stops it gracefully
(exit status 0); a second one aborts the runs in flight. A missing broker or scripts
directory is one clear line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from jobmanager.core.broker import BrokerUnavailable
from jobmanager.core.logs import configure
from jobmanager.core.runtime import load_settings, loop_factory
from jobmanager.executor.config import ExecutorSettings
from jobmanager.executor.service import ExecutorConfigError, serve


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the executor; the process exit status."""
    parser = argparse.ArgumentParser(
        prog="jobmanager executor", description="Run a Job Manager executor."
    )
    parser.add_argument(
        "--concurrency",
        type=_positive,
        help="scripts run at once (default: 4, or JOBMANAGER_CONCURRENCY)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(
            lambda: (
                ExecutorSettings(concurrency=args.concurrency)
                if args.concurrency is not None
                else ExecutorSettings()
            ),
            "executor",
        )
    except SystemExit as exc:
        return int(exc.code or 1)
    configure(settings.log_level, settings.log_format, service="executor")
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(serve(settings))
    except (BrokerUnavailable, ExecutorConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
