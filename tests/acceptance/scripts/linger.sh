#!/bin/sh
# Runs a minute with a child in its process group, its pid recorded in the file named by the
# command: a cancel must end both within moments of its SIGTERM.
sleep 60 &
echo "$$" > "$JOB_COMMAND"
wait
