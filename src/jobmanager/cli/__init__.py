"""The `jobmanager` command."""
