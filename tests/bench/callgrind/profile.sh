#!/usr/bin/env bash
# Usage: profile.sh LABEL BIN_DIR N CONCURRENCY
# Runs redis-server, auth and gateway under callgrind, warms up with 20 handshakes,
# zeroes the counters, drives N handshakes, dumps, then dumps an idle window as long;
# output in $PROF_OUT/LABEL.* (default /tmp/callgrind-out). A profiling aid, not a test.
set -euo pipefail
label=$1 bin=$2 n=$3 c=$4
out=${PROF_OUT:-/tmp/callgrind-out}; mkdir -p $out; rm -f $out/$label.*
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
rport=$(free_port); aport=$(free_port); gport=$(free_port)
dir=$(mktemp -d /tmp/callgrind-run.XXXX)
export JWT_SECRET=callgrind-secret-0123456789abcdef0123456789
vg="valgrind --tool=callgrind --fair-sched=yes --dump-instr=no"
$vg --callgrind-out-file=$out/$label.redis.cg redis-server --port $rport --save '' --appendonly no --dir $dir >$dir/redis.log 2>&1 &
rpid=$!
for i in $(seq 200); do redis-cli -p $rport ping >/dev/null 2>&1 && break; sleep 0.2; done
common="RUST_LOG=info LOG_FORMAT=json SHUTDOWN_GRACE_S=2"
env -i PATH=$PATH $common AUTH_LISTEN=127.0.0.1:$aport AUTH_METRICS_LISTEN=127.0.0.1:0 REDIS_URL=redis://127.0.0.1:$rport \
  JWT_HS256_SECRET=$JWT_SECRET INTERNAL_API_KEYS=callgrind-internal-key ADMIN_API_KEYS=callgrind-admin-key \
  REDIS_TIMEOUT_MS=30000 RPC_TIMEOUT_MS=60000 \
  $vg --callgrind-out-file=$out/$label.auth.cg $bin/wsauth-auth >$dir/auth.log 2>&1 &
apid=$!
for i in $(seq 600); do (echo > /dev/tcp/127.0.0.1/$aport) 2>/dev/null && break; sleep 0.2; done
env -i PATH=$PATH $common GATEWAY_LISTEN=127.0.0.1:$gport AUTH_URL=http://127.0.0.1:$aport AUTH_API_KEY=callgrind-internal-key \
  AUTH_CALL_TIMEOUT_MS=30000 \
  $vg --callgrind-out-file=$out/$label.gateway.cg $bin/wsauth-gateway >$dir/gateway.log 2>&1 &
gpid=$!
for i in $(seq 600); do curl -sf http://127.0.0.1:$gport/readyz >/dev/null 2>&1 && break; sleep 0.5; done
curl -s -o /dev/null -w 'readyz %{http_code}\n' http://127.0.0.1:$gport/readyz
python3 $(dirname "$0")/drive.py 127.0.0.1 $gport 20 $c
sleep 1
for p in $rpid $apid $gpid; do callgrind_control -z $p >/dev/null; done
redis-cli -p $rport config resetstat >/dev/null
t0=$(date +%s.%N)
python3 $(dirname "$0")/drive.py 127.0.0.1 $gport $n $c | tee $out/$label.drive.json
sleep 1
for p in $rpid $apid $gpid; do callgrind_control -d $p >/dev/null; done
t1=$(date +%s.%N)
redis-cli -p $rport info commandstats > $out/$label.redis-commandstats.txt
# The same length of time idle, so background work (timers, streams) can be subtracted.
idle=$(python3 -c "print(round($t1-$t0,2))"); echo "window ${idle}s" | tee $out/$label.window.txt
sleep $idle
for p in $rpid $apid $gpid; do callgrind_control -d $p >/dev/null; done
kill $gpid $apid; sleep 3; redis-cli -p $rport shutdown nosave >/dev/null 2>&1 || true
wait || true
for f in $dir/*.log; do cp $f $out/$label.$(basename $f); done
ls -la $out/$label.*
