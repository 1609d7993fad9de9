#!/usr/bin/env bash
# Benchmark burrow against its peers with the shared harness (../shared/bench):
# builds the release binary (statically linked on x86_64 Linux, scripts/build-static.sh),
# then runs direct, haproxy, rathole, rathole-noise, bore, burrow (plain carrier) and
# burrow-tls (default TLS carrier) in one run, so every figure comes from the same machine
# state. Extra arguments go to the harness's run.sh
# (e.g. --quick, --rounds 2, --max-minutes 28, --adapters direct,burrow).
#   BURROW_SHARED  the shared directory holding bench/ (default: <repo>/../shared)
#   TUNNEL_BIN     use this burrow binary instead of building one
set -euo pipefail
root=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
cd "$root"
shared="${BURROW_SHARED:-$root/../shared}"
run="$shared/bench/run.sh"
[ -x "$run" ] || [ -f "$run" ] || { echo "bench.sh: no harness at $run (set BURROW_SHARED)" >&2; exit 1; }

if [ -z "${TUNNEL_BIN:-}" ]; then
    if [ "$(rustc -vV | sed -n 's/^host: //p')" = x86_64-unknown-linux-gnu ]; then
        # The build to deploy there: statically linked (scripts/build-static.sh).
        TUNNEL_BIN=$(bash scripts/build-static.sh)
    else
        cargo build --release -p burrow
        # Ask cargo where the binary went, so CARGO_TARGET_DIR and .cargo/config are honoured.
        target_dir=$(cargo metadata --format-version 1 --no-deps \
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
        TUNNEL_BIN="$target_dir/release/burrow"
    fi
    export TUNNEL_BIN
fi
[ -x "$TUNNEL_BIN" ] || { echo "bench.sh: $TUNNEL_BIN is not an executable" >&2; exit 1; }
echo "bench.sh: burrow binary $TUNNEL_BIN ($("$TUNNEL_BIN" --version 2>/dev/null | head -n 1))" >&2

log=$(mktemp "${TMPDIR:-/tmp}/burrow-bench.XXXXXX")
trap 'rm -f "$log"' EXIT
set +e
bash "$run" --adapter-dir bench/adapters \
    --adapters direct,haproxy,rathole,rathole-noise,bore,burrow,burrow-tls "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# The harness logs "run <id>: ... -> <results dir>" when it starts.
outdir=$(sed -n 's/^\[[0-9:]*\] run .* -> \(\/.*\)$/\1/p' "$log" | tail -n 1)
if [ -n "$outdir" ]; then
    echo "bench.sh: results in $outdir (report.md, results.jsonl, work/ has the adapter logs)" >&2
else
    echo "bench.sh: the harness did not report a results directory (exit $rc)" >&2
fi
exit "$rc"
