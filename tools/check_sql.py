"""The lint's check of the ledger's SQL (`libs/store/.../ledger.sql`), without a database.

Every statement must be a CREATE FUNCTION that parses, its body too (PL/pgSQL or SQL), and
the file must split into exactly those statements the way `jobmanager.store.functions`
installs it. A database checks the rest (names, types) when the tests install the file.
Exits non-zero with the function and the parser's message on the first error.
"""

from __future__ import annotations

import re
import sys

import pglast
from pglast import ast, parse_plpgsql
from pglast.parser import ParseError

from jobmanager.store import functions


def problems(sql: str) -> list[str]:
    found: list[str] = []
    try:
        parsed = pglast.parse_sql(sql)
    except ParseError as exc:
        return [f"ledger.sql: {exc}"]
    names = functions.names(sql)
    if len(parsed) != len(names) or len(functions.statements(sql)) != len(names):
        found.append(
            f"ledger.sql: {len(parsed)} statements, {len(names)} CREATE FUNCTION lines, "
            f"{len(functions.statements(sql))} `$$;` endings: each statement must be a "
            "CREATE FUNCTION ending with `$$;` on a line of its own"
        )
    for raw, name in zip(parsed, names, strict=False):
        stmt = raw.stmt
        if not isinstance(stmt, ast.CreateFunctionStmt):
            found.append(f"{name}: not a CREATE FUNCTION")
            continue
        options = {o.defname: o.arg for o in stmt.options or ()}
        language = options["language"].sval
        body = options["as"][0].sval
        start = raw.stmt_location or 0
        text = sql[start : start + raw.stmt_len] if raw.stmt_len else sql[start:]
        try:
            if language == "plpgsql":
                # Without a catalog the parser takes an array of a table's row type for an
                # array of records, which it refuses; any array type parses the same.
                parse_plpgsql(re.sub(r"\bruns\[\]", "bigint[]", text))
            elif language == "sql":
                pglast.parse_sql(body)
            else:
                found.append(f"{name}: language {language}, not sql or plpgsql")
        except ParseError as exc:
            found.append(f"{name}: {exc}")
    return found


def main() -> int:
    found = problems(functions.source())
    for problem in found:
        print(problem, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
