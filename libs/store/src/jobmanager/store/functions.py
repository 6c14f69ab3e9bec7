"""The ledger's database functions: `ledger.sql`, installed as it is.

The file is the one source of their text. `jobmanager migrate` installs it after the
migrations whenever the database's copy differs (see `migrations/env.py`), in the
migrations' transaction: the functions are a repeatable migration, replaced as a whole, so
changing a rule means editing `ledger.sql` and nothing else. Each installed copy carries the
file's digest (as the comment of `ledger_record`), which is how a service knows it runs on
its own functions (`jobmanager.store.migrate.check_schema`).

Each statement of the file ends with `$$;` on a line of its own (the lint's SQL check,
`tools/check_sql.py`, parses it and holds it to that).
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from importlib import resources

from sqlalchemy import Connection, text

MARKED = "ledger_record"  # the function whose comment is the installed file's digest


@cache
def source() -> str:
    return (resources.files(__package__) / "ledger.sql").read_text(encoding="utf-8")


def statements(sql: str) -> list[str]:
    """The file's statements, each a CREATE FUNCTION ending in `$$;`."""
    parts = re.split(r"^\$\$;\s*$", sql, flags=re.MULTILINE)
    return [part.strip() + "\n$$" for part in parts if part.strip() and "CREATE" in part]


def names(sql: str) -> list[str]:
    return re.findall(r"^CREATE FUNCTION (\w+)\(", sql, flags=re.MULTILINE)


def digest(sql: str) -> str:
    return "sha256:" + hashlib.sha256(sql.encode()).hexdigest()


_INSTALLED = text(
    "SELECT p.oid::regprocedure::text AS signature, p.proname, "
    "obj_description(p.oid, 'pg_proc') AS comment "
    "FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace "
    "WHERE n.nspname = current_schema() AND p.proname LIKE 'ledger\\_%'"
)


def installed_digest(connection: Connection) -> str | None:
    """The digest of the ledger functions installed in the database, if any."""
    for row in connection.execute(_INSTALLED):
        if row.proname == MARKED:
            return str(row.comment) if row.comment else None
    return None


def drop(connection: Connection) -> None:
    """Drop every installed ledger function (a downgrade below them, or before a reinstall)."""
    for row in list(connection.execute(_INSTALLED)):
        connection.execute(text(f"DROP FUNCTION {row.signature}"))


def install(connection: Connection) -> bool:
    """Install `ledger.sql` unless the database has this very copy; True if it did."""
    sql = source()
    if installed_digest(connection) == digest(sql):
        return False
    drop(connection)
    for statement in statements(sql):
        connection.exec_driver_sql(statement)
    connection.execute(text(f"COMMENT ON FUNCTION {MARKED} IS '{digest(sql)}'"))
    return True
