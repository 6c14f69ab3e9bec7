"""Fails until attempt N (the command), then succeeds."""


def run(command, ctx):
    if ctx.attempt >= int(command):
        return 3, f"succeeded on attempt {ctx.attempt}"
    return 2, f"attempt {ctx.attempt} failed: the IPX was busy"
