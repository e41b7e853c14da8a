#!/usr/bin/env bash
# Measures the console's CPU use while idle: the release binary in a real window under
# Xvfb, a subscriber registered (so ages tick), nothing published, for 30 s.
#   usage: benches/idle-cpu.sh      (needs: xvfb xauth xdotool curl)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
bin="$PWD/${CARGO_TARGET_DIR:-target}/release/herald"
if [ -z "${HERALD_UNDER_XVFB:-}" ]; then
    exec env HERALD_UNDER_XVFB=1 xvfb-run -a -s "-screen 0 ${SCREEN:-1280x800x24} -nolisten tcp" "$0" "$@"
fi
work="$(mktemp -d)"
export XDG_RUNTIME_DIR="$work/runtime" HOME="$work/home"
mkdir -m 700 -p "$XDG_RUNTIME_DIR" "$HOME"
"$bin" --bind 127.0.0.1:3901 >"$work/herald.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$work"' EXIT
xdotool search --sync --name '^Herald$' >/dev/null
for _ in $(seq 50); do curl -sf http://127.0.0.1:3901/healthz >/dev/null && break; sleep 0.1; done
[ -n "${NO_SUBSCRIBER:-}" ] || curl -sf -X POST 'http://127.0.0.1:3901/registerAndKeepAlive?address=127.0.0.1:9' >/dev/null
sleep 5
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
seconds=30
before=$(ticks); sleep "$seconds"; after=$(ticks)
hz=$(getconf CLK_TCK)
awk -v t=$((after - before)) -v hz="$hz" -v s="$seconds" \
    'BEGIN { printf "idle CPU over %d s: %.2f%% of one core (%d ticks at %d Hz)\n", s, 100 * t / hz / s, t, hz }'
