#!/usr/bin/env bash
# The load benchmark of issue 6: chathub-proxy against bare nginx, nginx
# proxy_pass and nginx sub_filter, on loopback, in one bounded run.
#
#   bench/run.sh            full run (about 11 minutes of measurement; the record)
#   bench/run.sh --quick    smoke run (under 2 minutes): proves the harness works
#   bench/run.sh --help     every option
#
# Everything it starts (nginx, chathub-proxy, the emulator, python origins) runs
# under a temporary directory on 127.0.0.1 ports picked free at run time, and is
# stopped by PID when the script exits, however it exits. See bench/README.md.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
LIB="$BENCH_DIR/lib"
# shellcheck source=lib/common.sh
. "$LIB/common.sh"

MODE=full
DURATION=""
ROUNDS=""
ENCODINGS=""
CONNS=32
STREAM_BYTES=""
IDLE_CONNS=10000
DO_INSTALL=1
DO_BUILD=1
BIN=""
KEEP_TMP=0
WRITE_README=1
SIZES=(2k 64k 1m)
ORIG_ARGS="$*"

usage() {
    cat <<'EOF'
usage: bench/run.sh [--quick] [options]

  --quick              smoke run: 1 round x 2 s, identity only (< 2 minutes)
  --duration SECONDS   wrk time per target and size (full: 5, quick: 2)
  --rounds N           interleaved rounds (full: 3, quick: 1)
  --encodings LIST     "identity gzip" (full) or "identity" (quick)
  --connections N      wrk connections (default 32)
  --stream-bytes N     size of the streamed page (default 1073741824)
  --idle N             idle keep-alive connections to hold (default 10000)
  --no-install         do not apt-get/pip install missing tools
  --no-build           do not run cargo build (use --bin or target/release)
  --bin PATH           chathub-proxy binary to use
  --no-readme          write bench/results/ only, leave bench/README.md alone
  --keep               keep the temporary directory (configs, logs, raw wrk output)
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick ;;
        --duration) DURATION=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        --encodings) ENCODINGS=$2; shift ;;
        --connections) CONNS=$2; shift ;;
        --stream-bytes) STREAM_BYTES=$2; shift ;;
        --idle) IDLE_CONNS=$2; shift ;;
        --no-install) DO_INSTALL=0 ;;
        --no-build) DO_BUILD=0 ;;
        --bin) BIN=$2; shift ;;
        --no-readme) WRITE_README=0 ;;
        --keep) KEEP_TMP=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if [ "$MODE" = quick ]; then
    : "${DURATION:=2}" "${ROUNDS:=1}" "${ENCODINGS:=identity}" "${STREAM_BYTES:=1073741824}"
    TTFB_REPEAT=1
else
    : "${DURATION:=5}" "${ROUNDS:=3}" "${ENCODINGS:=identity gzip}" "${STREAM_BYTES:=1073741824}"
    TTFB_REPEAT=3
fi
read -r -a ENCS <<<"$ENCODINGS"

T_START=$(date +%s)
STAMP=$(date +%Y-%m-%d-%H%M)
[ "$MODE" = quick ] && STAMP="$STAMP-quick"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
NOTES=()
note() { NOTES+=("$*"); log "NOTE: $*"; }
log() { printf '[bench %4ss] %s\n' "$(( $(date +%s) - T_START ))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- processes
TMP=""
PIDS=()
cleanup() {
    local rc=$?
    local i pid n
    for (( i=${#PIDS[@]}-1; i>=0; i-- )); do
        pid=${PIDS[$i]}
        kill -TERM "$pid" 2>/dev/null || continue
        for n in $(seq 1 50); do  # at most 5 s per process
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$TMP" ] && [ -d "$TMP" ]; then
        if [ "$KEEP_TMP" = 1 ]; then
            log "kept $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# start_bg NAME CMD...: run in the background, log to $TMP/logs/NAME.log, remember the PID.
start_bg() {
    local name=$1; shift
    "$@" >"$TMP/logs/$name.log" 2>&1 &
    PIDS+=("$!")
    LAST_PID=$!
}

# A process's CPU in clock ticks, from one read of /proc/PID/stat: utime+stime
# (fields 14 and 15), then utime alone; the rest of the first is system time,
# the kernel's work on the process's behalf (loopback TCP, epoll), so the two
# split what a request costs into its own code and the kernel's. The command
# name may hold spaces, so fields are counted from after its closing paren.
ticks() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13, $12}' || echo 0 0; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0), so a
# peak can be read per run instead of since the process started.
reset_hwm() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || HWM_RESET_FAILED=1; }
HWM_RESET_FAILED=0

# ---------------------------------------------------------------- tools
have_matplotlib() { "$1" -c 'import matplotlib' 2>/dev/null; }
pick_python() {
    PY=""
    for p in /usr/bin/python3 "$(command -v python3 || true)"; do
        [ -n "$p" ] && [ -x "$p" ] && have_matplotlib "$p" && { PY=$p; return 0; }
    done
    PY=$(command -v python3 || true)
    return 1
}

missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
command -v taskset >/dev/null || missing+=(util-linux)
command -v strace >/dev/null || missing+=(strace)
pick_python || missing+=(python3-matplotlib)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$DO_INSTALL" = 1 ] || die "missing: ${missing[*]} (run without --no-install, or install them)"
    log "installing ${missing[*]} (apt-get update first)"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    timeout 300 $SUDO apt-get update -q >&2 || log "apt-get update failed; trying the install anyway"
    DEBIAN_FRONTEND=noninteractive timeout 600 $SUDO apt-get install -y -q --no-install-recommends \
        nginx-light wrk strace python3 python3-matplotlib >&2 || log "apt-get install failed"
    if ! pick_python; then
        log "matplotlib still missing: pip install matplotlib"
        timeout 600 "${PY:-python3}" -m pip install -q matplotlib >&2 || log "pip install matplotlib failed: no plot"
        pick_python || true
    fi
fi
command -v nginx >/dev/null || die "nginx is not installed"
command -v wrk >/dev/null || die "wrk is not installed"
[ -n "$PY" ] || die "python3 is not installed"
nginx -V 2>&1 | grep -q http_sub_module || die "this nginx has no sub_filter (http_sub_module)"

ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -ge $(( IDLE_CONNS + 500 )) ] || note "ulimit -n is $(ulimit -n): the idle-connection check may not reach $IDLE_CONNS"
[ "$(nproc)" -ge 2 ] || note "only $(nproc) core(s): load generator and servers share a core"

# ---------------------------------------------------------------- build
if [ -z "$BIN" ]; then
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/chathub-proxy"
    if [ "$DO_BUILD" = 1 ]; then
        log "cargo build --release --bin chathub-proxy --example relay_floor (not counted in the measurement time)"
        t=$(date +%s)
        if ! (cd "$ROOT" && timeout 3600 cargo build --release --bin chathub-proxy --example relay_floor >&2); then
            [ -x "$BIN" ] || die "release build failed and there is no earlier binary"
            note "the release build failed; an earlier binary ($(date -r "$BIN" '+%F %T')) was benchmarked"
        fi
        log "build took $(( $(date +%s) - t )) s"
        T_START=$(date +%s)  # the time budget covers the measurement only
    fi
fi
[ -x "$BIN" ] || die "no chathub-proxy binary at $BIN"
# The relay floor (examples/relay_floor.rs): a reference row, not a contender.
FLOOR_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/relay_floor"
PROXY_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] || PROXY_REV="$PROXY_REV + uncommitted changes"

# ---------------------------------------------------------------- setup
TMP=$(mktemp -d /tmp/chathub-bench.XXXXXX)
chmod 755 "$TMP"
mkdir -p "$TMP/logs" "$TMP/data" "$TMP/wrk" "$TMP/www"
DATA="$TMP/data"
"$PY" "$LIB/pages.py" "$TMP/www"
chmod -R a+rX "$TMP/www"

read -r P_ORIGIN P_SUB P_PASS P_SUBPAUSE P_PROXY P_PROXY_EMU P_EMU P_FLOOR <<<"$(free_ports 8)"

# The python origin for the pause and 1 GB checks picks its own port.
start_bg pyorigin taskset -c 1 "$PY" "$LIB/origin.py" --port-file "$TMP/pyorigin.port"
PYORIGIN_PID=$LAST_PID
for _ in $(seq 1 50); do [ -s "$TMP/pyorigin.port" ] && break; sleep 0.1; done
[ -s "$TMP/pyorigin.port" ] || die "python origin did not start (see its log)"
P_PY=$(tr -d '[:space:]' <"$TMP/pyorigin.port")

WIDGET='<script type="module" id="operator-chat-panel-script" src="https://widget.smsbat.com/operator-chat-panel/widget-script.js" token="test-token-for-development"></script>'

mkdir -p "$TMP/nginx-origin" "$TMP/nginx-front"
nginx_origin_conf "$TMP/nginx-origin" "$P_ORIGIN" "$TMP/www" >"$TMP/nginx-origin/nginx.conf"

{
    nginx_common "$TMP/nginx-front"
    echo "http {"
    nginx_http_common
    cat <<EOF
    upstream origin {
        server 127.0.0.1:$P_ORIGIN;
        keepalive 64;
        keepalive_requests 1000000;
    }
    # nginx sub_filter: the rewrite this project replaces.
    server {
        listen 127.0.0.1:$P_SUB backlog=4096;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header Accept-Encoding "";
            sub_filter '</body>' '$WIDGET</body>';
            sub_filter_once on;
            gzip on;
        }
    }
    # nginx as a plain reverse proxy: the cost of the hop alone.
    server {
        listen 127.0.0.1:$P_PASS backlog=4096;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
        }
    }
    # sub_filter in front of the pausing origin, for the first-byte check.
    server {
        listen 127.0.0.1:$P_SUBPAUSE;
        location / {
            proxy_pass http://127.0.0.1:$P_PY;
            proxy_http_version 1.1;
            proxy_set_header Host \$host;
            proxy_set_header Accept-Encoding "";
            sub_filter '</body>' '$WIDGET</body>';
            sub_filter_once on;
        }
    }
}
EOF
} >"$TMP/nginx-front/nginx.conf"

for n in origin front; do
    nginx -t -q -c "$TMP/nginx-$n/nginx.conf" -p "$TMP/nginx-$n" -e "$TMP/nginx-$n/error.log" 2>"$TMP/logs/nginx-$n-test.log" \
        || die "nginx $n config rejected: $(cat "$TMP/logs/nginx-$n-test.log")"
done
start_bg nginx-origin taskset -c 1 nginx -c "$TMP/nginx-origin/nginx.conf" -p "$TMP/nginx-origin" -e "$TMP/nginx-origin/error.log"
ORIGIN_MASTER=$LAST_PID
start_bg nginx-front taskset -c 1 nginx -c "$TMP/nginx-front/nginx.conf" -p "$TMP/nginx-front" -e "$TMP/nginx-front/error.log"
FRONT_MASTER=$LAST_PID
wait_port "$P_ORIGIN" 10 "$ORIGIN_MASTER" || die "origin nginx did not start: $(tail -3 "$TMP/nginx-origin/error.log")"
wait_port "$P_SUB" 10 "$FRONT_MASTER" || die "front nginx did not start: $(tail -3 "$TMP/nginx-front/error.log")"
ORIGIN_WORKER=$(pgrep -P "$ORIGIN_MASTER" | head -1)
FRONT_WORKER=$(pgrep -P "$FRONT_MASTER" | head -1)
[ -n "$ORIGIN_WORKER" ] && [ -n "$FRONT_WORKER" ] || die "nginx workers not found"

# chathub-proxy with the development token: one process, one route per variant.
cat >"$TMP/proxy.toml" <<EOF
[server]
listen = ["127.0.0.1:$P_PROXY"]
max_connections = 20000
# Longer than the idle-connection check holds its connections.
header_read_timeout = "60s"
idle_timeout = "120s"
grace_period = "2s"
# One worker: a current-thread runtime (main.rs), everything on core 1's one thread.
worker_threads = 1

[admin]
listen = ""

[log]
# One log line per request would measure the logger; warnings only.
format = "text"
filter = "warn"

[inject]
dev_token = "test-token-for-development"
debug_header = true

$(bench_routes "$P_ORIGIN")

[[routes]]
name = "pyorigin"
hosts = ["pause.bench", "stream.bench"]
upstream = "http://127.0.0.1:$P_PY"
inject = true
EOF
# `server.worker_threads = 1` above; taskset pins every thread (the blocking
# pool's too) to core 1.
start_bg proxy taskset -c 1 "$BIN" run --config "$TMP/proxy.toml"
PROXY_PID=$LAST_PID
FLOOR_PID=""
if [ -x "$FLOOR_BIN" ]; then
    start_bg relay-floor taskset -c 1 "$FLOOR_BIN" "127.0.0.1:$P_FLOOR" "127.0.0.1:$P_ORIGIN"
    FLOOR_PID=$LAST_PID
    wait_port "$P_FLOOR" 10 "$FLOOR_PID" || { note "the relay floor did not start: $(tail -2 "$TMP/logs/relay-floor.log")"; FLOOR_PID=""; }
else
    note "no relay floor binary at $FLOOR_BIN (cargo build --release --example relay_floor): its row is left out"
fi
wait_port "$P_PROXY" 20 "$PROXY_PID" || die "chathub-proxy did not start: $(tail -5 "$TMP/logs/proxy.log")"
PROXY_THREADS_START=$(status_kb "$PROXY_PID" Threads)

# ---------------------------------------------------------------- emulator mode
# Fixed session: 16 bytes in unpadded base64url, the format SessionId::parse
# accepts (a 32-hex value would be refused and every request would start a session).
SID=$("$PY" -c 'import base64; print(base64.urlsafe_b64encode(bytes.fromhex("00112233445566778899aabbccddeeff")).decode().rstrip("="))')
EMU_OK=0
EMU_STATUS=""
cat >"$TMP/seed.toml" <<'EOF'
# Emulator seed for the benchmark (fixtures of a fake service, not secrets).
[[companies]]
login = "bench"
password = "bench-password"

[[companies.organizations]]
id = 1
name = "Bench Support"

[[companies.organizations.operators]]
id = 21
name = "Bench Operator"
status = 0
EOF
# The cold-session check compares against this (issue 6: a new session's first
# page waits at most the token budget beyond a warm one).
TOKEN_BUDGET_MS=150
cat >"$TMP/proxy-emu.toml" <<EOF
[server]
listen = ["127.0.0.1:$P_PROXY_EMU"]
max_connections = 20000
grace_period = "2s"
worker_threads = 1

[admin]
listen = ""

[log]
format = "text"
filter = "warn"

[inject]
debug_header = true

[token]
budget = "${TOKEN_BUDGET_MS}ms"

[accounts.bench]
base_url = "http://127.0.0.1:$P_EMU"
login = "bench"
password_env = "BENCH_CHATHUB_PASSWORD"

[[routes]]
name = "chat"
hosts = ["chat.bench"]
upstream = "http://127.0.0.1:$P_ORIGIN"
inject = true
account = "bench"
organization = 1
operator = { rule = "first-active" }
EOF
start_bg emulator env TOKIO_WORKER_THREADS=1 taskset -c 1 "$BIN" emulator --listen "127.0.0.1:$P_EMU" --seed "$TMP/seed.toml"
EMU_PID=$LAST_PID
if ! wait_port "$P_EMU" 5 "$EMU_PID"; then
    EMU_STATUS="the emulator did not start ($(grep -m1 -i error "$TMP/logs/emulator.log" || tail -1 "$TMP/logs/emulator.log"))"
else
    start_bg proxy-emu env BENCH_CHATHUB_PASSWORD=bench-password taskset -c 1 "$BIN" run --config "$TMP/proxy-emu.toml"
    PROXY_EMU_PID=$LAST_PID
    if ! wait_port "$P_PROXY_EMU" 10 "$PROXY_EMU_PID"; then
        EMU_STATUS="chathub-proxy with an emulator account did not start ($(grep -m1 -iE 'error|routes|accounts' "$TMP/logs/proxy-emu.log" || tail -1 "$TMP/logs/proxy-emu.log"))"
    else
        # Warm the token cache: the first request may go out without the widget
        # (token.budget) while the mint finishes; retry a bounded number of times.
        for _ in $(seq 1 20); do
            taskset -c 0 "$PY" "$LIB/fetch.py" --port "$P_PROXY_EMU" --host chat.bench --path /page-2k.html \
                --header "Cookie: chathub_sid=$SID" >"$DATA/emulator-warm.json" 2>/dev/null || true
            new_sid=$("$PY" -c 'import json,sys,re; r=json.load(open(sys.argv[1]))["runs"][0]; m=re.search(r"chathub_sid=([^;]+)", r.get("set_cookie","")); print(m.group(1) if m else "")' "$DATA/emulator-warm.json" 2>/dev/null || true)
            if [ -n "$new_sid" ] && [ "$new_sid" != "$SID" ]; then
                note "the proxy replaced the fixed session cookie; its own value is reused"
                SID=$new_sid
            fi
            if "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1]))["runs"][0]; sys.exit(0 if r.get("token") and r["token"] != "test-token-for-development" else 1)' "$DATA/emulator-warm.json" 2>/dev/null; then
                EMU_OK=1
                break
            fi
            sleep 0.3
        done
        [ "$EMU_OK" = 1 ] || EMU_STATUS="no minted token appeared in the page after 20 warm-up requests ($( "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1]))["runs"][0]; print("X-ChatHub-Inject: " + (r.get("x_chathub_inject") or "absent"))' "$DATA/emulator-warm.json" 2>/dev/null || echo "no answer"))"
    fi
fi
if [ "$EMU_OK" = 1 ]; then
    log "emulator mode works: warm token cache, session cookie reused by wrk"
    # Cold against warm: the same 2 KB page, 30 times each way, one at a time.
    # Without a cookie every request is a new session whose token is minted
    # through the emulator while the upstream answers; with the warm cookie the
    # token comes from the cache.
    log "cold session against warm session (token.budget ${TOKEN_BUDGET_MS} ms)"
    taskset -c 0 "$PY" "$LIB/fetch.py" --port "$P_PROXY_EMU" --host chat.bench --path /page-2k.html \
        --header "Cookie: chathub_sid=$SID" --repeat 30 >"$DATA/session-warm.json" 2>>"$TMP/logs/fetch.log" || true
    taskset -c 0 "$PY" "$LIB/fetch.py" --port "$P_PROXY_EMU" --host chat.bench --path /page-2k.html \
        --repeat 30 >"$DATA/session-cold.json" 2>>"$TMP/logs/fetch.log" || true
else
    note "emulator mode unavailable, falling back to dev_token only: $EMU_STATUS"
fi

# ---------------------------------------------------------------- targets
TARGETS=(origin nginx-pass nginx-sub proxy-off proxy)
[ -n "$FLOOR_PID" ] && TARGETS+=(relay-floor)
[ "$EMU_OK" = 1 ] && TARGETS+=(proxy-emu)

# target_info TARGET: sets T_PORT, T_HOST, T_PID (the process whose CPU is "this hop")
target_info() {
    case "$1" in
        origin) T_PORT=$P_ORIGIN; T_HOST=origin.bench; T_PID=$ORIGIN_WORKER ;;
        nginx-pass) T_PORT=$P_PASS; T_HOST=pass.bench; T_PID=$FRONT_WORKER ;;
        nginx-sub) T_PORT=$P_SUB; T_HOST=sub.bench; T_PID=$FRONT_WORKER ;;
        proxy-off) T_PORT=$P_PROXY; T_HOST=plain.bench; T_PID=$PROXY_PID ;;
        proxy) T_PORT=$P_PROXY; T_HOST=inject.bench; T_PID=$PROXY_PID ;;
        proxy-emu) T_PORT=$P_PROXY_EMU; T_HOST=chat.bench; T_PID=$PROXY_EMU_PID ;;
        relay-floor) T_PORT=$P_FLOOR; T_HOST=floor.bench; T_PID=$FLOOR_PID ;;
    esac
}

# Content checks: is the tag there, is the page whole, for both encodings.
log "content checks (tag present? page complete?)"
for t in "${TARGETS[@]}"; do
    target_info "$t"
    for size in "${SIZES[@]}"; do
        for enc in identity gzip; do
            args=(--port "$T_PORT" --host "$T_HOST" --path "/page-$size.html")
            [ "$enc" = gzip ] && args+=(--accept-encoding gzip)
            [ "$t" = proxy-emu ] && args+=(--header "Cookie: chathub_sid=$SID")
            taskset -c 0 "$PY" "$LIB/fetch.py" "${args[@]}" >"$DATA/check-$t-$size-$enc.json" 2>>"$TMP/logs/fetch.log" || true
        done
    done
done
if "$PY" -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["runs"][0].get("tag") else 1)' "$DATA/check-proxy-2k-identity.json" 2>/dev/null; then
    log "chathub-proxy inserts the tag"
else
    note "chathub-proxy did NOT insert the tag (X-ChatHub-Inject: $("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["runs"][0].get("x_chathub_inject") or "absent")' "$DATA/check-proxy-2k-identity.json" 2>/dev/null || echo '?')): its rewriter is still the pass-through stub, so the injection rows measure a pass-through"
fi

# ---------------------------------------------------------------- load
per_run=$(( DURATION + 1 ))
n_runs=$(( ROUNDS * ${#SIZES[@]} * ${#ENCS[@]} * 5 ))
[ "$EMU_OK" = 1 ] && n_runs=$(( n_runs + ROUNDS * ${#SIZES[@]} ))
BUDGET=$(( n_runs * per_run + 120 ))
log "load: $n_runs wrk runs of ${DURATION}s (${ROUNDS} round(s) x ${#SIZES[@]} sizes x encodings [${ENCS[*]}] x targets [${TARGETS[*]}]), about $(( n_runs * per_run )) s"

run_wrk() {  # round size enc target seconds [record]
    local round=$1 size=$2 enc=$3 t=$4 secs=$5 record=${6:-1}
    target_info "$t"
    local hdr=(-H "Host: $T_HOST" -H "Accept: text/html,application/xhtml+xml")
    [ "$enc" = gzip ] && hdr+=(-H "Accept-Encoding: gzip")
    [ "$t" = proxy-emu ] && hdr+=(-H "Cookie: chathub_sid=$SID")
    local out="$TMP/wrk/r$round-$size-$enc-$t.txt"
    local t0 t1 o0 o1 u0 u1 hwm
    read -r t0 u0 < <(ticks "$T_PID"); read -r o0 _ < <(ticks "$ORIGIN_WORKER")
    reset_hwm "$T_PID"
    timeout $(( secs + 20 )) taskset -c 0 wrk -t1 -c"$CONNS" -d"${secs}s" --timeout 5s --latency "${hdr[@]}" \
        "http://127.0.0.1:$T_PORT/page-$size.html" >"$out" 2>&1 || log "wrk failed for $t $size $enc: $(tail -1 "$out")"
    read -r t1 u1 < <(ticks "$T_PID"); read -r o1 _ < <(ticks "$ORIGIN_WORKER")
    hwm=$(status_kb "$T_PID" VmHWM)
    if [ "$record" = 1 ]; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$size" "$enc" "$t" "$out" "$t0" "$t1" "$o0" "$o1" "${hwm:-0}" "$secs" "$u0" "$u1" >>"$DATA/runs.tsv"
        log "round $round $size $enc $t: $(awk '/Requests\/sec/ {print $2 " req/s"}' "$out")$(grep -o 'Non-2xx.*' "$out" | sed 's/^/, /')"
    fi
}

log "warm-up"
for t in "${TARGETS[@]}"; do
    run_wrk 0 2k identity "$t" 1 0
    [ "$MODE" = quick ] || run_wrk 0 1m identity "$t" 1 0
done

: >"$DATA/runs.tsv"
CUT=0
for round in $(seq 1 "$ROUNDS"); do
    # Rotate the target order every round so that no target always runs first.
    order=()
    for i in "${!TARGETS[@]}"; do order+=("${TARGETS[$(( (i + round - 1) % ${#TARGETS[@]} ))]}"); done
    for size in "${SIZES[@]}"; do
        for enc in "${ENCS[@]}"; do
            for t in "${order[@]}"; do
                [ "$t" = proxy-emu ] && [ "$enc" != identity ] && continue
                if [ $(( $(date +%s) - T_START )) -gt $(( BUDGET * 3 / 2 )) ]; then CUT=1; break 4; fi
                run_wrk "$round" "$size" "$enc" "$t" "$DURATION"
            done
        done
    done
done
[ "$CUT" = 0 ] || note "the load matrix was cut short: it ran past 1.5x its time budget"
[ "$HWM_RESET_FAILED" = 0 ] || note "VmHWM could not be reset between runs: peak RSS is since the process started"

# ---------------------------------------------------------------- system calls
# What each hop asks of the kernel a request (2 KB identity): strace -c on the
# serving process through a short wrk run, divided by wrk's request count.
# strace slows the process it traces, so these runs are in no other table.
if command -v strace >/dev/null; then
    log "system calls per request at 2 KB identity (strace -c)"
    for t in nginx-pass nginx-sub proxy-off proxy relay-floor; do  # report.py's HOPS
        [[ " ${TARGETS[*]} " == *" $t "* ]] || continue
        target_info "$t"
        timeout 30 strace -c -f -q -p "$T_PID" -o "$DATA/strace-$t.txt" &
        spid=$!
        sleep 0.5
        timeout 20 taskset -c 0 wrk -t1 -c"$CONNS" -d2s -H "Host: $T_HOST" -H "Accept: text/html,application/xhtml+xml" \
            "http://127.0.0.1:$T_PORT/page-2k.html" >"$DATA/strace-$t.wrk" 2>&1 || true
        kill -INT "$spid" 2>/dev/null || true
        wait "$spid" 2>/dev/null || true
        # strace may not attach (ptrace not allowed here): say so, not nothing.
        grep -q total "$DATA/strace-$t.txt" 2>/dev/null || note "strace -c on $t gave no counts: $(head -c 200 "$DATA/strace-$t.txt" 2>/dev/null)"
    done
else
    note "strace is not installed: no system call counts"
fi

PROXY_THREADS=$(status_kb "$PROXY_PID" Threads)
# Tokio names its workers and its blocking pool (DNS lookups, files) alike, so
# the count right after start, before any blocking work, is the telling one:
# the main thread plus the workers.
PINNING="server.worker_threads = 1 (a current-thread runtime) and taskset -c 1; threads right after start: $PROXY_THREADS_START, after the load: $PROXY_THREADS (with the blocking pool)"

# ---------------------------------------------------------------- streaming
log "first body byte through an origin that pauses 2 s mid-page (x$TTFB_REPEAT)"
ttfb() {  # name port
    taskset -c 0 "$PY" "$LIB/fetch.py" --port "$2" --host pause.bench --path "/pause?ms=2000" --repeat "$TTFB_REPEAT" \
        >"$DATA/ttfb-$1.json" 2>>"$TMP/logs/fetch.log" || true
}
ttfb direct "$P_PY"
ttfb proxy "$P_PROXY"
ttfb nginx-sub "$P_SUBPAUSE"

log "streaming a $STREAM_BYTES-byte page through chathub-proxy"
reset_hwm "$PROXY_PID"
timeout 600 taskset -c 0 "$PY" "$LIB/fetch.py" --port "$P_PROXY" --host stream.bench --path "/stream?bytes=$STREAM_BYTES" \
    --pid "$PROXY_PID" --max-seconds 480 --timeout 30 >"$DATA/stream.json" 2>>"$TMP/logs/fetch.log" || true
STREAM_HWM=$(status_kb "$PROXY_PID" VmHWM)

log "holding $IDLE_CONNS idle keep-alive connections on chathub-proxy"
timeout 300 taskset -c 0 "$PY" "$LIB/idle.py" --port "$P_PROXY" --host inject.bench --count "$IDLE_CONNS" \
    --pid "$PROXY_PID" >"$DATA/idle-proxy.json" 2>>"$TMP/logs/idle.log" || log "idle check failed: $(tail -1 "$TMP/logs/idle.log")"
if [ "$MODE" = full ]; then
    log "holding $IDLE_CONNS idle keep-alive connections on nginx sub_filter (for comparison)"
    timeout 300 taskset -c 0 "$PY" "$LIB/idle.py" --port "$P_SUB" --host sub.bench --count "$IDLE_CONNS" \
        --pid "$FRONT_WORKER" >"$DATA/idle-nginx-sub.json" 2>>"$TMP/logs/idle.log" || log "nginx idle check failed"
fi

# The proxy must still be the process we started (a crash would void the numbers).
kill -0 "$PROXY_PID" 2>/dev/null || note "chathub-proxy exited during the run: $(tail -3 "$TMP/logs/proxy.log")"
if grep -qiE 'panick|ERROR' "$TMP/logs/proxy.log"; then
    note "chathub-proxy logged errors during the run (first: $(grep -m1 -iE 'panick|ERROR' "$TMP/logs/proxy.log" | cut -c1-200))"
fi

# ---------------------------------------------------------------- report
ELAPSED=$(( $(date +%s) - T_START ))
{
    printf 'mode\t%s\n' "$MODE"
    printf 'date\t%s\n' "$(date '+%Y-%m-%d %H:%M %Z')"
    printf 'stamp\t%s\n' "$STAMP"
    printf 'command\t%s\n' "bench/run.sh${ORIG_ARGS:+ $ORIG_ARGS}"
    printf 'nproc\t%s\n' "$(nproc)"
    printf 'cpu_model\t%s\n' "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    printf 'kernel\t%s\n' "Linux $(uname -r)"
    printf 'load_start\t%s\n' "$LOAD_START"
    printf 'load_end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'duration\t%s\n' "$DURATION"
    printf 'rounds\t%s\n' "$ROUNDS"
    printf 'conns\t%s\n' "$CONNS"
    printf 'elapsed\t%s\n' "$ELAPSED"
    printf 'clk_tck\t%s\n' "$(getconf CLK_TCK)"
    printf 'nginx_version\t%s\n' "$(nginx -v 2>&1 | sed 's/.*: //')"
    printf 'wrk_version\t%s\n' "$(wrk -v 2>&1 | head -1 | awk '{print $1 " " $2}')"
    printf 'proxy_rev\t%s\n' "$PROXY_REV"
    printf 'proxy_threads\t%s\n' "$PROXY_THREADS"
    printf 'proxy_pinning\t%s\n' "$PINNING"
    printf 'stream_hwm_kb\t%s\n' "${STREAM_HWM:-0}"
    printf 'token_budget_ms\t%s\n' "$TOKEN_BUDGET_MS"
    i=0
    for n in "${NOTES[@]}"; do i=$((i + 1)); printf 'note%02d\t%s\n' "$i" "$n"; done
} >"$DATA/meta.tsv"

mkdir -p "$BENCH_DIR/results"
report_args=(--data "$DATA" --results "$BENCH_DIR/results" --readme "$BENCH_DIR/README.md")
[ "$WRITE_README" = 1 ] || report_args+=(--no-readme)
"$PY" "$LIB/report.py" "${report_args[@]}"
log "done in $ELAPSED s: bench/results/$STAMP.md, bench/results/reqs-by-size.png$([ "$WRITE_README" = 1 ] && echo ', bench/README.md')"
