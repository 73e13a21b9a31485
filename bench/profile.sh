#!/usr/bin/env bash
# Profiles of chathub-proxy under the benchmark's load (issue 6, point 5):
#
#   - a flamegraph (SVG) per case, from `perf record --call-graph dwarf` on the
#     pinned release binary while wrk loads it from the other core;
#   - instructions per request per case, from callgrind: the proxy runs under
#     valgrind, its counters are zeroed, exactly N requests are sent and checked
#     (bench/lib/requests.py), and the counters are dumped. Instruction counts
#     do not depend on what else the machine does, so they can be compared
#     across runs and commits where timings cannot;
#   - the top functions of each callgrind dump (bench/lib/callgrind_top.py).
#
# Everything goes to bench/profiles/ (summary.md, flame-*.svg, callgrind-*.md).
#
#   bench/profile.sh               all cases (about 3 minutes after the build)
#   bench/profile.sh --no-build    use target/release/chathub-proxy as it is
#   bench/profile.sh --seconds N   perf sampling time per case (default 8)
#   bench/profile.sh --requests N  requests per callgrind case (default 2000)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
LIB="$BENCH_DIR/lib"
# shellcheck source=lib/common.sh
. "$LIB/common.sh"
OUT="$BENCH_DIR/profiles"
SECONDS_PER_CASE=8
REQUESTS=2000
DO_BUILD=1
DO_INSTALL=1

while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECONDS_PER_CASE=$2; shift 2 ;;
        --requests) REQUESTS=$2; shift 2 ;;
        --no-build) DO_BUILD=0; shift ;;
        --no-install) DO_INSTALL=0; shift ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { printf '[profile] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The cases: name, route host, page, Accept-Encoding. "plain" is the route with
# injection off (the hop alone), "inject" the development-token route.
CASES=(
    "hop-2k-identity plain.bench /page-2k.html identity"
    "inject-2k-identity inject.bench /page-2k.html identity"
    "inject-2k-gzip inject.bench /page-2k.html gzip"
    "inject-64k-identity inject.bench /page-64k.html identity"
    "inject-64k-gzip inject.bench /page-64k.html gzip"
)

# ---------------------------------------------------------------- tools
if [ "$DO_INSTALL" = 1 ]; then
    missing=()
    command -v nginx >/dev/null || missing+=(nginx-light)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v perf >/dev/null || missing+=(linux-perf)
    command -v valgrind >/dev/null || missing+=(valgrind)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    fi
    if ! command -v inferno-flamegraph >/dev/null; then
        log "cargo install inferno (flamegraph SVGs from perf output)"
        cargo install --locked inferno >&2
    fi
fi
export PATH="$HOME/.cargo/bin:$PATH"
for t in nginx wrk perf valgrind callgrind_control inferno-collapse-perf inferno-flamegraph python3; do
    command -v "$t" >/dev/null || die "$t is missing (run without --no-install)"
done

BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/chathub-proxy"
if [ "$DO_BUILD" = 1 ]; then
    log "cargo build --release --bin chathub-proxy"
    (cd "$ROOT" && cargo build --release --bin chathub-proxy >&2)
fi
[ -x "$BIN" ] || die "no release binary at $BIN"
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] || REV="$REV + uncommitted changes"

# ---------------------------------------------------------------- servers
TMP=$(mktemp -d /tmp/chathub-profile.XXXXXX)
chmod 755 "$TMP"
PIDS=()
cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

python3 "$LIB/pages.py" "$TMP/www"
chmod -R a+rX "$TMP/www"
read -r P_ORIGIN P_PROXY <<<"$(free_ports 2)"
mkdir -p "$TMP/nginx"
nginx_origin_conf "$TMP/nginx" "$P_ORIGIN" "$TMP/www" >"$TMP/nginx/nginx.conf"
taskset -c 1 nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" >"$TMP/nginx.log" 2>&1 &
PIDS+=("$!")
wait_port "$P_ORIGIN" 10 || die "origin nginx did not start"

cat >"$TMP/proxy.toml" <<EOF
[server]
listen = ["127.0.0.1:$P_PROXY"]
grace_period = "1s"
worker_threads = 1
[admin]
listen = ""
[log]
filter = "warn"
[inject]
dev_token = "test-token-for-development"
$(bench_routes "$P_ORIGIN")
EOF

# start_proxy [wrapper...]: the proxy on core 1 with one worker, as in run.sh.
start_proxy() {
    taskset -c 1 "$@" "$BIN" run --config "$TMP/proxy.toml" >"$TMP/proxy.log" 2>&1 &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_port "$P_PROXY" 120 || die "chathub-proxy did not start: $(tail -5 "$TMP/proxy.log")"
}
stop_proxy() {
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
}

mkdir -p "$OUT"
rm -f "$OUT"/flame-*.svg "$OUT"/callgrind-*.md
SUMMARY=()

# ---------------------------------------------------------------- flamegraphs
start_proxy
for c in "${CASES[@]}"; do
    read -r name host path enc <<<"$c"
    python3 "$LIB/requests.py" --port "$P_PROXY" --host "$host" --path "$path" --encoding "$enc" -n 10 \
        $([ "${name%%-*}" = inject ] && echo --expect-tag) || die "$name: the proxy's answers are wrong"
    log "perf: $name (${SECONDS_PER_CASE} s under wrk -c32 from core 0)"
    taskset -c 0 wrk -t1 -c32 -d"$((SECONDS_PER_CASE + 2))s" -H "Host: $host" -H "Accept-Encoding: $enc" \
        "http://127.0.0.1:$P_PROXY$path" >"$TMP/wrk-$name.txt" &
    WRK=$!
    sleep 1
    perf record -q -F 997 --call-graph dwarf,32768 -p "$PROXY_PID" -o "$TMP/perf-$name.data" \
        -- sleep "$SECONDS_PER_CASE" >/dev/null 2>&1
    wait "$WRK"
    perf script --no-inline -i "$TMP/perf-$name.data" 2>/dev/null | inferno-collapse-perf >"$TMP/$name.folded"
    inferno-flamegraph --minwidth 0.5 --title "chathub-proxy $name ($REV, $(date -u '+%F'))" \
        <"$TMP/$name.folded" >"$OUT/flame-$name.svg"
    rps=$(awk '/Requests\/sec/ {print $2}' "$TMP/wrk-$name.txt")
    SUMMARY+=("$name|$rps")
done
stop_proxy

# ---------------------------------------------------------------- callgrind
log "callgrind: starting the proxy under valgrind"
start_proxy valgrind --tool=callgrind --compress-strings=no --compress-pos=no --callgrind-out-file="$TMP/cg.%p"
CG_PID=$PROXY_PID
declare -A IR
# cg_dump LABEL: write the counters since the last dump to a new file and reset
# them (what a callgrind dump does); prints that file's name once written.
# (Resetting with `callgrind_control -z` instead loses the functions' names in
# the next dump: everything lands on the thread's `clone`.)
cg_dump() {
    local before
    before=$(ls "$TMP"/cg.* | wc -l)
    callgrind_control -d "$1" "$CG_PID" >/dev/null
    for _ in $(seq 1 300); do [ "$(ls "$TMP"/cg.* | wc -l)" -gt "$before" ] && break; sleep 0.1; done
    ls -t "$TMP"/cg.*.* | head -1
}
for c in "${CASES[@]}"; do
    read -r name host path enc <<<"$c"
    tag=$([ "${name%%-*}" = inject ] && echo --expect-tag || true)
    # Warm up (connections to the origin, lazily built state), then count N.
    python3 "$LIB/requests.py" --port "$P_PROXY" --host "$host" --path "$path" --encoding "$enc" -n 50 $tag \
        || die "$name: the proxy's answers are wrong"
    cg_dump "warm-up-$name" >/dev/null
    log "callgrind: $name ($REQUESTS requests)"
    python3 "$LIB/requests.py" --port "$P_PROXY" --host "$host" --path "$path" --encoding "$enc" -n "$REQUESTS" $tag \
        || die "$name: the proxy's answers are wrong"
    dump=$(cg_dump "$name")
    {
        echo "# callgrind: $name, $REQUESTS requests ($REV)"
        echo
        python3 "$LIB/callgrind_top.py" "$dump" 40
    } >"$OUT/callgrind-$name.md"
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
    IR[$name]=$(( total / REQUESTS ))
done
stop_proxy

# ---------------------------------------------------------------- summary
{
    echo "# Profiles (generated by bench/profile.sh)"
    echo
    echo "chathub-proxy $REV, $(date -u '+%F %H:%M') UTC, $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo))."
    echo "Release binary, one tokio worker, pinned to core 1 with the nginx origin; load from core 0."
    echo
    echo "| case | instructions per request (callgrind, $REQUESTS requests) | req/s while sampled (perf on) | flamegraph | top functions |"
    echo "|---|---:|---:|---|---|"
    for row in "${SUMMARY[@]}"; do
        IFS='|' read -r name rps <<<"$row"
        printf '| %s | %s | %s | [flame-%s.svg](flame-%s.svg) | [callgrind-%s.md](callgrind-%s.md) |\n' \
            "$name" "${IR[$name]}" "$rps" "$name" "$name" "$name" "$name"
    done
    echo
    echo "Instruction counts are of the proxy process only (user space; the kernel's"
    echo "TCP work, about half of the hop's CPU time in perf, is not in them)."
    echo "The flamegraphs include the kernel. perf slows the proxy, so their req/s"
    echo "is not a benchmark result; bench/run.sh measures that."
} >"$OUT/summary.md"
log "wrote $OUT/summary.md"
cat "$OUT/summary.md"
