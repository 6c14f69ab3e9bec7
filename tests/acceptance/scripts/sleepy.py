"""Sleeps for the number of seconds in the command, then succeeds."""

import time


def run(command, ctx):
    time.sleep(float(command))
    return 3, f"slept {command} s"
