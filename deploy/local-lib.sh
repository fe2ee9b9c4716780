# Helpers shared by `make run` (deploy/run-local.sh) and `make cluster`
# (deploy/cluster.sh). Sourced, not run: it cds to the repository root and
# defines functions; nothing starts until a script calls them.
# shellcheck shell=bash

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# WSAUTH_RUN_DIR: another place for the secrets and logs (the deploy test's own).
RUN_DIR="${WSAUTH_RUN_DIR:-$PWD/.run}"
mkdir -p "$RUN_DIR"

# Development secrets, generated once into .run/env (git-ignored) and
# shared by every local stack, so `make jwt` mints JWTs that any of them
# accepts. Exports JWT_HS256_SECRET, WSAUTH_INTERNAL_KEY, WSAUTH_ADMIN_KEY.
load_dev_secrets() {
    random_secret() { head -c 32 /dev/urandom | base64 | tr -d '/+=\n'; }
    if [[ ! -f "$RUN_DIR/env" ]]; then
        (
            umask 077
            cat > "$RUN_DIR/env" <<ENV
export JWT_HS256_SECRET=$(random_secret)
export WSAUTH_INTERNAL_KEY=$(random_secret)
export WSAUTH_ADMIN_KEY=$(random_secret)
ENV
        )
    fi
    # shellcheck source=/dev/null
    source "$RUN_DIR/env"
    export JWT_HS256_SECRET
}

# Builds both services (debug) and sets BIN to where they are.
# WSAUTH_BIN_DIR (as the test harness reads it) uses binaries built elsewhere.
build_services() {
    if [[ -n "${WSAUTH_BIN_DIR:-}" ]]; then
        BIN="$WSAUTH_BIN_DIR"
        return
    fi
    # Progress on stderr (stdout stays the JWT for `make jwt`): a first build
    # takes minutes, which must not look like a hang.
    # The whole workspace, as `make build` and `make test` build it: the same
    # features everywhere, so one build's dependencies serve all of them.
    echo "==> building the wsauth binaries (debug; the first build takes a few minutes)" >&2
    cargo build --workspace --bins
    BIN=target/debug
}

# Prints a development JWT for user $1, signed with the dev secret.
mint_dev_jwt() {
    "$BIN/wsauth-auth" mint-jwt --sub "${1:-alice}"
}

# Children started with `spawn` are stopped (SIGTERM, then waited for) when
# the script exits, on Ctrl-C and on SIGTERM.
pids=()
names=()
spawn() {
    local name="$1"; shift
    "$@" &
    pids+=($!)
    names+=("$name")
}
stop_all() {
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop_all EXIT
# Ctrl-C and SIGTERM stop everything and end the script right there.
trap 'stop_all; exit 130' INT TERM

# Waits until the first child exits, then says which one it was.
wait_any_child() {
    local status=0
    wait -n "${pids[@]}" || status=$?
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            echo "${names[$i]} stopped (exit status $status): stopping the others" >&2
            break
        fi
    done
}

# Waits up to $3 tenths of a second for TCP port $2 on host $1.
wait_tcp() {
    local host="$1" port="$2" tries="${3:-50}"
    for _ in $(seq "$tries"); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# Starts a private redis-server on 127.0.0.1:$1 (never the system's 6379),
# its files under $2; sets REDIS_URL. Stops the script if it does not answer.
start_redis() {
    local port="$1" dir="$2"
    if [[ "$port" == 6379 ]]; then
        echo "refusing to start a Redis on 6379 (the system's): pick another port" >&2
        exit 1
    fi
    mkdir -p "$dir"
    spawn redis redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$dir" --logfile "$dir/redis.log"
    if ! wait_tcp 127.0.0.1 "$port"; then
        echo "redis-server did not start on port $port (see $dir/redis.log; pick another port)" >&2
        exit 1
    fi
    export REDIS_URL="redis://127.0.0.1:$port"
}

# Waits up to 10 s for an HTTP 200 from $1.
wait_http_ok() {
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
