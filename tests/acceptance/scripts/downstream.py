"""Fails while the file named in the command exists (its downstream system is down), else
succeeds: a script an operator "fixes" by removing the file."""

from pathlib import Path


def run(command, ctx):
    if Path(command).exists():
        return 2, "the downstream system is down"
    return 3, "the downstream system answered"
