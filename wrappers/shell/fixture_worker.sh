#!/usr/bin/env bash
# The fixture worker of SPEC.md section 11 (FIX-1..4), built only on the
# public API of extjob.sh. `extjob conformance` runs it and picks the scenario
# in the payload's data: {"scenario": NAME, ...parameters}.
# Usage: bash wrappers/shell/fixture_worker.sh  (payload on stdin)
# The scenarios set JOB_RESULT, which job_run completes the job with. Its
# filters are paths and defaults only, so that it runs without jq too.
# shellcheck disable=SC2034,SC2317,SC2119 # JOB_RESULT is read by job_run,
# the scenario_* functions are called through job_run.
# shellcheck source-path=SCRIPTDIR
# shellcheck source=extjob.sh
source "$(dirname "${BASH_SOURCE[0]}")/extjob.sh"

scenario_complete() {
  job_progress 50 "halfway"
  JOB_RESULT='{"ok": true}'
}

scenario_echo() {
  local text
  # As a JSON string (-j): bash strings cannot hold every character (NUL).
  text=$(job_data_get -j '.text // ""')
  job_log -j info "${text}"
  job_progress -j 50 "${text}"
  JOB_RESULT=$(job_data_get -j .value)
}

scenario_fail() {
  job_fail -j "$(job_data_get -j '.message // "fixture failure"')"
}

# Prints MS milliseconds as seconds, for sleep.
seconds() {
  printf '%d.%03d\n' $(($1 / 1000)) $(($1 % 1000))
}

scenario_sleep() {
  local ms
  ms=$(job_data_get '.ms // 1000')
  sleep "$(seconds "${ms}")"
  JOB_RESULT="{\"slept\": ${ms}}"
}

# Sets percent to I * 100 / COUNT as a decimal number (bash has integers
# only), without a subshell.
percent_of() {
  local i=$1 count=$2 digits fraction=''
  local whole=$((i * 100 / count)) rest=$((i * 100 % count))
  for ((digits = 0; digits < 12 && rest; digits++)); do
    fraction+=$((rest * 10 / count))
    rest=$((rest * 10 % count))
  done
  percent=${whole}${fraction:+.${fraction}}
}

scenario_progress() {
  local count i percent
  count=$(job_data_get '.count // 100')
  for ((i = 1; i <= count; i++)); do
    percent_of "${i}" "${count}"
    job_progress "${percent}" "step ${i}"
  done
  JOB_RESULT="{\"count\": ${count}}"
}

scenario_logs() {
  local count interval i
  count=$(job_data_get '.count // 10')
  interval=$(job_data_get '.intervalMs // 0')
  for ((i = 1; i <= count; i++)); do
    job_log info "line ${i}" "{\"i\": ${i}}"
    if ((interval && i < count)); then
      sleep "$(seconds "${interval}")"
    fi
  done
  JOB_RESULT="{\"count\": ${count}}"
}

scenario_levels() {
  local level
  for level in debug info warn error; do
    job_log "${level}" "${level}" "{\"level\": \"${level}\"}"
  done
}

on_cancel() {
  kill "${sleeper}" 2>/dev/null
  job_log info "cancel requested"
  job_fail "cancelled"
}

scenario_cancel() {
  local ms
  ms=$(job_data_get '.ms // 30000')
  # The sleeper runs before the handler is registered, so that the handler
  # can always stop it. `wait` returns as soon as the cancel trap fires;
  # `sleep` alone would not.
  sleep "$(seconds "${ms}")" &
  sleeper=$!
  job_on_cancel on_cancel
  wait "${sleeper}"
  if job_cancel_requested; then
    job_log info "cancel requested"
    job_fail "cancelled"
  fi
  JOB_RESULT='{"cancelled": false}'
}

scenario_checkpoint() {
  local previous
  if previous=$(job_checkpoint_get); then
    JOB_RESULT="{\"resumedFrom\": ${previous}}"
    return 0
  fi
  job_checkpoint "$(job_data_get -j '.value // {"step": 1}')"
  job_fail "checkpoint saved"
}

scenario_large() {
  local bytes text=x
  bytes=$(job_data_get '.bytes // 1048576')
  while ((${#text} < bytes)); do text+=${text}; done # doubling: linear time
  JOB_RESULT="\"${text:0:bytes}\""
}

main() {
  local scenario
  job_init
  scenario=$(job_data_get '.scenario // "complete"')
  case ${scenario} in
    crash) exit "$(job_data_get '.code // 3')" ;;
    complete | echo | fail | sleep | progress | logs | levels | cancel | checkpoint | large)
      job_run "scenario_${scenario}"
      ;;
    *) job_fail --no-retry "unknown fixture scenario: ${scenario}" ;;
  esac
}

main "$@"
