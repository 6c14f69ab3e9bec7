#!/bin/sh
# A report on the channel of a run: the example of an executable script (POSIX sh, coreutils).
#
# Contract: the request arrives as one JSON object on stdin; JOB_COMMAND, JOB_RUN_ID and
# JOB_ATTEMPT are in the environment. The last stdout line reports the result as JSON.
# The input is never evaluated: it is only counted and searched with a fixed pattern, and
# what goes into the result line is reduced to characters that are safe inside JSON.
set -eu

request_bytes=$(wc -c | tr -d ' ')
command_bytes=$(printf '%s' "${JOB_COMMAND-}" | wc -c | tr -d ' ')
run_id=$(printf '%s' "${JOB_RUN_ID-}" | tr -cd '0-9')
attempt=$(printf '%s' "${JOB_ATTEMPT-}" | tr -cd '0-9')
channel=$(printf '%s' "${JOB_COMMAND-}" \
    | sed -n 's/.*"channel_id" *: *"\([A-Za-z0-9_.:-]\{1,100\}\)".*/\1/p' | head -n 1)

echo "channel report for run ${run_id:-?} (attempt ${attempt:-?})"
echo "request on stdin: ${request_bytes} bytes; command: ${command_bytes} bytes"
echo "reported at $(date -u +%Y-%m-%dT%H:%M:%SZ) by $(id -un 2>/dev/null || echo unknown)" >&2

if [ "$command_bytes" -eq 0 ]; then
    printf '{"result": 2, "feedback": "run %s: empty command, nothing to report"}\n' \
        "${run_id:-?}"
    exit 0
fi
printf '{"result": 3, "feedback": "run %s: channel %s, command of %s bytes"}\n' \
    "${run_id:-?}" "${channel:-unknown}" "$command_bytes"
