#!/bin/sh
# Ignores SIGTERM (and so does its child, which inherits that), its pid recorded in the file
# named by the command: a cancel must kill it once the job's grace has passed.
trap '' TERM
sleep 60 &
echo "$$" > "$JOB_COMMAND"
wait
