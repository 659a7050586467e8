#!/usr/bin/env bash
# A coordinator and N workers on this machine's loopback, until Ctrl-C.
#   deploy/local-network.sh [N]          (default 3 workers)
# Then, in another shell:  olc workers --coordinator <address printed below>
# The coordinator runs a faucet: `olc account deposit N --coordinator <address>` funds a key.
set -euo pipefail
n=${1:-3}
olc=${OLC:-$(dirname "$0")/../target/release/olc}
if [ ! -x "$olc" ]; then
    echo "building olc (release)…" >&2
    cargo build --release --manifest-path "$(dirname "$0")/../Cargo.toml" >&2
fi
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait; rm -rf "$dir"' EXIT INT TERM

"$olc" coordinator start --listen /ip4/127.0.0.1/udp/0/quic-v1 --data "$dir/coordinator" --faucet \
    >"$dir/coordinator.out" 2>"$dir/coordinator.log" &
for _ in $(seq 100); do
    addr=$(grep -m1 '^listening on ' "$dir/coordinator.out" 2>/dev/null | cut -d' ' -f3 || true)
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "${addr:-}" ] || { echo "coordinator did not start:" >&2; cat "$dir/coordinator.log" >&2; exit 1; }
echo "coordinator: $addr"

for i in $(seq "$n"); do
    "$olc" worker start --coordinator "$addr" --listen /ip4/127.0.0.1/udp/0/quic-v1 \
        --data "$dir/worker$i" --advert-interval 2s --price $((5 + i)) \
        >"$dir/worker$i.out" 2>"$dir/worker$i.log" &
done
# Each worker stakes from the faucet once its key exists: unstaked workers are not matched.
for i in $(seq "$n"); do
    for _ in $(seq 100); do [ -f "$dir/worker$i/key.pem" ] && break; sleep 0.1; done
    "$olc" account deposit 10000 --coordinator "$addr" --key "$dir/worker$i/key.pem" >/dev/null
    "$olc" account stake 1000 --coordinator "$addr" --key "$dir/worker$i/key.pem" >/dev/null
done
echo "$n workers started and staked; logs in $dir. List them with:"
echo "  $olc workers --coordinator $addr"
wait
