# Helpers shared by the scripts that start and stop the services tests need (tests/llm/server.sh,
# tests/llm/vllm.sh, tests/cluster/slurm.sh). Sourced after they set SERVICE, the name their messages start
# with, and optionally DIE_HINT, a last line for every failure.

say() { echo "$SERVICE: $*"; }
err() { echo "$SERVICE: ERROR: $*" >&2; }

die_with_log() {  # die_with_log MESSAGE LOGFILE...: the message, the last 30 lines of each log, exit 1
    local msg="$1"
    shift
    err "$msg"
    local f
    for f in "$@"; do
        if [[ -f "$f" ]]; then
            echo "---- last 30 lines of $f ----" >&2
            tail -n 30 "$f" >&2 || true
        fi
    done
    if [[ -n "${DIE_HINT:-}" ]]; then
        echo "$SERVICE: $DIE_HINT" >&2
    fi
    exit 1
}

live_pid() {  # live_pid PIDFILE -> prints the pid in PIDFILE and returns 0 iff that process is alive, not a zombie
    local pid state
    [[ -s "$1" ]] || return 1
    pid="$(tr -dc '0-9' 2>/dev/null <"$1")" || return 1
    [[ -n "$pid" && -r "/proc/$pid/stat" ]] || return 1
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
    [[ -n "$state" && "$state" != "Z" && "$state" != "X" ]] || return 1
    echo "$pid"
}

terminate() {  # terminate NAME PID CHECK...: SIGTERM; SIGKILL if CHECK... still succeeds 15 s later
    local name="$1" pid="$2" i
    shift 2
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        "$@" >/dev/null || break
        sleep 0.5
    done
    if "$@" >/dev/null; then
        say "$name (pid $pid) ignored SIGTERM for 15 s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 10; i++)); do
            "$@" >/dev/null || break
            sleep 0.5
        done
    fi
    say "stopped $name (pid $pid)"
}

port_in_use() {  # port_in_use PORT: something listens on it
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

# ---------------------------------------------------------------- one OpenAI-compatible server by its pid file
# For tests/llm/server.sh and tests/llm/vllm.sh; they set DIR, PID_FILE, LOG_FILE, LOCK_FILE, URL, ALIAS,
# SERVER_MODULE (the python -m module the server runs) and URL_ENV (the variable the tests read its URL from).

lock() {  # one start/stop/install at a time per DIR (fd 9 holds LOCK_FILE until the script exits)
    mkdir -p "$DIR"
    exec 9>"$LOCK_FILE"
    flock -w 900 9 || die_with_log "another '$0' holds $LOCK_FILE" /dev/null
}

# server_pid -> prints the pid in PID_FILE and returns 0 iff that process is alive and is our server.
server_pid() {
    local pid
    pid="$(live_pid "$PID_FILE")" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-m $SERVER_MODULE " || return 1
    echo "$pid"
}

# endpoint_ok: GET /v1/models answers within 2 s and lists our model alias.
endpoint_ok() {
    local body
    if command -v curl >/dev/null; then
        body="$(curl -fsS --max-time 2 "$URL/models" 2>/dev/null)" || return 1
    else
        body="$(python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())' \
            "$URL/models" 2>/dev/null)" || return 1
    fi
    grep -q "\"$ALIAS\"" <<<"$body"
}

stop_server() {
    local pid
    if ! pid="$(server_pid)"; then
        rm -f "$PID_FILE"
        return 1
    fi
    terminate server "$pid" server_pid
    rm -f "$PID_FILE"
}

cmd_stop() {
    [[ -d "$DIR" ]] && lock
    stop_server || say "not running"
}

cmd_status() {
    local pid
    if pid="$(server_pid)"; then
        say "server running (pid $pid, log $LOG_FILE)"
    else
        say "no server from $PID_FILE"
    fi
    if endpoint_ok; then
        say "$URL answers (model $ALIAS)"
        echo "export $URL_ENV=$URL"
        return 0
    fi
    say "$URL/models is not answering"
    return 1
}
