#!/usr/bin/env bash
# `make cluster`: a multi-replica wsauth on this machine, in the foreground,
# for demos and load tests: one redis-server, 2 auth and 3 gateways on
# loopback, behind HAProxy (deploy/haproxy.cfg, the same file compose uses).
#
#   127.0.0.1:$CLUSTER_PORT (8090)            HAProxy: what clients use
#   the next three ports (8091, 8092, 8093)   the gateways (HAProxy's backends)
#   the next two (8094, 8095)                 auth (gRPC)
#   the next two (8096, 8097)                 auth's metrics
#   127.0.0.1:$CLUSTER_REDIS_PORT (6381)      redis-server (never the system's 6379)
#
# Each gateway balances over both auth replicas (AUTH_URL lists them). Logs
# go to .run/cluster/*.log. Ctrl-C stops everything. The secrets are those
# of `make run` (.run/env), so `make jwt` works for both. The deploy test
# (tests/e2e/deploy/cluster.rs) runs this script on ports of its own.
#
# HAProxy comes from Debian's packages: installed with apt-get when missing
# and running as root (WSAUTH_NO_APT=1 forbids that); otherwise one line
# says what to install, and nothing starts.
set -euo pipefail
source "$(dirname "$0")/local-lib.sh"

LB_PORT="${CLUSTER_PORT:-8090}"
REDIS_PORT="${CLUSTER_REDIS_PORT:-6381}"
GATEWAY_PORTS=($((LB_PORT + 1)) $((LB_PORT + 2)) $((LB_PORT + 3)))
AUTH_PORTS=($((LB_PORT + 4)) $((LB_PORT + 5)))
METRICS_PORTS=($((LB_PORT + 6)) $((LB_PORT + 7)))
LOGS="$RUN_DIR/cluster"
mkdir -p "$LOGS"

stop() { echo "cluster: $*" >&2; exit 1; }

for tool in redis-server curl; do
    command -v "$tool" >/dev/null 2>&1 \
        || stop "$tool is missing: install it (Debian: apt-get install $tool; make setup does redis-server) and rerun"
done
if ! command -v haproxy >/dev/null 2>&1; then
    hint="haproxy is missing: install it (as root: apt-get install haproxy) and rerun"
    [[ "$(id -u)" == 0 && "${WSAUTH_NO_APT:-}" != 1 ]] && command -v apt-get >/dev/null 2>&1 \
        || stop "$hint"
    echo "cluster: installing haproxy (apt-get)"
    apt-get update -qq || stop "apt-get update failed; $hint"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null \
        || stop "apt-get install haproxy failed; $hint"
    command -v haproxy >/dev/null 2>&1 || stop "haproxy still missing after apt-get"
fi

load_dev_secrets
build_services

start_redis "$REDIS_PORT" "$LOGS"

auth_urls=()
for i in 1 2; do
    AUTH_LISTEN="127.0.0.1:${AUTH_PORTS[i - 1]}" AUTH_METRICS_LISTEN="127.0.0.1:${METRICS_PORTS[i - 1]}" \
        INTERNAL_API_KEYS="$WSAUTH_INTERNAL_KEY" ADMIN_API_KEYS="$WSAUTH_ADMIN_KEY" \
        spawn "auth-$i" "$BIN/wsauth-auth" >>"$LOGS/auth-$i.log" 2>&1
    auth_urls+=("http://127.0.0.1:${AUTH_PORTS[i - 1]}")
done
AUTH_URLS="$(IFS=,; echo "${auth_urls[*]}")"

for i in 1 2 3; do
    GATEWAY_LISTEN="127.0.0.1:${GATEWAY_PORTS[i - 1]}" GATEWAY_ID="gateway-$i" \
        AUTH_URL="$AUTH_URLS" AUTH_API_KEY="$WSAUTH_INTERNAL_KEY" \
        spawn "gateway-$i" "$BIN/wsauth-gateway" >>"$LOGS/gateway-$i.log" 2>&1
done
for i in 1 2 3; do
    wait_http_ok "http://127.0.0.1:${GATEWAY_PORTS[i - 1]}/readyz" \
        || stop "gateway-$i is not ready after 10 s (see $LOGS/gateway-$i.log)"
done

LB_BIND="127.0.0.1:$LB_PORT" GATEWAY_1="127.0.0.1:${GATEWAY_PORTS[0]}" \
    GATEWAY_2="127.0.0.1:${GATEWAY_PORTS[1]}" GATEWAY_3="127.0.0.1:${GATEWAY_PORTS[2]}" \
    spawn haproxy haproxy -db -f deploy/haproxy.cfg >>"$LOGS/haproxy.log" 2>&1
wait_http_ok "http://127.0.0.1:$LB_PORT/readyz" \
    || stop "HAProxy does not answer on 127.0.0.1:$LB_PORT (see $LOGS/haproxy.log)"

cat <<MSG

wsauth cluster is running (Ctrl-C stops everything; logs in $LOGS/):
  clients   http://127.0.0.1:$LB_PORT          HAProxy → 3 gateways (demo page: open it in a browser)
  gateways  http://127.0.0.1:${GATEWAY_PORTS[0]} ${GATEWAY_PORTS[1]} ${GATEWAY_PORTS[2]}  (each has /metrics)
  auth      127.0.0.1:${AUTH_PORTS[0]} ${AUTH_PORTS[1]}              (gRPC; metrics http://127.0.0.1:${METRICS_PORTS[0]}/metrics, ${METRICS_PORTS[1]})
  redis     $REDIS_URL

In another terminal:
  source .run/env                          # keys and the JWT secret of this stack
  JWT=\$(make -s jwt SUB=alice)             # a development JWT
  curl -s -H "Authorization: Bearer \$JWT" http://127.0.0.1:$LB_PORT/token/ws
  grpcurl -plaintext -H "authorization: Bearer \$WSAUTH_ADMIN_KEY" 127.0.0.1:${AUTH_PORTS[0]} wsauth.v1.AdminService/ListGateways

MSG

wait_any_child
