#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECS seconds (default 60), or the targets
# named as arguments. Used by `make fuzz`; see SECURITY.md "Fuzzing".
#
# The committed seeds (seeds/<target>) are read but never written: what a
# run discovers goes to target/corpus/<target> (gitignored) and crashes to
# artifacts/<target>/ (gitignored), with the exact reproduce command printed.
# The toolchain here is stable rustc: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass
# its -Z flags. No sanitizer: the core is safe Rust (unsafe_code is denied),
# so ASan would only slow the search down; overflow checks and debug
# assertions stay on (cargo-fuzz's default).
set -euo pipefail
cd "$(dirname "$0")"
FUZZ_SECS=${FUZZ_SECS:-60}
FUZZ_FLAGS=${FUZZ_FLAGS:-}
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(jwt path_route config sync ratelimit header_map signatures)
cargo fuzz build --fuzz-dir . -s none
status=0
for t in "${targets[@]}"; do
    mkdir -p "target/corpus/$t" "artifacts/$t"
    dict=()
    [ -f "dict/$t.dict" ] && dict=("-dict=dict/$t.dict")
    echo "== fuzz $t for ${FUZZ_SECS}s"
    log="target/fuzz-$t.log"
    if cargo fuzz run --fuzz-dir . -s none "$t" "target/corpus/$t" "seeds/$t" -- \
        -max_total_time="$FUZZ_SECS" -artifact_prefix="artifacts/$t/" -print_final_stats=1 \
        "${dict[@]}" $FUZZ_FLAGS >"$log" 2>&1; then
        grep -E '^stat::number_of_executed_units|^stat::average_exec_per_sec|cov: .*corp' "$log" | tail -3
    else
        status=1
        echo "!! $t found a crash (log: fuzz/$log):"
        grep -E 'panicked at|^thread|SUMMARY|Test unit written|Reproduce with' -A2 "$log" | head -30
    fi
done
exit $status
