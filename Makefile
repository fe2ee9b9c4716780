# wsauth: the two commands a new machine needs are `make run` and `make test`.
# Everything they need is set up here or in the scripts they call.

CARGO ?= cargo
# Project-local tools (grpcurl in a venv) come first on every recipe's PATH,
# so the tests find them without anything installed system-wide.
export PATH := $(CURDIR)/.tools/bin:$(PATH)
# Test threads: each end-to-end test starts its own redis-server, auth and
# gateway processes; a few at a time keeps a 2-core machine responsive.
TEST_THREADS ?= 4

.PHONY: run cluster setup tools test test-setup-fresh test-js build bench bench-micro fuzz soak jwt fmt lint clean

## run: the whole stack locally (redis-server when on PATH, else the embedded store; auth; one gateway)
run:
	@bash deploy/run-local.sh

## cluster: redis-server, 2 auth and 3 gateways on loopback behind HAProxy (installed from Debian's
## packages when missing); clients use http://127.0.0.1:8090 (CLUSTER_PORT); Ctrl-C stops all (deploy/cluster.sh)
cluster:
	@bash deploy/cluster.sh

## setup: what the tests need (redis-server, grpcurl in .tools/, the browser tests' npm packages and chromium)
setup:
	@bash tests/setup/setup.sh

## test: every unit, conformance and end-to-end test, against private redis-servers on free ports
test: setup test-setup-fresh test-js
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace -- --test-threads=$(TEST_THREADS)

## test-js: the browser client's unit tests (Node's test runner) and a tsc --strict check of its
## types (tests/browser/types.ts); the browser itself is the e2e test `browser`
TSC := tests/browser/node_modules/typescript/bin/tsc
test-js:
	@if command -v node >/dev/null 2>&1; then node --test services/gateway/web/test/; \
	else echo "SKIPPED: the browser client's unit tests (node is missing)"; fi
	@if [ -f $(TSC) ]; then node $(TSC) --noEmit --strict --lib es2022,dom --module nodenext \
		--moduleResolution nodenext tests/browser/types.ts && echo "types: index.d.ts and react.d.ts check"; \
	else echo "SKIPPED: the type check (no tests/browser/node_modules: SKIP_BROWSER_TESTS=1)"; fi

## test-setup-fresh: the setup step from a fresh clone whose PATH lacks grpcurl (tests/setup/fresh-clone.sh)
test-setup-fresh:
	@bash tests/setup/fresh-clone.sh

## tools: where the tests' PATH finds grpcurl and redis-server, and that grpcurl runs
tools:
	@command -v grpcurl
	@command -v redis-server
	@grpcurl -version

## build: debug binaries in target/debug
build:
	$(CARGO) build --workspace --bins

## bench: the load generator against a private stack (release build); prints JSON lines and a markdown table
bench:
	$(CARGO) build --release --workspace --bins
	ulimit -n 20000 && ./target/release/wsauth-bench $(BENCH_ARGS)

## bench-micro: criterion micro-benchmarks of the hot functions
bench-micro:
	$(CARGO) bench -p wsauth-auth --bench hot_paths -- $(CRITERION_ARGS)
	$(CARGO) bench -p wsauth-gateway --bench frames -- $(CRITERION_ARGS)

## fuzz: every cargo-fuzz target (fuzz/) for FUZZ_SECONDS each (default 600), on stable; prints
## executions, exec/s, corpus size and findings per target (fuzz/run.sh). Not part of `make test` or CI.
## cargo-fuzz 0.13.2 is installed into .tools/ when missing. FUZZ_TARGETS picks some.
FUZZ_SECONDS ?= 600
fuzz:
	@test -x .tools/bin/cargo-fuzz || $(CARGO) install --locked --version 0.13.2 --root .tools cargo-fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh

## soak: a private stack under connection churn (every close path, aborted TCP) and publishes for
## SOAK_SECONDS (default 900); samples RSS, open files and the registry; fails if the registry does not
## return to 0 or open files grow. PROFILE=release (default) or debug. Not part of `make test` or CI.
SOAK_SECONDS ?= 900
PROFILE ?= release
SOAK_PROFILE := $(if $(filter debug dev,$(PROFILE)),dev,$(PROFILE))
SOAK_DIR := $(if $(filter debug dev,$(PROFILE)),debug,$(PROFILE))
soak:
	$(CARGO) build --profile $(SOAK_PROFILE) --workspace --bins
	ulimit -n 20000 && ./target/$(SOAK_DIR)/wsauth-bench soak --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

## jwt: print a development JWT for SUB (default alice) signed with `make run`'s secret
jwt:
	@bash deploy/run-local.sh --mint-jwt $(or $(SUB),alice)

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	# The fuzz crate is a workspace of its own: check it still builds.
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) check --manifest-path fuzz/Cargo.toml --bins

clean:
	$(CARGO) clean
	rm -rf .run .tools
