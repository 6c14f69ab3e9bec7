#!/bin/sh
# Reports what the executable contract handed it: the stdin JSON and the environment.
input=$(cat)
bytes=$(printf '%s' "$input" | wc -c | tr -d ' ')
case "$input" in *'"command"'*) has_command=yes ;; *) has_command=no ;; esac
printf 'some output first\n'
printf '{"result": 3, "feedback": "run %s: %s stdin bytes, command field %s, JOB_COMMAND=%s"}\n' \
  "$JOB_RUN_ID" "$bytes" "$has_command" "$JOB_COMMAND"
