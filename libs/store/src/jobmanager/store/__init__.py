"""The system of record: Postgres models, migrations and the ledger of run states."""
