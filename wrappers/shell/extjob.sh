# shellcheck shell=bash
#
# extjob.sh: the worker side of the external job protocol for bash scripts.
# Implements protocol/SPEC.md (v1 core and the auth, replay, control, spool
# and checkpoint extensions). Source it, call job_init, then report:
#
#   source extjob.sh
#   job_init
#   steps=$(job_data_get '.steps // 5')
#   for ((i = 1; i <= steps; i++)); do job_progress $((i * 100 / steps)) "step $i"; done
#   job_complete '{"steps": '"$steps"'}'
#
# Needs: bash 4.4+ and python3 (what the server needs too). Without
# python3: jq, and socat when the server listens on a Unix socket (TCP then
# uses bash's own /dev/tcp). job_init checks and exits 2 naming what is
# missing and how to add it. EXTJOB_SH_CONNECTOR=socat takes the path of a
# machine without python3 even where python3 is.
#
# How it works. job_init starts ONE background bash process, the connection
# agent, which owns the connection for the whole job: it connects (and
# reconnects with backoff, RECONNECT-1), says hello and waits for welcome
# (AUTH-2), numbers messages and keeps them until acknowledged (REPLAY-*),
# heartbeats while the job code is busy or blocked (HB-2), surfaces cancel
# (CANCEL-3) and spools an undeliverable result (SPOOL-2). Its connector is
# one python3 process for the whole job (the program _extjob_py: it
# connects when told and turns what the server says into short events), or
# without python3, per connection, socat (Unix sockets) and one jq that
# decodes. So a job is three processes: the script, the agent, python3.
# The public functions only format JSON in pure bash (no process per
# message; jq or python3 only for texts over 8 KiB, JSON arguments over
# 4 KiB and text that is not valid UTF-8) and append each message to a
# queue file in a private temporary directory, waking the agent with a byte
# on a FIFO; the agent stamps it (TIME-1) and sends it. The queue file grows
# with what the job sends until the job ends. A cancel request is a flag
# file (job_cancel_requested) and a callback (job_on_cancel, run from a USR1
# trap).
#
# Ending. job_complete and job_fail send the terminal message, wait until it
# is acknowledged (or, for a v1 server, written; or spooled) and exit the
# script with 0 or 1 (EXIT-2). job_run FUNC completes the job when FUNC
# returns 0 and fails it, with a stack, when FUNC returns or exits non-zero.
# A script that exits without any of these sends no terminal message: the
# agent delivers what is pending and the server decides by the exit status
# (EXIT-1: 0 completes with a null result, anything else fails).
#
# The caller's shell: job_init sets an EXIT trap (and runs one set before it
# after its own); job_run sets ERR and errtrace for the handler's duration;
# job_on_cancel sets USR1 and TERM traps. Nothing else changes: no shell
# options, no locale, no other traps.
#
# Limits of bash: strings cannot hold NUL (pass such text as a JSON string
# with -j); job_complete and job_fail exit the shell they run in, so call
# them from the job's own shell, not from a subshell or a pipeline.

# ---------------------------------------------------------------- public API

#######################################
# Reads the payload, connects and sends `started`. Returns once the first
# connection is up; without one within reconnectWindowMs (or with every
# hello refused) it exits 1 after one line on stderr (RECONNECT-6).
# Globals (set): JOB_ID, JOB_NAME, JOB_DATA (compact JSON), JOB_ATTEMPT,
#   JOB_MAX_ATTEMPTS, JOB_CHECKPOINT (compact JSON, empty when none)
# Arguments: [heartbeat seconds], used only when the payload has no
#   heartbeatIntervalMs (the original's job_init argument)
# Outputs: one line on stderr and exit 2 on a missing or malformed payload or
#   a missing tool (PAY-6); exit 1 when no connection came up (RECONNECT-6)
# Example: job_init
#######################################
job_init() {
  local hb_arg=${1:-}
  _extjob_check_tools || exit 2
  _extjob_read_payload "$hb_arg" || exit 2
  _extjob_start_agent || exit 2
  _extjob_wait_up || exit 1
  _extjob_send started ''
}

#######################################
# Prints the job's data, or the result of a jq filter applied to it (strings
# raw, other values as JSON; with -j everything as JSON). Without jq (python3
# reads it then) the filter is a path and // defaults:
# `.a.b[0] // .c // 5`.
# Arguments: [-j], [filter] (default: the whole data)
# Returns: jq's status (3 for a filter python3 does not understand)
# Example: steps=$(job_data_get '.steps // 5')
#######################################
job_data_get() {
  local as=raw
  if [[ ${1:-} == -j ]]; then
    as=json
    shift
  fi
  _extjob_tool get "${1:-.}" "${as}" <<<"${JOB_DATA}"
}

#######################################
# Reports progress (MSG-4).
# Arguments: [-j] percent (number 0-100), [message], [data: a JSON object].
#   With -j the message is a JSON string (text bash cannot hold, like NUL).
# Returns: 0, or 2 with a line on stderr for a bad argument
# Example: job_progress 50 "halfway" '{"step": "resize"}'
#######################################
job_progress() {
  local json=''
  if [[ ${1:-} == -j ]]; then
    json=1
    shift
  fi
  local percent=${1:-} message=${2-} data=${3:-} body ok=1
  case ${percent} in
    '' | *[!0-9.]* | *.*.* | .* | *. | 0[0-9]*) ok='' ;; # not a JSON number
  esac
  if [[ -z ${ok} ]] || ((${percent%%.*} > 100)) || [[ ${percent} == 100.*[1-9]* ]]; then
    _extjob_err "job_progress: percent must be a number from 0 to 100, got '${percent}'"
    return 2
  fi
  body="\"percent\":${percent}"
  if (($# >= 2)); then
    _extjob_text "${json}" "${message}" || return 2
    body+=",\"message\":${_extjob_q}"
  fi
  if [[ -n ${data} ]]; then
    _extjob_json "${data}" object || return 2
    body+=",\"data\":${_extjob_q}"
  fi
  _extjob_send progress "${body}"
}

#######################################
# Writes a job log entry (MSG-6).
# Arguments: [-j] level (debug|info|warn|error), message, [data: a JSON
#   object]. With -j the message is a JSON string.
# Returns: 0, or 2 with a line on stderr for a bad argument
# Example: job_log warn "slow disk" '{"ms": 812}'
#######################################
job_log() {
  local json=''
  if [[ ${1:-} == -j ]]; then
    json=1
    shift
  fi
  local level=${1:-} message=${2-} data=${3:-} body
  case ${level} in
    debug | info | warn | error) ;;
    *)
      _extjob_err "job_log: level must be debug, info, warn or error, got '${level}'"
      return 2
      ;;
  esac
  _extjob_text "${json}" "${message}" || return 2
  body="\"level\":\"${level}\",\"message\":${_extjob_q}"
  if [[ -n ${data} ]]; then
    _extjob_json "${data}" object || return 2
    body+=",\"data\":${_extjob_q}"
  fi
  _extjob_send log "${body}"
}

#######################################
# Shortcuts for job_log at one level.
# Arguments: [-j] message, [data: a JSON object]
# Example: job_info "resized" '{"w": 640}'
#######################################
job_debug() { _extjob_log_at debug "$@"; }
job_info() { _extjob_log_at info "$@"; }
job_warn() { _extjob_log_at warn "$@"; }
job_error() { _extjob_log_at error "$@"; }

#######################################
# Completes the job (MSG-7), waits for the acknowledgement and exits 0.
# A result larger than maxLineBytes fails the job instead (LIMIT-1).
# Arguments: [result: any JSON value] (default null)
# Returns: 2 with a line on stderr (and does not exit) if result is not JSON
# Example: job_complete '{"frames": 240}'
#######################################
job_complete() {
  local result=${1:-null} size
  _extjob_json "${result}" || return 2
  _extjob_line_size completed "\"result\":${_extjob_q}"
  size=${_extjob_size}
  if ((size > _extjob_max_line)); then
    _extjob_terminal failed 1 "\"error\":\"result too large: ${size} bytes\""
  fi
  _extjob_terminal completed 0 "\"result\":${_extjob_q}"
}

#######################################
# Fails the job (MSG-8), waits for the acknowledgement and exits 1.
# Arguments: [--no-retry] (retryable: false, CKPT-4), [-j] (error and stack
#   are JSON strings), error text, [stack]
# Example: job_fail "disk full" "$(caller)"
#######################################
job_fail() {
  local retryable='' json=''
  while [[ ${1:-} == --no-retry || ${1:-} == -j ]]; do
    if [[ $1 == -j ]]; then json=1; else retryable=',"retryable":false'; fi
    shift
  done
  local error=${1:-job failed} stack=${2-} body
  [[ -n ${error} && ${error} != '""' ]] || error='job failed' json='' # MSG-8
  _extjob_text "${json}" "${error}" || _extjob_quote "invalid error text: ${error}"
  body="\"error\":${_extjob_q}"
  if (($# >= 2)); then
    _extjob_text "${json}" "${stack}" || _extjob_quote "${stack}"
    body+=",\"stack\":${_extjob_q}"
  fi
  body+=${retryable}
  _extjob_line_size failed "${body}"
  if ((_extjob_size > _extjob_max_line)); then
    # Keep the error readable and the line sendable (LIMIT-1); a -j error is
    # a JSON string, cut as text.
    [[ -z ${json} ]] || error=$(_extjob_tool get . raw <<<"${error}")
    _extjob_quote "${error:0:4096}"
    body="\"error\":${_extjob_q},\"stack\":\"(stack dropped: too large)\"${retryable}"
  fi
  _extjob_terminal failed 1 "${body}"
}

#######################################
# Runs a handler in the current shell: when it returns 0 the job completes
# with the JSON in JOB_RESULT (default null); when it returns or exits
# non-zero the job fails with the failing command and a stack (WRAP-2).
# The handler may also call job_complete or job_fail itself.
# Arguments: function name, [arguments...]
# Example: job_run resize "$input"
#######################################
job_run() {
  local -
  local status previous_err_trap
  previous_err_trap=$(trap -p ERR)
  set -o errtrace
  _extjob_handler=$1
  _extjob_stack=''
  _extjob_err_depth=0
  _extjob_err_status=0
  trap '_extjob_record_error $?' ERR
  # Not `"$@" || status=$?`: that would switch off the handler's `set -e`
  # and ERR trap. With `set -e` a failure exits, and _extjob_on_exit fails.
  "$@"
  status=$?
  eval "${previous_err_trap:-trap - ERR}"
  _extjob_handler=''
  if ((status == 0)); then
    job_complete "${JOB_RESULT:-null}"
  fi
  job_fail "$1 failed with status ${status}${_extjob_stack:+: ${_extjob_failed_command}}" \
    "${_extjob_stack:-at $1}"
}

#######################################
# Saves a checkpoint (CKPT-1) that a later attempt receives in
# JOB_CHECKPOINT. A server that does not offer `checkpoint` keeps none, and
# then this only updates JOB_CHECKPOINT.
# Arguments: data (any JSON value)
# Returns: 0, or 2 with a line on stderr if data is not JSON
# Example: job_checkpoint '{"page": 12}'
#######################################
job_checkpoint() {
  _extjob_json "${1-}" || return 2
  JOB_CHECKPOINT=${_extjob_q}
  if [[ ${_extjob_features} == *' checkpoint '* ]]; then
    _extjob_send checkpoint "\"data\":${_extjob_q}"
  fi
}

#######################################
# Prints the last checkpoint: the one saved in this attempt, else the one of
# an earlier attempt from the payload (CKPT-2).
# Returns: 1 when there is none
# Example: if cp=$(job_checkpoint_get); then page=$(jq .page <<<"$cp"); fi
#######################################
job_checkpoint_get() {
  [[ -n ${JOB_CHECKPOINT} ]] || return 1
  printf '%s\n' "${JOB_CHECKPOINT}"
}

#######################################
# Tells whether the server asked the job to stop (CANCEL-3), or the process
# got SIGTERM while a cancel handler was registered.
# Returns: 0 if a cancel was requested, 1 otherwise
# Example: while ! job_cancel_requested; do work_a_bit; done
#######################################
job_cancel_requested() {
  [[ -e ${_extjob_dir}/cancel ]]
}

#######################################
# Prints why the job was cancelled ("requested", "timeout", "shutdown",
# "signal", ...), or nothing.
#######################################
job_cancel_reason() {
  if job_cancel_requested; then
    printf '%s\n' "$(<"${_extjob_dir}/cancel")"
  fi
}

#######################################
# Registers a function to call once when a cancel is requested (by the
# server, or by SIGTERM). It runs from a trap: bash runs traps between
# commands, so wait in interruptible steps (`sleep 60 & wait $!`). The job
# code decides how to stop; the wrapper never ends the job by itself.
# Arguments: function name
# Example: job_on_cancel on_cancel
#######################################
job_on_cancel() {
  _extjob_cancel_handler=$1
  trap '_extjob_cancel_signal USR1' USR1
  trap '_extjob_cancel_signal TERM' TERM
  _extjob_post H
  if job_cancel_requested; then
    _extjob_cancel_signal USR1
  fi
}

# ------------------------------------------------------------ private: JSON

# _extjob_ctl[i] is the control character i (1..31), built once without
# starting a process.
declare -a _extjob_ctl=()
_extjob_init_ctl() {
  local i hex
  for ((i = 1; i < 32; i++)); do
    printf -v hex '%02x' "${i}"
    printf -v "_extjob_ctl[i]" '%b' "\\x${hex}"
  done
}
_extjob_init_ctl
unset -f _extjob_init_ctl

# The characters that need no escaping and no UTF-8 check: the common case.
_extjob_plain='abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ._,:;/=+()@#%&*?<>~^$|{}-'

# Sets _extjob_q to STRING as a JSON string (FRAME-2, WRAP-3): every control
# character escaped, invalid UTF-8 and lone surrogates replaced by U+FFFD.
# Pure bash up to 8 KiB. A longer ASCII string goes to jq (one process, far
# quicker than bash on megabytes of escapes); a longer non-ASCII one is
# escaped in chunks read from a here-string (bash buffers it), never ending a
# chunk inside a UTF-8 sequence: jq 1.6 -R can split one at its buffer edge.
_extjob_quote() {
  if ((${#1} <= 8192)) && [[ $1 != *[!${_extjob_plain}]* ]]; then
    _extjob_q="\"$1\""
    return 0
  fi
  local LC_ALL=C
  if ((${#1} <= 8192)); then
    _extjob_escape "$1"
    _extjob_q="\"${_extjob_e}\""
    return 0
  fi
  if [[ $1 != *[$'\x80'-$'\xff']* ]]; then
    _extjob_q=$(printf '%s' "$1" | _extjob_tool text)
    return 0
  fi
  local chunk carry='' out='' k c need
  while IFS= read -r -N 8192 chunk || [[ -n ${chunk} ]]; do
    chunk=${carry}${chunk}
    carry=''
    for ((k = 1; k <= 3 && k <= ${#chunk}; k++)); do
      c=${chunk: -k:1}
      [[ ${c} == [$'\x80'-$'\xbf'] ]] && continue
      if [[ ${c} == [$'\xc0'-$'\xff'] ]]; then
        need=2
        [[ ${c} > $'\xdf' ]] && need=3
        [[ ${c} > $'\xef' ]] && need=4
        if ((k < need)); then
          carry=${chunk: -k}
          chunk=${chunk:0:${#chunk}-k}
        fi
      fi
      break
    done
    _extjob_escape "${chunk}"
    out+=${_extjob_e}
  done <<<"$1"
  _extjob_q="\"${out%\\n}\"" # less the newline the here-string added
}

# Sets _extjob_e to the JSON string content (without quotes) of a short
# STRING; the caller has set LC_ALL=C. Text that is not valid UTF-8 is
# repaired by jq, which replaces what is invalid with U+FFFD.
_extjob_escape() {
  local s=$1 t code
  if ! _extjob_utf8_ok "${s}"; then
    _extjob_e=$(printf '%s' "${s}" | _extjob_tool text)
    _extjob_e=${_extjob_e:1:${#_extjob_e}-2}
    return 0
  fi
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  if [[ ${s} == *[$'\x01'-$'\x1f']* ]]; then
    s=${s//$'\n'/\\n}
    s=${s//$'\r'/\\r}
    s=${s//$'\t'/\\t}
    for ((code = 1; code < 32; code++)); do
      [[ ${s} == *"${_extjob_ctl[code]}"* ]] || continue
      printf -v t '\\u%04x' "${code}"
      s=${s//"${_extjob_ctl[code]}"/${t}}
    done
  fi
  _extjob_e=${s}
}

# Tells whether STRING is valid UTF-8 (no lone surrogates, FRAME-2); the
# caller has set LC_ALL=C. Blanks out every valid sequence: a high byte left
# over is invalid.
_extjob_utf8_ok() {
  [[ $1 == *[$'\x80'-$'\xff']* ]] || return 0
  local t
  t=${1//[$'\xf1'-$'\xf3'][$'\x80'-$'\xbf'][$'\x80'-$'\xbf'][$'\x80'-$'\xbf']/x}
  t=${t//$'\xf0'[$'\x90'-$'\xbf'][$'\x80'-$'\xbf'][$'\x80'-$'\xbf']/x}
  t=${t//$'\xf4'[$'\x80'-$'\x8f'][$'\x80'-$'\xbf'][$'\x80'-$'\xbf']/x}
  t=${t//[$'\xe1'-$'\xec'$'\xee'$'\xef'][$'\x80'-$'\xbf'][$'\x80'-$'\xbf']/x}
  t=${t//$'\xe0'[$'\xa0'-$'\xbf'][$'\x80'-$'\xbf']/x}
  t=${t//$'\xed'[$'\x80'-$'\x9f'][$'\x80'-$'\xbf']/x}
  t=${t//[$'\xc2'-$'\xdf'][$'\x80'-$'\xbf']/x}
  [[ ${t} != *[$'\x80'-$'\xff']* ]]
}

# Sets _extjob_q to a text argument as a JSON string: quoted, or, when JSON
# (the -j option) is set, checked by jq.
_extjob_text() {
  if [[ -n $1 ]]; then
    _extjob_json "$2" string
  else
    _extjob_quote "$2"
  fi
}

_extjob_log_at() {
  if [[ ${2:-} == -j ]]; then
    job_log -j "$1" "${@:3}"
  else
    job_log "$@"
  fi
}

# Sets _extjob_q to TEXT as compact JSON (one line); KIND `object` or
# `string` requires that type (MSG-4, MSG-6). Short text is checked in pure
# bash; what that cannot vouch for goes to jq, which also names the problem.
_extjob_json() {
  local text=$1 kind=${2:-value} out
  if ((${#text} <= 4096)) && _extjob_json_compact "${text}" "${kind}"; then
    return 0
  fi
  if ! out=$(printf '%s' "${text}" | _extjob_tool json "${kind}"); then
    local caller
    for caller in "${FUNCNAME[@]}"; do
      [[ ${caller} == job_* ]] && break
    done
    _extjob_err "${caller}: not valid JSON: ${out##*: }"
    return 2
  fi
  _extjob_q=${out}
}

# Sets _extjob_q to TEXT compacted when TEXT is one JSON value of KIND (RFC
# 8259, checked token by token); fails when it is not, or when it holds what
# only jq may judge (invalid UTF-8, \ud800-style escapes).
_extjob_json_compact() {
  local LC_ALL=C
  local rest=$1 kind=$2 out='' tok c open stack='' expect=value
  local re_ws=$'^[ \t\n\r]+'
  local re_str=$'^"([^"\\\\\x01-\x1f]|\\\\["\\\\/bfnrt]|\\\\u[0-9a-fA-F]{4})*"'
  local re_num='^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?'
  local re_lit='^(true|false|null)'
  case ${kind} in
    object) [[ ${rest} =~ ^[[:space:]]*\{ ]] || return 1 ;;
    string) [[ ${rest} =~ ^[[:space:]]*\" ]] || return 1 ;;
  esac
  while :; do
    [[ ${rest} =~ ${re_ws} ]] && rest=${rest:${#BASH_REMATCH[0]}}
    if [[ -z ${rest} ]]; then
      [[ ${expect} == end ]] || return 1
      break
    fi
    c=${rest:0:1}
    case ${c} in
      '{' | '[')
        [[ ${expect} == value || ${expect} == value_or_close ]] || return 1
        stack+=${c}
        tok=${c}
        expect=value_or_close
        [[ ${c} == '{' ]] && expect=key_or_close
        ;;
      '}' | ']')
        open='['
        [[ ${c} == '}' ]] && open='{'
        [[ ${stack: -1} == "${open}" ]] || return 1
        [[ ${expect} == comma_or_close || ${expect} == key_or_close && ${c} == '}' \
          || ${expect} == value_or_close && ${c} == ']' ]] || return 1
        stack=${stack%?}
        tok=${c}
        expect=after_value
        ;;
      :)
        [[ ${expect} == colon ]] || return 1
        tok=:
        expect=value
        ;;
      ,)
        [[ ${expect} == comma_or_close ]] || return 1
        tok=,
        expect=value
        [[ ${stack: -1} == '{' ]] && expect=key
        ;;
      '"')
        [[ ${rest} =~ ${re_str} ]] || return 1
        tok=${BASH_REMATCH[0]}
        case ${expect} in
          key | key_or_close) expect='colon' ;;
          value | value_or_close) expect=after_value ;;
          *) return 1 ;;
        esac
        ;;
      *)
        [[ ${expect} == value || ${expect} == value_or_close ]] || return 1
        [[ ${rest} =~ ${re_num} || ${rest} =~ ${re_lit} ]] || return 1
        tok=${BASH_REMATCH[0]}
        expect=after_value
        ;;
    esac
    if [[ ${expect} == after_value ]]; then
      expect=comma_or_close
      [[ -z ${stack} ]] && expect=end
    fi
    out+=${tok}
    rest=${rest:${#tok}}
  done
  [[ ${out} != *\\[uU][dD][89a-fA-F]* ]] || return 1
  _extjob_utf8_ok "${out}" || return 1
  _extjob_q=${out}
}

# Sets _extjob_size to the bytes of the line a message would take on the
# wire (with the longest timestamp and seq we can produce).
_extjob_line_size() {
  local LC_ALL=C
  local head="{\"type\":\"$1\",\"jobId\":${_extjob_job_json},\"timestamp\":0000000000000,\"seq\":0000000000,}"
  _extjob_size=$((${#head} + ${#2}))
}

# ------------------------------------------------------- private: job shell

# Writes one error line on stderr. In a subshell that ignores SIGPIPE: a
# broken stderr must not kill the job (WRAP-5).
_extjob_err() {
  (
    trap '' PIPE
    printf 'extjob.sh: %s\n' "$*" >&2 2>/dev/null
  )
  return 0
}

# Chooses the helpers from this machine's tools: jq, else python3, for what
# bash cannot do well (_extjob_tool). How to connect is chosen with the
# socket (_extjob_choose_connector).
_extjob_check_tools() {
  if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
    _extjob_err "bash 4.4 or newer is required (this is ${BASH_VERSION})"
    return 1
  fi
  _extjob_jq=''
  command -v jq >/dev/null && _extjob_jq=1
  _extjob_python=$(command -v python3) || _extjob_python=''
  if [[ -z ${_extjob_jq} && -z ${_extjob_python} ]]; then
    _extjob_err "reading the job payload needs python3 or jq, and neither is installed;" \
      "install one (Debian: sudo apt-get install python3)"
    return 1
  fi
}

# Sets _extjob_via to how the agent connects to SOCKET: `python3` (one
# connector process for the job, any socket), else `socat` for a Unix
# socket or `bash` (/dev/tcp) for TCP, both with a jq per connection that
# reads the server's lines. EXTJOB_SH_CONNECTOR=socat picks the latter even
# when python3 is here. Names what is missing, and fails, when neither works.
_extjob_choose_connector() {
  local socket=$1 want=${EXTJOB_SH_CONNECTOR:-}
  if [[ -z ${want} ]]; then
    want=socat
    [[ -n ${_extjob_python} ]] && want=python3
  fi
  case ${want} in
    python3)
      if [[ -z ${_extjob_python} ]]; then
        _extjob_err "EXTJOB_SH_CONNECTOR=python3, but python3 is not installed"
        return 1
      fi
      _extjob_via=python3
      ;;
    socat)
      local tool missing='' needs='socat jq' via=socat
      [[ ${socket} == tcp://* ]] && needs=jq via=bash
      for tool in ${needs}; do
        command -v "${tool}" >/dev/null || missing+=" ${tool}"
      done
      if [[ -n ${missing} ]]; then
        _extjob_err "connecting to ${socket} needs python3, or ${needs// / and }; install" \
          "python3 (Debian: sudo apt-get install python3) or${missing}"
        return 1
      fi
      _extjob_via=${via}
      ;;
    *)
      _extjob_err "EXTJOB_SH_CONNECTOR must be python3 or socat, not '${want}'"
      return 1
      ;;
  esac
}

# Runs one of the few jobs bash cannot do well itself, on stdin, with
# python3 (the program _extjob_py) when it is here, else with jq; but
# job_data_get's filters with jq when it is here (its language). python3
# first: jq 1.6 refuses lone surrogate escapes (FRAME-2), python3 repairs them.
#   text        stdin as a JSON string (invalid UTF-8 becomes U+FFFD)
#   json KIND   stdin as one compact JSON value of KIND (value, object or
#               string), or a line ending in ": PROBLEM" and status 1
#   get FILTER AS  job_data_get: AS raw or json (python3 knows paths and
#               // defaults only)
#   payload     the payload's fields, each ending in a NUL (see below), or
#               one line saying what is wrong
_extjob_tool() {
  if [[ -n ${_extjob_python} && ($1 != get || -z ${_extjob_jq}) ]]; then
    "${_extjob_python}" -I -S -c "${_extjob_py}" "$@"
    return
  fi
  # shellcheck disable=SC2016 # the $-names are jq's
  case $1 in
    text) jq -Rs . ;;
    json)
      jq -cs --arg kind "$2" '
        if length != 1 then error("expected one JSON value, got \(length)")
        elif $kind != "value" and (.[0] | type) != $kind
        then error("expected a JSON \($kind), got \(.[0] | type)")
        else .[0] end' 2>&1
      ;;
    get)
      if [[ $3 == json ]]; then jq -c "$2"; else jq -r "$2"; fi
      ;;
    payload)
      jq -nj '
        def check(f; test; what):
          if has(f) and (.[f] | test | not) then error("payload field \(f) must be \(what)") else . end;
        def int_min(n): type == "number" and . == floor and . >= n;
        (try input catch (if . == "break" or . == "No more inputs" then {} else
           error("payload is not valid JSON: \(.)") end))
        | if type != "object" then error("payload is not a JSON object (got \(type))") else . end
        | check("jobId"; type == "string"; "a string")
        | check("name"; type == "string"; "a string")
        | check("socketPath"; type == "string"; "a string")
        | check("protocolVersion"; . == 1; "1")
        | check("features"; type == "array" and all(.[]; type == "string"); "an array of strings")
        | check("heartbeatIntervalMs"; int_min(10); "an integer >= 10")
        | check("heartbeatTimeoutMs"; int_min(30); "an integer >= 30")
        | check("reconnectWindowMs"; int_min(0); "an integer >= 0")
        | check("maxLineBytes"; int_min(65536); "an integer >= 65536")
        | check("token"; type == "string" and length >= 16 and length <= 256; "a string of 16-256 characters")
        | check("attempt"; int_min(1); "an integer >= 1")
        | check("maxAttempts"; int_min(1); "an integer >= 1")
        | check("spoolPath"; type == "string" and length > 0; "a non-empty string")
        | if has("token") and (has("protocolVersion") and has("features") | not)
          then error("payload has a token but no protocolVersion and features") else . end
        | [.jobId // "", .name // "", .socketPath // "",
           (if has("data") then .data else {} end | tojson),
           (if .checkpoint != null then .checkpoint | tojson else "" end),
           (.features // [] | join(" ")), .token // "",
           (.heartbeatIntervalMs // "" | tostring), (.reconnectWindowMs // 60000 | tostring),
           (.maxLineBytes // 16777216 | tostring), .spoolPath // "",
           (.attempt // 1 | tostring), (.maxAttempts // 1 | tostring)]
        | map(. + "\u0000") | add' 2>&1
      ;;
  esac
}

# Reads the stdin payload with one run of _extjob_tool, falls back to the
# environment (ENV-2) and sets the job's globals. Prints one line and fails
# on a missing or malformed payload (PAY-6) or a missing tool.
_extjob_read_payload() {
  local hb_arg=$1 out
  local -a fields
  mapfile -d '' -t fields < <(_extjob_tool payload)
  if ((${#fields[@]} != 13)); then
    out=${fields[0]:-the payload reader gave no answer}
    out=${out#jq: error (at <unknown>): }
    _extjob_err "bad job payload on stdin (PAY-6): ${out%$'\n'}"
    return 1
  fi
  local p_job=${fields[0]} p_name=${fields[1]} p_socket=${fields[2]} p_data=${fields[3]}
  local p_checkpoint=${fields[4]} p_features=${fields[5]} p_token=${fields[6]} p_hb=${fields[7]}
  local p_window=${fields[8]} p_max_line=${fields[9]} p_spool=${fields[10]}
  local p_attempt=${fields[11]} p_max_attempts=${fields[12]}
  p_job=${p_job:-${EXTJOB_JOB_ID:-${DONKEYLABS_JOB_ID:-}}}
  p_name=${p_name:-${EXTJOB_JOB_NAME:-${DONKEYLABS_JOB_NAME:-}}}
  p_socket=${p_socket:-${EXTJOB_SOCKET_PATH:-${DONKEYLABS_SOCKET_PATH:-}}}
  if [[ -z ${p_socket} && -n ${DONKEYLABS_TCP_PORT:-} ]]; then
    p_socket="tcp://127.0.0.1:${DONKEYLABS_TCP_PORT}"
  fi
  local field
  local var
  for field in p_job:jobId p_name:name p_socket:socketPath; do
    var=${field%%:*}
    if [[ -z ${!var} ]]; then
      _extjob_err "bad job payload on stdin (PAY-6): no ${field#*:} in the payload or the environment"
      return 1
    fi
  done
  if ((${#p_job} > 256)); then
    _extjob_err "bad job payload on stdin (PAY-6): jobId is longer than 256 characters"
    return 1
  fi
  if [[ ${p_socket} == tcp://* ]]; then
    local re='^tcp://(\[([0-9A-Fa-f:.]+)\]|([^]/:[]+)):([0-9]+)$'
    if ! [[ ${p_socket} =~ ${re} ]]; then
      _extjob_err "bad job payload on stdin (TRANS-1): socketPath '${p_socket}' is not tcp://HOST:PORT"
      return 1
    fi
    _extjob_host=${BASH_REMATCH[2]:-${BASH_REMATCH[3]}}
    _extjob_port=${BASH_REMATCH[4]}
  fi
  _extjob_choose_connector "${p_socket}" || return 1
  # shellcheck disable=SC2034 # read by the job code
  declare -g JOB_ID=${p_job} JOB_NAME=${p_name} JOB_DATA=${p_data} \
    JOB_CHECKPOINT=${p_checkpoint} JOB_ATTEMPT=${p_attempt} JOB_MAX_ATTEMPTS=${p_max_attempts}
  _extjob_socket=${p_socket}
  _extjob_quote "${p_job}"
  _extjob_job_json=${_extjob_q}
  _extjob_quote "${p_token}"
  _extjob_token_json=${_extjob_q}
  _extjob_max_line=${p_max_line}
  _extjob_window=${p_window}
  _extjob_spool_path=${p_spool}
  _extjob_hb=${p_hb:-$((${hb_arg:-5} * 1000))}
  # NEG-2: use what is offered and implemented; everything needs auth's hello.
  _extjob_features=' '
  if [[ " ${p_features} " == *' auth '* && -n ${p_token} ]]; then
    for field in ${p_features}; do
      case ${field} in
        auth | replay | control | spool | checkpoint) _extjob_features+="${field} " ;;
      esac
    done
  fi
  # A spool file is applied by seq: spool needs replay (NEG-2).
  [[ ${_extjob_features} == *' replay '* ]] || _extjob_features=${_extjob_features/ spool / }
}

# Starts the connection agent and opens the channel to it: messages are
# appended to the regular file `queue` (bash reads a file in blocks, a pipe
# byte by byte), and one byte on the FIFO `wake` tells the agent to look.
_extjob_start_agent() {
  _extjob_dir=$(mktemp -d "${TMPDIR:-/tmp}/extjob.XXXXXX") || return 1
  mkfifo -m 600 "${_extjob_dir}/wake" "${_extjob_dir}/done" || return 1
  : >"${_extjob_dir}/queue" || return 1
  _extjob_done=''
  _extjob_bodies=0
  _extjob_posted=0
  _extjob_settled=0
  _extjob_cancel_handler=''
  _extjob_cancel_calls=0
  _extjob_outcome=''
  _extjob_shell=${BASHPID}
  exec {_extjob_fd}>>"${_extjob_dir}/queue"
  # Started twice removed, so that a plain `wait` in the job script does not
  # wait for the agent too.
  ( (_extjob_agent) </dev/null >/dev/null & )
  # Both opens block until the agent has its ends open (it holds `done` for
  # writing until it exits).
  exec {_extjob_wake_fd}>"${_extjob_dir}/wake"
  exec {_extjob_done_fd}<"${_extjob_dir}/done"
  # Keep an EXIT trap set before us: `trap -p` prints it shell-quoted.
  local previous
  previous=$(trap -p EXIT)
  previous=${previous#trap -- }
  eval "previous=${previous% EXIT}"
  # shellcheck disable=SC2064 # the earlier trap is meant to be expanded now
  trap "_extjob_on_exit \$?${previous:+; ${previous}}" EXIT
}

# RECONNECT-6: the job code runs once the first connection is up. The agent
# says `up`, or gives up once reconnectWindowMs has passed without it (and
# says why, in one line on stderr).
_extjob_wait_up() {
  local said=''
  read -r -u "${_extjob_done_fd}" said
  [[ ${said} == up ]] && return 0
  _extjob_done=never-up # nothing was sent: the EXIT trap has nothing to do
  return 1
}

# Hands a message to the agent (LIMIT-1: never one the server would refuse).
# A queue line stays under 4 KiB, so that it is appended with one write and
# lines from background subshells never interleave (WRAP-4); a larger body
# goes in a file of its own, which the agent sends with cat, unread.
_extjob_send() {
  local type=$1 body=$2 size file
  [[ -z ${_extjob_done} ]] || return 0 # LIFE-4: nothing after the terminal
  if ((${#body} <= 1000)) || { ((${#body} <= 4000)) && _extjob_bytes_at_most "${body}" 4000; }; then
    _extjob_wait_room
    _extjob_post M "${type} ${body}"
    return 0
  fi
  _extjob_line_size "${type}" "${body}"
  size=${_extjob_size}
  if ((size > _extjob_max_line)); then
    _extjob_err "${type} message of ${size} bytes is larger than maxLineBytes ${_extjob_max_line} (LIMIT-1)"
    return 2
  fi
  file=${_extjob_dir}/body.${BASHPID}.$((++_extjob_bodies))
  printf '%s' "${body}" >"${file}"
  _extjob_wait_room
  _extjob_post B "${type} ${size} ${file}"
}

# REPLAY-6 back-pressure: at most 10,000 of this shell's messages wait in
# the agent for an acknowledgement; beyond that the job code waits. (While
# disconnected, the agent drops the oldest logs once it holds 10,000, so
# the job code goes on.)
_extjob_wait_room() {
  ((++_extjob_posted - _extjob_settled <= 10000)) && return 0
  while :; do
    { read -r _extjob_settled <"${_extjob_dir}/settled"; } 2>/dev/null || true
    ((_extjob_posted - ${_extjob_settled:-0} <= 10000)) && return 0
    # A sleep without a process, which ends early if the agent ends.
    ! read -r -t 0.05 -u "${_extjob_done_fd}" _ || return 0
  done
}

# Tells whether STRING is at most N bytes long.
_extjob_bytes_at_most() {
  local LC_ALL=C
  ((${#1} <= $2))
}

# Appends one line to the agent's queue and wakes it up.
_extjob_post() {
  printf '%s %s\n' "$1" "${2-}" >&"${_extjob_fd}"
  printf '\n' >&"${_extjob_wake_fd}"
}

# Sends a terminal message, waits for the agent to deliver it and exits.
# A terminal call made from a trap (a cancel handler) while another is under
# way sends nothing more, or a duplicate the agent drops (LIFE-4): either
# way it waits for the first, and the exit status follows the terminal
# message the agent took (EXIT-2), whichever call sent it.
# (No bare `return` on this path: in an EXIT trap it would return the
# status the script died with.)
_extjob_terminal() {
  local type=$1 status=$2 body=$3
  set +o errexit +o errtrace # the shell ends here; nothing may stop that
  trap - ERR
  _extjob_send "${type}" "${body}"
  _extjob_done=${_extjob_done:-${type}}
  _extjob_finish
  case ${_extjob_outcome} in
    completed) exit 0 ;;
    failed) exit 1 ;;
  esac
  exit "${status}"
}

# Closes the pipe to the agent and waits until it has delivered (or spooled)
# everything (EXIT-3); sets _extjob_outcome to the terminal message it took.
# Safe to call again from a trap that interrupts it (closing twice is fine).
_extjob_finish() {
  exec {_extjob_fd}>&- {_extjob_wake_fd}>&-
  read -r -u "${_extjob_done_fd}" _extjob_outcome 2>/dev/null || true
  exec {_extjob_done_fd}<&-
  return 0
}

# The EXIT trap. Bash keeps it in the child it forks for a background
# command until that child execs, and runs it there if the child is killed
# first (`sleep "$(...)" &` then `kill $!`): such a child must not end the job.
_extjob_on_exit() {
  local status=$1
  [[ -z ${_extjob_done} && ${BASHPID} == "${_extjob_shell}" ]] || return 0
  set +o errexit +o errtrace
  trap - ERR
  if [[ -n ${_extjob_handler:-} && ${status} != 0 ]]; then
    # `exit` or `set -e` inside job_run's handler: fail the job (WRAP-2).
    local handler=${_extjob_handler}
    _extjob_handler=''
    job_fail "${handler} exited with status ${status}${_extjob_stack:+: ${_extjob_failed_command}}" \
      "${_extjob_stack:-at ${handler}}"
  fi
  _extjob_done='exit'
  _extjob_post X "${status}"
  _extjob_finish
}

# ERR trap of job_run: remembers the failing command and the call stack. A
# function returning the status of its failed command fires the trap again
# one level up; that keeps the deeper record.
_extjob_record_error() {
  local status=$1 i depth=${#FUNCNAME[@]}
  if ((depth < _extjob_err_depth && status == _extjob_err_status)); then
    _extjob_err_depth=${depth}
    return 0
  fi
  _extjob_err_depth=${depth}
  _extjob_err_status=${status}
  _extjob_failed_command="${BASH_COMMAND} (status ${status})"
  _extjob_stack="${BASH_COMMAND}"
  for ((i = 1; i < ${#FUNCNAME[@]}; i++)); do
    [[ ${FUNCNAME[i]} == job_run ]] && break
    _extjob_stack+=$'\n'"  at ${FUNCNAME[i]} (${BASH_SOURCE[i]}:${BASH_LINENO[i - 1]})"
  done
}

_extjob_cancel_signal() {
  if [[ $1 == TERM && ! -e ${_extjob_dir}/cancel ]]; then
    printf 'signal\n' >"${_extjob_dir}/cancel"
  fi
  # One command that counts and tests: a trap between the two cannot run
  # the handler a second time.
  if [[ -n ${_extjob_cancel_handler} ]] && ((++_extjob_cancel_calls == 1)); then
    "${_extjob_cancel_handler}"
  fi
}

# ------------------------------------------------ private: connection agent

# The agent's state lives in its own process (names _a_*). The outbox keeps
# each message until it is acknowledged (replay) or written (without): its
# type, its body (the fields after the envelope; a large one stays in a file
# and goes out through cat, as bash copies long strings slowly), its size
# and, with replay, its head (the envelope with seq), stamped when queued so
# that a replay is identical (REPLAY-4). Without replay the head is stamped
# when written, so that timestamps never decrease on the wire (TIME-1).
#
# Inputs: the job shell appends its messages to the file `queue` and wakes
# the agent with a byte on the FIFO `wake`; each connection's reader appends
# what the server says to the file `server` (python3's connector wakes the
# agent too, without ever blocking on it). The agent drains both files on
# every turn of its loop, and turns at least every second (100 ms with
# socat or /dev/tcp, whose readers do not wake it): `read -t` on the
# FIFO is its only way to wait. A reader never blocks on the agent: the
# agent may be blocked writing to a server that does not read, and that
# server may be waiting for us to read its acks (CTRL-6).
_extjob_agent() {
  set +o errexit +o nounset +o pipefail +o errtrace
  trap - ERR EXIT USR1
  trap '' PIPE INT
  trap ':' TERM HUP # outlive the group's SIGTERM long enough to deliver
  export LC_ALL=C
  local _a_wake _a_done _a_queue _a_srv _a_queue_partial='' _a_srv_partial=''
  exec {_a_wake}<>"${_extjob_dir}/wake"
  exec {_a_queue}<"${_extjob_dir}/queue"
  : >"${_extjob_dir}/server"
  exec {_a_srv}<"${_extjob_dir}/server"
  exec {_a_done}>"${_extjob_dir}/done"
  local -a _a_ob=() _a_type=() _a_head=() _a_file=() _a_size=()
  local _a_id=0 _a_first=1 _a_sent=0 _a_bytes=0 _a_count=0 _a_dropped=0
  local _a_conn=0 _a_state=down _a_sock='' _a_pid='' _a_retry_at=0 _a_backoff=100
  local _a_hb=${_extjob_hb} _a_hb_at=0 _a_answer_at=0 _a_last_progress=0
  local _a_started='' _a_ended='' _a_refused='' _a_cancel_cb='' _a_failed=''
  local _a_taken=0 _a_settled=0 _a_poll=100 _a_ever_up=''
  [[ ${_extjob_via} == python3 ]] && _a_poll=1000
  local _a_replay='' _a_ext='' _a_now=0 _a_ts=0 _a_last_ts=0 _a_line _a_t _a_down_since
  [[ ${_extjob_features} == *' auth '* ]] && _a_ext=1
  [[ ${_extjob_features} == *' replay '* ]] && _a_replay=1
  _extjob_now
  _a_down_since=${_a_now}
  _extjob_a_connect
  while :; do
    _extjob_a_drain "${_a_queue}" _a_queue_partial
    _extjob_a_drain "${_a_srv}" _a_srv_partial
    _extjob_a_flush
    _extjob_a_timers
    _extjob_a_should_exit && break
    _extjob_a_wait_time
    # Byte by byte, as bash reads a pipe. (Not with -N: bash then buffers the
    # pipe in the buffer its file reads share, and rewinds the queue file.)
    read -r -t "${_a_t}" -u "${_a_wake}" _a_line
  done
  _extjob_a_disconnect graceful
  rm -rf "${_extjob_dir}"
  printf '%s\n' "${_a_ended}" >&"${_a_done}" # completed, failed, exit, gone or never-up
}

# Sets _a_now to the wall clock in milliseconds.
_extjob_now() {
  local t=${EPOCHREALTIME//[!0-9]/}
  if [[ -n ${t} ]]; then
    _a_now=$((10#${t} / 1000))
  else # bash 4.4: whole seconds
    printf -v t '%(%s)T' -1
    _a_now=$((t * 1000))
  fi
}

# Sets _a_ts to the timestamp of a message: never decreasing (TIME-1).
_extjob_a_stamp() {
  ((_a_now > _a_last_ts)) && _a_last_ts=${_a_now}
  _a_ts=${_a_last_ts}
}

# Sets _a_t to the seconds until the nearest deadline (for read -t).
_extjob_a_wait_time() {
  # Poll that the job shell lives, and the events of a connector that does
  # not wake us (socat's and /dev/tcp's readers): idle agents of many jobs
  # must cost next to nothing.
  local next=$((_a_now + _a_poll))
  if [[ ${_a_state} == down && -z ${_a_refused} ]] && ((_a_retry_at < next)); then
    next=${_a_retry_at}
  fi
  ((_a_hb_at && _a_hb_at < next)) && next=${_a_hb_at}
  ((_a_answer_at && _a_answer_at < next)) && next=${_a_answer_at}
  if [[ (-n ${_a_ended} || -z ${_a_ever_up}) && ${_a_state} != up ]] \
    && ((_a_down_since + _extjob_window < next)); then
    next=$((_a_down_since + _extjob_window))
  fi
  local ms=$((next - _a_now))
  ((ms < 1)) && ms=1
  printf -v _a_t '%d.%03d' $((ms / 1000)) $((ms % 1000))
}

_extjob_a_timers() {
  _extjob_now
  if [[ ${_a_state} == down && -z ${_a_refused} ]] && ((_a_now >= _a_retry_at)); then
    _extjob_a_connect
  fi
  # REPLAY-3: once the job has ended, what is outstanding must be
  # acknowledged in time (and AUTH-2's welcome must come), else the
  # connection counts as failed.
  if [[ ${_a_state} == up && -n ${_a_ended} && -n ${_a_replay} ]] && ((_a_count && !_a_answer_at)); then
    ((_a_answer_at = _a_now + (_a_hb > 2000 ? _a_hb : 2000)))
  fi
  if ((_a_answer_at && _a_now >= _a_answer_at)); then
    _extjob_a_lost timeout
  fi
  # HB-2: from `started` to the terminal message, whatever the job does,
  # on one clock across connections: a heartbeat due while the connection
  # is down is dropped (never buffered) and the next is due on time, so a
  # reconnect does not stretch the gap by the handshake and an interval.
  if [[ -n ${_a_started} && -z ${_a_ended} ]]; then
    if ((_a_hb_at == 0)); then
      _a_hb_at=$((_a_now + _a_hb))
    elif ((_a_now >= _a_hb_at)); then
      if [[ ${_a_state} != up ]]; then
        _a_hb_at=$((_a_now + _a_hb))
      else
        _extjob_a_stamp
        _extjob_a_write "{\"type\":\"heartbeat\",\"jobId\":${_extjob_job_json},\"timestamp\":${_a_ts}}" \
          && _a_hb_at=$((_a_now + _a_hb))
      fi
    fi
  else
    _a_hb_at=0
  fi
  # bash's /dev/tcp: the decoder ends at EOF (the other connectors say E).
  if [[ ${_a_state} != down && ${_extjob_via} == bash ]] && ! kill -0 "${_a_pid}" 2>/dev/null; then
    _extjob_a_lost
  fi
  if [[ -z ${_a_ended} ]] && ! kill -0 "$$" 2>/dev/null; then
    _a_ended=gone # the job shell died without a word (SIGKILL)
  fi
  # Tell the job shell how many of its messages are settled (delivered or
  # dropped), for its back-pressure.
  if ((_a_taken - _a_count != _a_settled)); then
    _a_settled=$((_a_taken - _a_count))
    printf '%s\n' "${_a_settled}" >"${_extjob_dir}/settled"
  fi
}

_extjob_a_should_exit() {
  if [[ -z ${_a_ever_up} ]]; then # RECONNECT-6
    ((_a_now - _a_down_since >= _extjob_window)) || return 1
    [[ -n ${_a_refused} ]] || printf 'extjob.sh: %s: no connection within reconnectWindowMs (%s ms); the job code did not run (RECONNECT-6)\n' \
      "${_extjob_socket}" "${_extjob_window}" >&2 # a refusal has said so (AUTH-4)
    _a_ended=never-up
    return 0
  fi
  [[ -n ${_a_ended} ]] || return 1
  if [[ ${_a_state} == up ]]; then
    # Delivered: acknowledged with replay, written without (EXIT-3).
    if [[ -n ${_a_replay} ]]; then ((_a_count == 0)); else ((_a_sent >= _a_id)); fi
    return
  fi
  [[ -n ${_a_refused} ]] && return 0
  ((_a_now - _a_down_since >= _extjob_window)) || return 1
  _extjob_a_give_up
  return 0
}

# RECONNECT-3: the server stayed away past the window. SPOOL-2: write the
# hello and every unacknowledged message to a temporary file, flush, rename.
_extjob_a_give_up() {
  if [[ ${_extjob_features} != *' spool '* || -z ${_extjob_spool_path} ]]; then
    ((_a_count)) && printf 'extjob.sh: server unreachable for %s ms: %s messages not delivered\n' \
      "${_extjob_window}" "${_a_count}" >&2
    return 0
  fi
  local tmp=${_extjob_spool_path}.tmp i hello
  _extjob_a_hello
  hello=${_a_line}
  if (
    umask 077
    {
      printf '%s\n' "${hello}"
      for ((i = _a_first; i <= _a_id; i++)); do
        [[ -n ${_a_ob[i]+x} ]] || continue
        _extjob_a_emit "${i}"
      done
    } >"${tmp}"
  ) && { sync "${tmp}" 2>/dev/null || sync; } && mv -f "${tmp}" "${_extjob_spool_path}"; then
    return 0
  fi
  printf 'extjob.sh: could not write the spool file %s\n' "${_extjob_spool_path}" >&2
}

# Sets _a_line to this connection's hello (AUTH-2).
_extjob_a_hello() {
  local features=${_extjob_features# }
  features=${features% }
  _extjob_a_stamp
  _a_line="{\"type\":\"hello\",\"jobId\":${_extjob_job_json},\"timestamp\":${_a_ts}"
  _a_line+=",\"token\":${_extjob_token_json},\"protocolVersion\":1"
  _a_line+=",\"features\":[\"${features// /\",\"}\"],\"pid\":$$}"
}

# Handles the lines appended to a file (FD) since last time; PARTIAL names
# the variable that keeps a line still being written.
_extjob_a_drain() {
  local -n partial=$2
  local line
  while IFS= read -r -u "$1" line; do
    _extjob_a_event "${partial}${line}"
    partial=''
  done
  partial+=${line}
}

# Handles one line: a message from the job shell, or an event from a
# connection's reader (events of an earlier connection are ignored).
_extjob_a_event() {
  local line=$1 kind rest conn type size file
  kind=${line%% *}
  rest=${line#* }
  case ${kind} in
    M)
      ((++_a_taken))
      _extjob_a_enqueue "${rest%% *}" "${rest#* }"
      ;;
    B) # type size file
      ((++_a_taken))
      read -r type size file <<<"${rest}"
      _extjob_a_enqueue "${type}" '' "${file}" "${size}"
      ;;
    X) [[ -n ${_a_ended} ]] || _a_ended='exit' ;;
    H) # a cancel taken before this still reaches the handler
      _a_cancel_cb=1
      [[ -e ${_extjob_dir}/cancel ]] && kill -USR1 "$$" 2>/dev/null
      ;;
    C | E | W | A | K | R)
      conn=${rest%% *}
      ((conn == _a_conn)) || return 0
      rest=${rest#* }
      case ${kind} in
        C) _extjob_a_connected ;;
        E) _extjob_a_lost ;;
        W) _extjob_a_welcome "${rest% *}" "${rest#* }" ;;
        A) _extjob_a_ack "${rest}" ;;
        K) _extjob_a_cancel "${rest}" ;;
        R)
          [[ ${rest} == auth ]] || return 0
          # AUTH-4: this attempt is fenced off; stop and tell the job code.
          printf 'extjob.sh: the server refused this worker (AUTH-4); not reconnecting\n' >&2
          _a_refused=1
          _extjob_a_cancel auth
          _extjob_a_lost
          ;;
      esac
      ;;
  esac
}

# Numbers, stamps and queues a message (BODY, or the body in FILE of SIZE
# bytes), then sends what can be sent.
_extjob_a_enqueue() {
  local type=$1 body=$2 file=${3:-} size=${4:-${#2}}
  [[ -z ${_a_ended} ]] || return 0 # LIFE-4
  _extjob_now
  # REPLAY-6: coalesce while away, once a connection has failed (not while
  # the first one is being set up).
  if [[ ${type} == progress && ${_a_state} != up && -n ${_a_failed} ]] \
    && ((_a_last_progress > _a_sent)); then
    _extjob_a_remove "${_a_last_progress}"
  fi
  ((++_a_id))
  _a_type[_a_id]=${type}
  _a_ob[_a_id]=${body}
  _a_file[_a_id]=${file}
  _a_size[_a_id]=${size}
  _a_head[_a_id]=''
  if [[ -n ${_a_replay} ]]; then
    _extjob_a_stamp
    _a_head[_a_id]="{\"type\":\"${type}\",\"jobId\":${_extjob_job_json},\"timestamp\":${_a_ts},\"seq\":${_a_id}"
  fi
  ((++_a_count, _a_bytes += size))
  case ${type} in
    started) _a_started=1 ;;
    progress) _a_last_progress=${_a_id} ;;
    completed | failed) _a_ended=${type} ;;
  esac
  # REPLAY-6: while away after a connection has failed, drop the oldest
  # logs. While connected, and while the first connection is being set up
  # (before its welcome, however slow), the job shell holds back instead
  # (_extjob_wait_room): nothing is dropped that a server could still take.
  if [[ ${_a_state} != up && -n ${_a_failed} ]] && ((_a_count >= 10000 || _a_bytes >= 16777216)); then
    _extjob_a_trim
  fi
}

# Writes queued message ID as one line on stdout.
_extjob_a_emit() {
  local id=$1 head=${_a_head[$1]}
  if [[ -z ${head} ]]; then
    _extjob_a_stamp
    head="{\"type\":\"${_a_type[id]}\",\"jobId\":${_extjob_job_json},\"timestamp\":${_a_ts}"
  fi
  if [[ -n ${_a_file[id]} ]]; then
    printf '%s,' "${head}" && cat "${_a_file[id]}" && printf '}\n'
  else
    printf '%s%s}\n' "${head}" "${_a_ob[id]:+,${_a_ob[id]}}"
  fi
}

_extjob_a_remove() {
  local id=$1
  [[ -n ${_a_ob[id]+x} ]] || return 0
  ((--_a_count, _a_bytes -= _a_size[id]))
  unset '_a_ob[id]' '_a_type[id]' '_a_head[id]' '_a_file[id]' '_a_size[id]'
}

# REPLAY-6: the buffer is full. Drop the oldest logs (never started,
# checkpoint or a terminal message) and say so at level warn.
_extjob_a_trim() {
  local i dropped=0
  for ((i = _a_first; i <= _a_id && (_a_count > 9000 || _a_bytes > 15000000); i++)); do
    if [[ ${_a_type[i]:-} == log ]]; then
      _extjob_a_remove "${i}"
      ((++dropped))
    fi
  done
  ((dropped)) || return 0
  ((_a_dropped += dropped))
  _extjob_a_enqueue log "\"level\":\"warn\",\"message\":\"extjob: buffer full, dropped ${dropped} log messages (REPLAY-6)\",\"data\":{\"dropped\":${_a_dropped}}"
}

# Writes, in order, every queued message not yet written on this connection.
# (One redirection for the lot: it costs more than a short line.)
_extjob_a_flush() {
  [[ ${_a_state} == up ]] && ((_a_sent < _a_id)) || return 0
  local i ok=1
  {
    for ((i = _a_sent + 1; i <= _a_id; i++)); do
      if [[ -n ${_a_ob[i]+x} ]]; then
        _extjob_a_emit "${i}" || {
          ok=''
          break
        }
        [[ -n ${_a_replay} ]] || _extjob_a_remove "${i}"
      fi
      _a_sent=${i}
    done
  } 2>/dev/null 1>&"${_a_sock}"
  [[ -n ${ok} ]] || _extjob_a_lost # RECONNECT-2
}

# Writes one line; a failed write is a lost connection (RECONNECT-2).
_extjob_a_write() {
  if printf '%s\n' "$1" 2>/dev/null 1>&"${_a_sock}"; then
    return 0
  fi
  _extjob_a_lost
  return 1
}

# Opens connection _a_conn, by the connector chosen in job_init
# (_extjob_via). python3: one connector process for the whole job, told on
# its stdin (lines starting with \x01, which JSON lines never do) to
# connect; it answers C or E and decodes what the server says. socat: one
# per connection, with a jq that decodes. bash: /dev/tcp, with a jq.
_extjob_a_connect() {
  ((++_a_conn))
  _a_state=connecting
  case ${_extjob_via} in
    python3)
      if [[ -z ${_a_pid} ]] || ! kill -0 "${_a_pid}" 2>/dev/null; then
        [[ -n ${_a_sock} ]] && exec {_a_sock}>&-
        exec {_a_sock}> >(exec "${_extjob_python}" -I -S -c "${_extjob_py}" connect \
          "${_extjob_socket}" "${_extjob_dir}/wake" >>"${_extjob_dir}/server" 2>/dev/null)
        _a_pid=$!
      fi
      printf '\001connect %s\n' "${_a_conn}" 2>/dev/null 1>&"${_a_sock}" || _extjob_a_lost
      ;;
    bash)
      if exec {_a_sock}<>"/dev/tcp/${_extjob_host}/${_extjob_port}"; then
        # $! is jq itself: the agent stops it, and notices when it ends (EOF).
        _extjob_decode "${_a_conn}" <&"${_a_sock}" >>"${_extjob_dir}/server" &
        _a_pid=$!
        _extjob_a_connected
      else
        _a_sock=''
        _extjob_a_lost
      fi 2>/dev/null
      ;;
    socat)
      exec {_a_sock}> >(exec socat -d -d -t 0.05 STDIO "UNIX-CONNECT:${_extjob_socket}" \
        > >(_extjob_reader "${_a_conn}" >>"${_extjob_dir}/server") \
        2> >(_extjob_socat_notices "${_a_conn}" >>"${_extjob_dir}/server"))
      _a_pid=$!
      ;;
  esac
}

# The transport is up: an extended worker says hello and waits for welcome
# (AUTH-2); a v1 worker sends `started` again (LIFE-3) and what is queued.
_extjob_a_connected() {
  [[ ${_a_state} == connecting ]] || return 0
  _extjob_now
  _a_sent=$((_a_first - 1))
  if [[ -n ${_a_ext} ]]; then
    _a_state=hello
    _extjob_a_hello
    _extjob_a_write "${_a_line}" || return 0
    ((_a_answer_at = _a_now + (_a_hb > 2000 ? _a_hb : 2000)))
    return 0
  fi
  _extjob_a_up
  if [[ -n ${_a_started} && -z ${_a_ob[1]+x} ]]; then
    _extjob_a_stamp
    _extjob_a_write "{\"type\":\"started\",\"jobId\":${_extjob_job_json},\"timestamp\":${_a_ts}}" \
      || return 0
  fi
  _extjob_a_flush
}

# The connection is up (for the first time: the job code may run now).
_extjob_a_up() {
  _a_state=up
  _a_backoff=100
  [[ -n ${_a_ever_up} ]] && return 0
  _a_ever_up=1
  printf 'up\n' >&"${_a_done}"
}

_extjob_a_welcome() {
  local last_seq=${1:-0} hb=${2:-0}
  [[ ${_a_state} == hello ]] || return 0
  _extjob_now
  _extjob_a_up
  _a_answer_at=0
  ((hb >= 10)) && _a_hb=${hb}
  _extjob_a_ack "${last_seq}"
  # REPLAY-4: resend what lastSeq does not cover, in order, before anything new.
  _a_sent=$((_a_first - 1))
  _extjob_a_flush
}

# Acknowledgements are cumulative (REPLAY-2).
_extjob_a_ack() {
  local seq=$1 i
  [[ -n ${_a_replay} ]] || return 0
  ((seq > _a_id)) && seq=${_a_id}
  for ((i = _a_first; i <= seq; i++)); do
    _extjob_a_remove "${i}"
  done
  if ((seq >= _a_first)); then
    _a_first=$((seq + 1))
    _a_answer_at=0 # progress: the next deadline counts from now
  fi
  return 0
}

# CANCEL-3: a flag file to poll, and USR1 for a registered callback.
_extjob_a_cancel() {
  local tmp=${_extjob_dir}/cancel.tmp
  [[ -e ${_extjob_dir}/cancel ]] && return 0
  printf '%s\n' "$1" >"${tmp}" && mv -f "${tmp}" "${_extjob_dir}/cancel"
  [[ -n ${_a_cancel_cb} ]] && kill -USR1 "$$" 2>/dev/null
  return 0
}

# The connection failed or closed: drop it, retry later (RECONNECT-1).
# After a `timeout` (no answer in time) it never really was up: the time
# counted towards the reconnect window (RECONNECT-3) goes on.
_extjob_a_lost() {
  _extjob_a_disconnect
  _extjob_now
  [[ ${_a_state} == up && ${1:-} != timeout ]] && _a_down_since=${_a_now}
  _a_state=down
  _a_failed=1
  _a_answer_at=0
  _a_retry_at=$((_a_now + _a_backoff + RANDOM % (_a_backoff / 5 + 1)))
  _a_backoff=$((_a_backoff * 2 > 2000 ? 2000 : _a_backoff * 2))
}

# Closes the connection; `graceful` lets the connector deliver what we
# wrote (python3's ends when its stdin does; it keeps the job's other
# connections).
_extjob_a_disconnect() {
  ((++_a_conn)) # the old connection's events are stale from now on
  if [[ ${_extjob_via} == python3 && ${1:-} != graceful ]]; then
    [[ -n ${_a_sock} ]] && printf '\001close\n' 2>/dev/null 1>&"${_a_sock}"
    return 0
  fi
  if [[ -n ${_a_sock} ]]; then
    exec {_a_sock}>&-
    _a_sock=''
  fi
  if [[ -n ${_a_pid} ]]; then
    case ${_extjob_via} in
      bash) kill -TERM "${_a_pid}" 2>/dev/null ;; # jq, which holds the socket too
      socat) [[ ${1:-} == graceful ]] || kill -KILL "${_a_pid}" 2>/dev/null ;; # its reader sees EOF
    esac
    wait "${_a_pid}" 2>/dev/null # written means on the socket (EXIT-3 for v1)
    _a_pid=''
  fi
}

# Per connection: turns the server's lines (stdin) into the agent's short
# events (stdout). One jq for the whole connection parses them (CTRL-6:
# unknown types, unknown fields and broken lines are skipped; LIMIT-3: long
# lines are read in jq's time, not bash's). It execs: run it in a subshell.
_extjob_decode() {
  # shellcheck disable=SC2016 # $conn is jq's
  exec jq -R --unbuffered -r --arg conn "$1" '
    def word: if type == "string" and test("^[A-Za-z0-9_-]{1,64}$") then . else null end;
    def count: if type == "number" and . >= 0 then floor else 0 end;
    fromjson? | objects
    | if .type == "ack" then "A \($conn) \(.seq | count)"
      elif .type == "welcome"
      then "W \($conn) \(.lastSeq | count) \(.heartbeatIntervalMs | count)"
      elif .type == "cancel" then "K \($conn) \(.reason | word // "requested")"
      elif .type == "error" then "R \($conn) \(.code | word // "unknown")"
      else empty end' 2>/dev/null
}

# The Unix connection's reader: events until socat closes, then E.
_extjob_reader() {
  (_extjob_decode "$1")
  printf 'E %s\n' "$1"
}

# socat -d -d says when it has connected; that is the C event.
_extjob_socat_notices() {
  local line
  while IFS= read -r line; do
    [[ ${line} == *' starting data transfer loop'* ]] && printf 'C %s\n' "$1"
  done
}

# ------------------------------------------------- private: python3 helper

# What the wrapper runs with `python3 -I -S -c`: the connector (mode
# `connect ADDRESS WAKE`, see _extjob_a_connect), and what jq does when jq is
# missing (modes payload, text, json KIND, get FILTER AS; see _extjob_tool).
# Standard library only, Python 3.6+; no single quote in it.
_extjob_py='
import json, os, re, signal, socket, sys, threading

NAMES = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null", int: "number", float: "number"}
SURROGATE = re.compile("[\ud800-\udfff]")


def bad_constant(name):
    raise ValueError("invalid literal " + name)


def load(text):
    return json.loads(text, parse_constant=bad_constant)


def dump(value):
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return SURROGATE.sub("\ufffd", text)  # FRAME-2: no lone surrogates


def read_text():
    return sys.stdin.buffer.read().decode("utf-8", "replace")


def out(text):
    sys.stdout.buffer.write(text.encode("utf-8"))


def whole(value):
    return type(value) in (int, float) and value == int(value)


def payload():
    text = read_text()
    try:
        p = load(text) if text.strip() else {}
    except ValueError as e:
        out("payload is not valid JSON: %s" % e)
        return 1
    if type(p) is not dict:
        out("payload is not a JSON object (got %s)" % NAMES[type(p)])
        return 1
    checks = (
        ("jobId", lambda v: type(v) is str, "a string"),
        ("name", lambda v: type(v) is str, "a string"),
        ("socketPath", lambda v: type(v) is str, "a string"),
        ("protocolVersion", lambda v: whole(v) and v == 1, "1"),
        ("features", lambda v: type(v) is list and all(type(f) is str for f in v), "an array of strings"),
        ("heartbeatIntervalMs", lambda v: whole(v) and v >= 10, "an integer >= 10"),
        ("heartbeatTimeoutMs", lambda v: whole(v) and v >= 30, "an integer >= 30"),
        ("reconnectWindowMs", lambda v: whole(v) and v >= 0, "an integer >= 0"),
        ("maxLineBytes", lambda v: whole(v) and v >= 65536, "an integer >= 65536"),
        ("token", lambda v: type(v) is str and 16 <= len(v) <= 256, "a string of 16-256 characters"),
        ("attempt", lambda v: whole(v) and v >= 1, "an integer >= 1"),
        ("maxAttempts", lambda v: whole(v) and v >= 1, "an integer >= 1"),
        ("spoolPath", lambda v: type(v) is str and len(v) > 0, "a non-empty string"),
    )
    for field, test, what in checks:
        if field in p and not test(p[field]):
            out("payload field %s must be %s" % (field, what))
            return 1
    if "token" in p and not ("protocolVersion" in p and "features" in p):
        out("payload has a token but no protocolVersion and features")
        return 1

    def number(field, default):
        return str(int(p[field])) if field in p else default

    fields = [
        p.get("jobId", ""), p.get("name", ""), p.get("socketPath", ""),
        dump(p.get("data", {})), dump(p["checkpoint"]) if p.get("checkpoint") is not None else "",
        " ".join(p.get("features", [])), p.get("token", ""),
        number("heartbeatIntervalMs", ""), number("reconnectWindowMs", "60000"),
        number("maxLineBytes", "16777216"), p.get("spoolPath", ""),
        number("attempt", "1"), number("maxAttempts", "1"),
    ]
    out("".join(SURROGATE.sub("\ufffd", f).replace("\0", "\ufffd") + "\0" for f in fields))
    return 0


def text():
    out(dump(read_text()))
    return 0


def value(kind):
    try:
        v = load(read_text())
    except ValueError as e:
        out("error: %s" % e)
        return 1
    if kind != "value" and NAMES[type(v)] != kind:
        out("error: expected a JSON %s, got %s" % (kind, NAMES[type(v)]))
        return 1
    out(dump(v))
    return 0


STEP = re.compile(r"\s*(?:\.?\[(\d+)\]|\.([A-Za-z_][A-Za-z0-9_]*)|\.(\"(?:[^\"\\]|\\.)*\"))")


def path(expr, data):
    expr = expr.strip()
    if expr == ".":
        return data
    if not expr.startswith("."):
        return load(expr)  # a literal default
    at = 0
    while at < len(expr):
        m = STEP.match(expr, at)
        if not m:
            raise ValueError(expr)
        at = m.end()
        if m.group(1) is not None:
            data = data[int(m.group(1))] if type(data) is list and int(m.group(1)) < len(data) else None
        else:
            key = m.group(2) if m.group(2) is not None else load(m.group(3))
            data = data.get(key) if type(data) is dict else None
    return data


def get(expr, kind="raw"):
    data = load(read_text())
    try:
        result = None
        for alternative in expr.split("//"):
            result = path(alternative, data)
            if result is not None and result is not False:
                break
    except (ValueError, IndexError):
        sys.stderr.write("extjob.sh: job_data_get: without jq only paths (.a.b[0]) and // "
                         "defaults are understood, not %r; install jq\n" % expr)
        return 3
    out((result if type(result) is str and kind == "raw" else dump(result)) + "\n")
    return 0


def word(v):
    ok = type(v) is str and re.match(r"^[A-Za-z0-9_-]{1,64}$", v)
    return v if ok else None


def count(v):
    return int(v) if type(v) in (int, float) and v >= 0 else 0


def event(line, conn):
    """The short event of the agent for one server line, None to ignore it (CTRL-6)."""
    try:
        m = load(line)
    except ValueError:
        return None
    if type(m) is not dict:
        return None
    kind = m.get("type")
    if kind == "ack":
        return "A %s %d" % (conn, count(m.get("seq")))
    if kind == "welcome":
        return "W %s %d %d" % (conn, count(m.get("lastSeq")), count(m.get("heartbeatIntervalMs")))
    if kind == "cancel":
        return "K %s %s" % (conn, word(m.get("reason")) or "requested")
    if kind == "error":
        return "R %s %s" % (conn, word(m.get("code")) or "unknown")
    return None


class Connector:
    """The connection of the agent of a bash job (stdin) to the server: one
    process for the whole job, one socket at a time, what the server says
    decoded into events for the agent (stdout)."""

    def __init__(self, address, wake):
        self.address = address
        self.wake = wake  # the FIFO the agent waits on: it looks at once
        self.sock = None
        self.conn = "0"
        self.lock = threading.Lock()

    def say(self, text):
        with self.lock:
            os.write(1, (text + "\n").encode())
            try:
                os.write(self.wake, b"\n")
            except OSError:
                pass  # full: the agent has enough to wake up for

    def connect(self, conn):
        self.close()
        self.conn = conn
        try:
            if self.address.startswith("tcp://"):
                host, port = self.address[6:].rsplit(":", 1)
                sock = socket.create_connection((host.strip("[]"), int(port)), 10)
                sock.settimeout(None)
            else:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(self.address)
        except (OSError, ValueError):
            self.say("E " + conn)
            return
        self.sock = sock
        threading.Thread(target=self.read, args=(sock, conn), daemon=True).start()
        self.say("C " + conn)

    def read(self, sock, conn):
        pending, junk = b"", False  # junk: skipping a line over 32 MiB
        try:
            while True:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                if junk and lines:
                    junk = False
                    lines.pop(0)
                if len(pending) > 1 << 25:
                    pending, junk = b"", True
                said = [e for e in (event(line, conn) for line in lines) if e is not None]
                if said:  # one write and one wake for all that a read brought
                    self.say("\n".join(said))
        except OSError:
            pass
        self.say("E " + conn)

    def send(self, data):
        if self.sock is None:
            return  # lost: the agent replays on the next connection
        try:
            self.sock.sendall(data)
        except OSError:
            self.close()

    def close(self, graceful=False):
        sock, self.sock = self.sock, None
        if sock is None:
            return
        try:
            if graceful:  # like socat -t 0.05: what the server still says is read,
                sock.shutdown(socket.SHUT_WR)  # so that closing never resets
                sock.settimeout(0.05)  # the connection (TCP) before it has ours
                while sock.recv(65536):
                    pass
            else:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def run(self):
        pending = b""
        while True:
            chunk = os.read(0, 1 << 16)
            if not chunk:
                break
            pending += chunk
            while True:
                mark = pending.find(b"\x01")  # a command line from the agent
                if mark < 0:
                    cut = pending.rfind(b"\n") + 1
                    data, pending = pending[:cut], pending[cut:]
                    break
                end = pending.find(b"\n", mark)
                if end < 0:
                    data, pending = pending[:mark], pending[mark:]
                    break
                self.send(pending[:mark])
                words = pending[mark + 1 : end].decode().split()
                pending = pending[end + 1 :]
                if words[0] == "connect":
                    self.connect(words[1])
                elif words[0] == "close":
                    self.close()
            if data:
                self.send(data)
        self.send(pending)
        self.close(graceful=True)
        return 0


def connect(address, wake):
    for name in ("SIGTERM", "SIGINT", "SIGHUP"):  # the agent decides when to go
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    try:
        keep = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        keep = range(3, 1024)
    for fd in keep:  # the channels of the agent to the job shell are not ours
        if fd > 2:
            try:
                os.close(fd)
            except OSError:
                pass
    return Connector(address, os.open(wake, os.O_WRONLY | os.O_NONBLOCK)).run()


MODES = {"payload": payload, "text": text, "json": value, "get": get, "connect": connect}
sys.exit(MODES[sys.argv[1]](*sys.argv[2:]))
'
