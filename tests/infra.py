"""The database helpers under the name the tests first imported them by; they live in the
test kit now (`jobmanager.testkit.databases`), and this stays while
`tests/integration/test_bulk_ledger.py` imports them from here."""

from __future__ import annotations

from jobmanager.testkit.databases import admin_execute, database_on

__all__ = ["admin_execute", "database_on"]
