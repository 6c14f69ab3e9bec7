"""`python -m jobmanager.matcher`: the matcher in the foreground (as `jobmanager matcher`)."""

from __future__ import annotations

import sys

from jobmanager.core.logs import configure
from jobmanager.core.runtime import load_settings, run_service
from jobmanager.matcher.config import MatcherSettings
from jobmanager.matcher.service import serve


def main() -> int:
    settings = load_settings(MatcherSettings, "matcher")
    configure(settings.log_level, settings.log_format, service="matcher")
    return run_service(lambda stop: serve(settings, stop=stop))


if __name__ == "__main__":
    sys.exit(main())
