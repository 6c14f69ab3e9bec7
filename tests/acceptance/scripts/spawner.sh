#!/bin/sh
# Starts a child that would outlive us, records both pids in the file named by the command,
# then hangs: the executor must kill the whole process group on timeout.
sleep 300 &
echo "$$ $!" > "$JOB_COMMAND"
sleep 300
