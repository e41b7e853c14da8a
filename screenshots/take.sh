#!/usr/bin/env bash
# Takes the README's screenshots from the real app: builds the release binary, runs it
# under Xvfb, starts real subscriber processes (one of them failing, one address dead),
# publishes real messages over HTTP, and captures the window.
#   usage: screenshots/take.sh            (needs: xvfb xauth xdotool imagemagick curl python3)
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/screenshots"
cargo build --release --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/release/herald"

if [ -z "${DISPLAY:-}" ] || [ -z "${HERALD_UNDER_XVFB:-}" ]; then
    exec env HERALD_UNDER_XVFB=1 xvfb-run -a -s "-screen 0 1280x800x24 -nolisten tcp" "$0" "$@"
fi

work="$(mktemp -d)"
export XDG_RUNTIME_DIR="$work/runtime" HOME="$work/home"   # fresh settings, no saved state
mkdir -m 700 -p "$XDG_RUNTIME_DIR" "$HOME"
port=3900
hub="http://127.0.0.1:$port"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$bin" --bind "127.0.0.1:$port" >"$work/herald.log" 2>&1 & pids+=($!)
wid="$(xdotool search --sync --name '^Herald$' | head -n1)"
for _ in $(seq 50); do curl -sf "$hub/healthz" >/dev/null && break; sleep 0.1; done

# Real subscribers: three healthy (one slow), one that answers 500, one that is not there.
for spec in "9101 200 0" "9102 200 0" "9103 200 0.08" "9104 500 0"; do
    set -- $spec
    python3 screenshots/subscriber.py "$1" "$2" "$3" & pids+=($!)
done
sleep 0.5
for address in 127.0.0.1:9102 127.0.0.1:9104 127.0.0.1:9109; do
    curl -sf -X POST "$hub/registerAndKeepAlive?address=$address" >/dev/null
done
# Two with topics: orders only, and everything under deploy.
curl -sf -X POST "$hub/registerAndKeepAlive?address=127.0.0.1:9101&topics=orders.*" >/dev/null
curl -sf -X POST "$hub/registerAndKeepAlive?address=127.0.0.1:9103&topics=deploy.%3E" >/dev/null
curl -sf -X POST -H 'Content-Type: application/json' "$hub/api/v1/subscribers" \
    -d '{"address": "http://localhost:9102/hooks/orders", "lease_seconds": 300}' >/dev/null

publish() {
    curl -sf -X POST -H "Content-Type: $1" --data-binary "$3" "$hub/sendMessage?topic=$2" >/dev/null
}
for i in $(seq 1 24); do
    publish application/json orders.created "{\"type\":\"order.created\",\"id\":\"ord_$((1000 + i))\",\"total_cents\":$((i * 1250))}"
    [ $((i % 6)) = 0 ] && publish "text/plain; charset=utf-8" cache.flushed "cache flushed on node-$i"
    sleep 0.4
done
publish application/json deploy.finished.prod "$(cat assets/templates/deployment-finished.json)"
# Let retries to the failing subscriber run out (0.5 s, 2 s, 8 s) so failures show.
sleep 12

import -window "$wid" "$out/main.png"

# Select the newest message to show its payload and every delivery.
xdotool mousemove --window "$wid" 900 121 click 1
sleep 1.5
import -window "$wid" "$out/message.png"

# The inspector: open the failing subscriber's delivery, then its first attempt.
xdotool mousemove --window "$wid" 1100 543 click 1
sleep 0.5
xdotool mousemove --window "$wid" 1080 566 click 1
sleep 1
import -window "$wid" "$out/inspector.png"

# The Topics window; a click on orders.created loads its last message into Compose,
# which previews who it reaches.
xdotool mousemove --window "$wid" 1174 12 click 1
sleep 0.5
xdotool mousemove --window "$wid" 80 158 click 1
sleep 1.5
import -window "$wid" "$out/topics.png"
xdotool mousemove --window "$wid" 558 33 click 1
sleep 0.3

# The settings window, in the light theme.
xdotool mousemove --window "$wid" 1060 12 click 1
sleep 0.5
xdotool mousemove --window "$wid" 1240 12 click 1
sleep 1.5
import -window "$wid" "$out/settings-light.png"

# The workbench: back to dark, settings closed; a burst of Compose's template (100 at
# 50/s) under way, and the selected message opened in Compose to be replayed.
xdotool mousemove --window "$wid" 1060 12 click 1
sleep 0.3
xdotool mousemove --window "$wid" 338 33 click 1
sleep 0.5
xdotool mousemove --window "$wid" 270 603 click 1
sleep 1.2
xdotool mousemove --window "$wid" 868 440 click 1
sleep 0.8
# A test subscriber, and one message for it to receive.
xdotool mousemove --window "$wid" 200 486 click 1
sleep 1
publish application/json orders.created '{"type":"order.created","id":"ord_2001","total_cents":4200}'
sleep 1
import -window "$wid" "$out/workbench.png"

# The fan-out matrix: the newest messages by every subscriber.
xdotool mousemove --window "$wid" 1115 12 click 1
sleep 1.5
import -window "$wid" "$out/matrix.png"

# Cluster mode: the console as one of two instances sharing a nats-server's JetStream,
# the other headless; subscribers registered at one, messages published at both.
if command -v nats-server >/dev/null; then
    kill "${pids[0]}"
    sleep 1
    nats="nats://127.0.0.1:4922"
    nats-server -js -sd "$work/nats" -a 127.0.0.1 -p 4922 >"$work/nats.log" 2>&1 & pids+=($!)
    sleep 1
    "$bin" --headless --bind 127.0.0.1:3902 --cluster "$nats" --instance-name staging-b \
        >"$work/b.log" 2>&1 & pids+=($!)
    "$bin" --bind 127.0.0.1:3901 --cluster "$nats" --instance-name laptop-a \
        >"$work/a.log" 2>&1 & pids+=($!)
    wid="$(xdotool search --sync --name '^Herald$' | head -n1)"
    for _ in $(seq 50); do curl -sf http://127.0.0.1:3901/healthz >/dev/null && break; sleep 0.1; done
    sleep 2
    for address in 127.0.0.1:9101 127.0.0.1:9102 127.0.0.1:9103; do
        curl -sf -X POST "http://127.0.0.1:3902/registerAndKeepAlive?address=$address" >/dev/null
    done
    sleep 1
    for i in $(seq 1 12); do
        for at in 3901 3902; do
            curl -sf -X POST -H 'Content-Type: application/json' \
                --data-binary "{\"type\":\"order.created\",\"id\":\"ord_$((3000 + i))\",\"via\":$at}" \
                "http://127.0.0.1:$at/sendMessage?topic=orders.created" >/dev/null
        done
        sleep 0.3
    done
    sleep 2
    # The newest message's deliveries (made by either instance), and the Cluster window.
    xdotool mousemove --window "$wid" 1100 169 click 1
    sleep 0.5
    xdotool mousemove --window "$wid" 391 12 click 1
    sleep 1.5
    import -window "$wid" "$out/cluster.png"
fi

echo "screenshots written to $out"
