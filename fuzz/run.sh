#!/usr/bin/env bash
# `make fuzz`: every cargo-fuzz target for FUZZ_SECONDS each, one after the
# other, on stable (--sanitizer none: the workspace forbids unsafe code, so
# ASan would find little that the targets' own assertions do not). Prints per
# target: executions, executions/s, corpus size and findings (files libFuzzer
# left in fuzz/artifacts/<target>/). Exits non-zero when anything was found.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-600}
targets=${FUZZ_TARGETS:-first_frame event_id bearer http_headers grpc_requests}
cargo_fuzz=${CARGO_FUZZ:-$PWD/.tools/bin/cargo-fuzz}
logs=fuzz/logs
mkdir -p "$logs"

summary=()
found_any=0
for target in $targets; do
    corpus=fuzz/corpus/$target
    artifacts=fuzz/artifacts/$target
    mkdir -p "$corpus" "$artifacts"
    before=$(find "$artifacts" -type f | wc -l)
    extra=()
    [ -d "fuzz/seeds/$target" ] && extra+=("fuzz/seeds/$target")
    flags=(-max_total_time="$seconds" -print_final_stats=1)
    [ -f "fuzz/dicts/$target.dict" ] && flags+=(-dict="fuzz/dicts/$target.dict")
    echo "== $target: ${seconds} s (log: $logs/$target.log)"
    "$cargo_fuzz" fuzz run --fuzz-dir fuzz --sanitizer none "$target" "$corpus" "${extra[@]}" \
        -- "${flags[@]}" >"$logs/$target.log" 2>&1
    status=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$target.log" | grep -o '[0-9]*$' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$logs/$target.log" | grep -o '[0-9]*$' | tail -1)
    corpus_size=$(find "$corpus" -type f | wc -l)
    findings=$(( $(find "$artifacts" -type f | wc -l) - before ))
    if [ "$status" -ne 0 ] && [ "$findings" -eq 0 ]; then
        # A failed build or a crash that left no artifact still counts.
        findings="exit $status"
    fi
    [ "$findings" != 0 ] && found_any=1
    line="$target: ${execs:-?} executions, ${rate:-?} exec/s, corpus $corpus_size, findings $findings"
    echo "$line"
    summary+=("$line")
done
echo
echo "fuzz summary (${seconds} s per target):"
printf '  %s\n' "${summary[@]}"
if [ "$found_any" -ne 0 ]; then
    echo "findings: see fuzz/artifacts/<target>/ and fuzz/logs/<target>.log;"
    echo "replay one with: .tools/bin/cargo-fuzz fuzz run --fuzz-dir fuzz --sanitizer none <target> <artifact>"
    exit 1
fi
