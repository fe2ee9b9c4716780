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
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR="$PWD/.run"
REDIS_PORT="${REDIS_PORT:-6380}"
AUTH_ADDR="${AUTH_LISTEN:-127.0.0.1:50051}"
GATEWAY_ADDR="${GATEWAY_LISTEN:-127.0.0.1:8080}"
mkdir -p "$RUN_DIR"

random_secret() { head -c 32 /dev/urandom | base64 | tr -d '/+=\n'; }

if [[ ! -f "$RUN_DIR/env" ]]; then
    umask 077
    cat > "$RUN_DIR/env" <<ENV
export JWT_HS256_SECRET=$(random_secret)
export WSAUTH_INTERNAL_KEY=$(random_secret)
export WSAUTH_ADMIN_KEY=$(random_secret)
ENV
fi
# shellcheck source=/dev/null
source "$RUN_DIR/env"
export JWT_HS256_SECRET

# Progress on stderr (stdout stays the JWT for `make jwt`): a first build
# takes minutes, which must not look like a hang.
echo "==> building wsauth-auth and wsauth-gateway (debug; the first build takes a few minutes)" >&2
cargo build --bins -p wsauth-auth -p wsauth-gateway
BIN=target/debug

if [[ "${1:-}" == "--mint-jwt" ]]; then
    exec "$BIN/wsauth-auth" mint-jwt --sub "${2:-alice}"
fi

pids=()
cleanup() {
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

redis_url=""
if command -v redis-server >/dev/null 2>&1; then
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$RUN_DIR" --logfile "$RUN_DIR/redis.log" &
    pids+=($!)
    redis_url="redis://127.0.0.1:$REDIS_PORT"
    redis_up=false
    for _ in $(seq 50); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; then redis_up=true; break; fi
        sleep 0.1
    done
    if [[ "$redis_up" != true ]]; then
        echo "redis-server did not start on port $REDIS_PORT (see $RUN_DIR/redis.log; set REDIS_PORT to use another port)" >&2
        exit 1
    fi
else
    echo "redis-server not found: auth uses its embedded in-memory store (one replica only)"
fi

if [[ -n "$redis_url" ]]; then export REDIS_URL="$redis_url"; else unset REDIS_URL; fi
AUTH_LISTEN="$AUTH_ADDR" \
    INTERNAL_API_KEYS="$WSAUTH_INTERNAL_KEY" ADMIN_API_KEYS="$WSAUTH_ADMIN_KEY" \
    "$BIN/wsauth-auth" &
pids+=($!)

GATEWAY_LISTEN="$GATEWAY_ADDR" AUTH_URL="http://$AUTH_ADDR" AUTH_API_KEY="$WSAUTH_INTERNAL_KEY" \
    "$BIN/wsauth-gateway" &
pids+=($!)

for _ in $(seq 100); do
    curl -fsS "http://$GATEWAY_ADDR/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done

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

wait -n "${pids[@]}"
