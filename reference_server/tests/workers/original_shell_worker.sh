#!/usr/bin/env bash
# A v1 worker that talks like the original shell wrapper (ORIGINAL-BEHAVIOUR.md):
# one new socat connection per message, a background subshell for heartbeats,
# escaping only backslash, double quote and newline. Its data:
#   steps (5)          progress and log messages, one connection each
#   heartbeat_ms (200) the heartbeat subshell's interval
#   sleep_ms (0)       time between steps
set -u
payload=$(head -n 1)
job_id=$(jq -r .jobId <<<"$payload")
socket_path=$(jq -r .socketPath <<<"$payload")
steps=$(jq -r '.data.steps // 5' <<<"$payload")
heartbeat_ms=$(jq -r '.data.heartbeat_ms // 200' <<<"$payload")
sleep_ms=$(jq -r '.data.sleep_ms // 0' <<<"$payload")

send() {  # send TYPE [EXTRA-JSON-FIELDS]: one message, one connection
  local now
  now=$(date +%s%3N)
  printf '{"type":"%s","jobId":"%s","timestamp":%s%s}\n' "$1" "$job_id" "$now" "${2:-}" |
    socat - "UNIX-CONNECT:${socket_path}" 2>/dev/null || true
}

seconds() {  # seconds MS: MS milliseconds as sleep(1) takes them
  printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000))
}

send started
(
  while sleep "$(seconds "$heartbeat_ms")"; do
    send heartbeat
  done
) &
heartbeats=$!
for ((i = 1; i <= steps; i++)); do
  send progress ",\"percent\":$((100 * i / steps)),\"message\":\"step $i\""
  send log ",\"level\":\"info\",\"message\":\"line $i\""
  sleep "$(seconds "$sleep_ms")"
done
send completed ',"result":{"steps":'"$steps"'}'
kill "$heartbeats" 2>/dev/null
