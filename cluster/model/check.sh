#!/bin/sh
# Checks cluster/model/pair.pml with spin (Debian package "spin"; ctest label "model").
#
# 1. The model: exhaustive search (-DSAFETY), no assertion violated, no invalid end state, the
#    search complete (no "search depth too small", no "Search not completed").
# 2. Every mutation (MUT_*) and every configuration as the C code is today (ASIS_*) must be
#    caught: spin must report an assertion violated.
# 3. Every reachability goal (REACH_*) must be reached (its assert(!goal) violated), so the
#    model does fail over and confirm on both nodes.
# Runs in a temporary folder; each pan run is bounded by PAIR_MODEL_TIMEOUT seconds (300).
# Exit status: 0 when all of the above hold, 1 otherwise.
set -u
here=$(cd "$(dirname "$0")" && pwd)
model=$here/pair.pml
limit=${PAIR_MODEL_TIMEOUT:-300}
for tool in spin gcc; do
    if ! command -v $tool >/dev/null 2>&1; then
        echo "pair model: $tool not found (apt-get install spin gcc)" >&2
        exit 1
    fi
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pair-model.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
cd "$tmp" || exit 1
cp "$model" pair.pml
bad=0

# run NAME FLAGS...: builds and runs pan with the model's -D FLAGS; leaves NAME.out; prints
# nothing. Sets $verdict to clean / violated / incomplete / broken, and $summary.
run() {
    name=$1
    shift
    rm -f pan pan.* pair.pml.trail
    if ! spin -a "$@" pair.pml >"$name.spin" 2>&1; then
        verdict=broken
        summary="spin -a failed: $(tail -1 "$name.spin")"
        return
    fi
    if ! gcc -O2 -w -DSAFETY -o pan pan.c >"$name.gcc" 2>&1; then
        verdict=broken
        summary="gcc failed: $(tail -1 "$name.gcc")"
        return
    fi
    timeout "$limit" ./pan -m100000 -w26 >"$name.out" 2>&1
    rc=$?
    states=$(awk '/states, stored/ {print $1; exit}' "$name.out")
    depth=$(sed -n 's/.*depth reached \([0-9]*\).*/\1/p' "$name.out" | head -1)
    secs=$(sed -n 's/^pan: elapsed time \([0-9.]*\).*/\1/p' "$name.out" | head -1)
    summary="${states:-?} states, depth ${depth:-?}, ${secs:-?} s"
    if [ $rc -eq 124 ]; then
        verdict=incomplete
        summary="timed out after $limit s"
    elif grep -q "assertion violated" "$name.out"; then
        verdict=violated
        summary="$summary: $(grep -m1 'assertion violated' "$name.out" | sed 's/^pan:1: //')"
    elif grep -qE "errors: [1-9]" "$name.out"; then
        verdict=broken
        summary="$summary: $(grep -m1 -E '^pan:' "$name.out")"
    elif grep -qE "search depth too small|Search not completed|max search depth too small" \
        "$name.out" || ! grep -q "errors: 0" "$name.out"; then
        verdict=incomplete
    else
        verdict=clean
    fi
}

run model
echo "pair model: $verdict: $summary"
if [ "$verdict" != clean ]; then
    bad=1
    cat model.out
    [ -f pair.pml.trail ] && spin -t -p pair.pml | tail -60
fi

# Each must be caught. ASIS_*: the C code of today (see pair.pml); MUT_*: broken rules.
for m in ASIS_HELLO_NO_LEASE ASIS_HELLO_LAST_LSN MUT_ALONE_EARLY MUT_INSYNC_LATE \
    MUT_GRANT_BEHIND MUT_KEEP_SB MUT_NO_LEASE_GATE MUT_NO_RESET MUT_EARLY_EXPIRY; do
    run "$m" "-D$m"
    if [ "$verdict" = violated ]; then
        echo "pair model: $m caught: $summary"
    else
        echo "pair model: $m NOT caught ($verdict): $summary"
        bad=1
    fi
done

# Each must be reached.
for g in REACH_FAILOVER REACH_BOTH REACH_REPAIR REACH_RESET; do
    run "$g" "-D$g"
    if [ "$verdict" = violated ]; then
        echo "pair model: $g reached: $summary"
    else
        echo "pair model: $g NOT reached ($verdict): $summary"
        bad=1
    fi
done

if [ $bad -eq 0 ]; then
    echo "pair model: OK"
else
    echo "pair model: FAILED"
fi
exit $bad
