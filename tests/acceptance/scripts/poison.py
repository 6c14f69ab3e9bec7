"""Kills its own executor for the command "kill-executor" (a poison request); else succeeds."""

import os
import signal


def run(command, ctx):
    if command == "kill-executor":
        os.kill(os.getppid(), signal.SIGKILL)  # the worker's parent is the executor
    if command == "exit-worker":
        os._exit(3)
    return 3, "fine"
