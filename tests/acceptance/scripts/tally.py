"""Writes a line "RUN ATTEMPT" to the file named in the command each time it runs, so a test
can count executions; fails while "<that file>.down" exists (its downstream system is
down), else succeeds."""

from pathlib import Path


def run(command, ctx):
    with Path(command).open("a") as tally:
        tally.write(f"{ctx.run_id} {ctx.attempt}\n")
    if Path(f"{command}.down").exists():
        return 2, "the downstream system is down"
    return 3, "the downstream system answered"
