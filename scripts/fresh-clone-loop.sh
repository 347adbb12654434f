#!/usr/bin/env bash
# Run `make test` N times in a row (default 5), each from a fresh clone of this repository's
# HEAD, as CI runs it (.ci/run, CI=true, no stdin); a line per run in OUT/summary, and the
# sandbox logs of a failed test module in OUT/runI-sandbox-logs.
# Usage: scripts/fresh-clone-loop.sh [N] [OUT]   (a flaky test shows up here, not in one run)
set -u
n=${1:-5}
out=${2:-/tmp/fleetd-loop}
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
echo "HEAD $(git -C "$repo" rev-parse --short HEAD) start $(date -u +%T)" > "$out/summary"
for i in $(seq 1 "$n"); do
  d=$(mktemp -d /tmp/fleetd-fresh.XXXXXX)
  git clone -q "$repo" "$d/repo"
  t0=$(date +%s)
  (cd "$d/repo" && CI=true FLEETD_SANDBOX_LOGS="$out/run$i-sandbox-logs" bash .ci/run \
    < /dev/null > "$out/run$i.log" 2>&1)
  rc=$?
  echo "run $i rc=$rc $(( $(date +%s) - t0 ))s: $(grep -E '[0-9]+ (passed|failed)' "$out/run$i.log" | tail -1)" >> "$out/summary"
  rm -rf "$d"
done
echo "end $(date -u +%T)" >> "$out/summary"
cat "$out/summary"
