#!/usr/bin/env bash
# Example job in bash: backs up "archives", one step at a time.
# data: {"steps": 20, "delayMs": 500}. Needs the bash wrapper (bash, python3).
# shellcheck source=SCRIPTDIR/../../wrappers/shell/extjob.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../wrappers/shell/extjob.sh"

# shellcheck disable=SC2119 # job_init's optional argument is not the script's
job_init
steps="$(job_data_get '.steps // 20')"
delay_ms="$(job_data_get '.delayMs // 500')"
delay="$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"

for ((i = 1; i <= steps; i++)); do
  if job_cancel_requested; then
    job_fail "cancelled after $((i - 1)) of ${steps} archives"
  fi
  sleep "${delay}"   # the real work would go here; heartbeats go on meanwhile
  job_progress $((i * 100 / steps)) "archive ${i} of ${steps}"
  if ((i % 5 == 0)); then
    job_info "${i} archives written"
  fi
done
job_complete "{\"archives\":${steps}}"
