#!/usr/bin/env bash
# Ir per handshake per process: (active window - equal idle window) / N
label=$1 n=${2:-300}
cd ${PROF_OUT:-/tmp/callgrind-out}
for p in auth gateway redis; do
  a=$(grep -m1 '^summary' $label.$p.cg.1 | awk '{print $2}'); i=$(grep -m1 '^summary' $label.$p.cg.2 | awk '{print $2}')
  echo "$label $p active=$a idle=$i per_handshake=$(( (a - i) / n ))"
done
