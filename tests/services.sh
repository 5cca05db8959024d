# Helpers shared by the scripts that start and stop the services tests need (tests/llm/server.sh,
# tests/cluster/slurm.sh). Sourced after they set SERVICE, the name their messages start with, and optionally
# DIE_HINT, a last line for every failure.

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
