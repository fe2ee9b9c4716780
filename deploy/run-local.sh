#!/usr/bin/env bash
# `make run`: the whole wsauth stack on this machine, in the foreground.
#
# - redis-server on 127.0.0.1:$REDIS_PORT (default 6380, never the system's
#   6379) when redis-server is on PATH; otherwise auth's embedded store;
# - wsauth-auth on 127.0.0.1:50051, wsauth-gateway on 127.0.0.1:8080;
# - development secrets generated once into .run/env (git-ignored), so that
#   `make jwt SUB=alice` can mint JWTs the running auth accepts.
#
# `deploy/run-local.sh --mint-jwt USER` prints a JWT for USER and exits.
# `make cluster` (deploy/cluster.sh) runs several replicas behind HAProxy.
set -euo pipefail
source "$(dirname "$0")/local-lib.sh"

REDIS_PORT="${REDIS_PORT:-6380}"
AUTH_ADDR="${AUTH_LISTEN:-127.0.0.1:50051}"
GATEWAY_ADDR="${GATEWAY_LISTEN:-127.0.0.1:8080}"

load_dev_secrets
build_services

if [[ "${1:-}" == "--mint-jwt" ]]; then
    mint_dev_jwt "${2:-alice}"
    exit
fi

redis_url=""
if command -v redis-server >/dev/null 2>&1; then
    start_redis "$REDIS_PORT" "$RUN_DIR"
    redis_url="$REDIS_URL"
else
    echo "redis-server not found: auth uses its embedded in-memory store (one replica only)"
    unset REDIS_URL
fi

AUTH_LISTEN="$AUTH_ADDR" \
    INTERNAL_API_KEYS="$WSAUTH_INTERNAL_KEY" ADMIN_API_KEYS="$WSAUTH_ADMIN_KEY" \
    spawn auth "$BIN/wsauth-auth"

GATEWAY_LISTEN="$GATEWAY_ADDR" AUTH_URL="http://$AUTH_ADDR" AUTH_API_KEY="$WSAUTH_INTERNAL_KEY" \
    spawn gateway "$BIN/wsauth-gateway"

wait_http_ok "http://$GATEWAY_ADDR/readyz" || true

cat <<MSG

wsauth is running (Ctrl-C stops everything):
  gateway  http://$GATEWAY_ADDR        (demo page: open it in a browser)
  auth     $AUTH_ADDR (gRPC; grpcurl -plaintext $AUTH_ADDR list)
  redis    ${redis_url:-embedded in-memory store}

In another terminal:
  source .run/env                         # keys and the JWT secret of this stack
  JWT=\$(make -s jwt SUB=alice)            # a development JWT
  curl -s -H "Authorization: Bearer \$JWT" http://$GATEWAY_ADDR/token/ws

MSG

wait_any_child
