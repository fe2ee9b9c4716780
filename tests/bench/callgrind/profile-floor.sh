#!/usr/bin/env bash
# Usage: profile-floor.sh LABEL BENCH_BIN N CONCURRENCY
# The bench's floor server (`wsauth-bench floor`) under callgrind, driven by the same
# handshakes as profile.sh (drive.py): 20 warm-up handshakes, counters zeroed, N handshakes,
# a dump, then an idle window as long and a second dump. Ir per handshake:
# (summary of .floor.cg.1 - summary of .floor.cg.2) / N. A profiling aid, not a test.
set -euo pipefail
label=$1 bench=$2 n=$3 c=$4
out=${PROF_OUT:-/tmp/callgrind-out}; mkdir -p "$out"; rm -f "$out/$label".*
dir=$(mktemp -d /tmp/callgrind-floor.XXXX)
mkfifo "$dir/stdin"
valgrind --tool=callgrind --fair-sched=yes --dump-instr=no --callgrind-out-file="$out/$label.floor.cg" \
  "$bench" floor <"$dir/stdin" >"$dir/stdout" 2>"$dir/stderr" &
fpid=$!
# The floor serves until its stdin ends: hold it open for the run.
exec 3>"$dir/stdin"
for _ in $(seq 600); do grep -q listening "$dir/stdout" 2>/dev/null && break; sleep 0.2; done
addr=$(python3 -c "import json; print(json.loads(open('$dir/stdout').readline())['addr'])")
host=${addr%:*} port=${addr##*:}
export JWT_SECRET=callgrind-secret-0123456789abcdef0123456789
python3 "$(dirname "$0")/drive.py" "$host" "$port" 20 "$c"
sleep 1
callgrind_control -z $fpid >/dev/null
t0=$(date +%s.%N)
python3 "$(dirname "$0")/drive.py" "$host" "$port" "$n" "$c" | tee "$out/$label.drive.json"
sleep 1
callgrind_control -d $fpid >/dev/null
t1=$(date +%s.%N)
idle=$(python3 -c "print(round($t1-$t0,2))"); echo "window ${idle}s" | tee "$out/$label.window.txt"
sleep "$idle"
callgrind_control -d $fpid >/dev/null
exec 3>&-
wait $fpid || true
a=$(grep -m1 '^summary' "$out/$label.floor.cg.1" | awk '{print $2}')
i=$(grep -m1 '^summary' "$out/$label.floor.cg.2" | awk '{print $2}')
echo "$label floor active=$a idle=$i per_handshake=$(( (a - i) / n ))"
