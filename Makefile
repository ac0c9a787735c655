# meshgate — the commands the README promises.
#
#   make build   release .wasm (target/wasm32-wasip1/release/meshgate_filter.wasm)
#   make test    build, then every test: core tables, control plane (SQLite, and
#                PostgreSQL when reachable), the .wasm in the wasmtime host
#   make run     the demo: control plane, Envoy with the filter, an echo upstream
#   make e2e     real Envoy + control plane end-to-end groups (part of make test)
#   make lint    clippy (unwrap/expect/panic denied in filter crates) + rustfmt check
#   make fmt     format everything
#   make soak    SOAK_SECS (600) of mixed traffic through Envoy: answers, memory curve
#   make fuzz    the cargo-fuzz targets, FUZZ_SECS (60) each
#   make bench   side-by-side Envoy benchmark + core micro-benchmarks
#                (bench-envoy, bench-core; bench-cp: control-plane throughput)

CARGO ?= cargo
WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/release/meshgate_filter.wasm

include envoy/envoy.mk

.PHONY: all build wasm-target test test-native lint fmt run smoke clean

all: build

wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

build: wasm-target
	$(CARGO) build -p meshgate-filter --target $(WASM_TARGET) --release
	@ls -l $(WASM) | awk '{print "built " $$NF " (" $$5 " bytes)"}'

# The wasmtime harness checks that the .wasm is newer than filter/ sources, so
# `test` always builds it first; then the real-Envoy end-to-end runner.
test: build $(ENVOY) login-harness
	$(CARGO) test --workspace
	ENVOY=$(ENVOY) python3 -m unittest bench/test_run.py
	$(MAKE) --no-print-directory envoy-e2e
	$(MAKE) --no-print-directory istio-check

# The control plane's login-flow tests need a real OpenID provider (npm
# `oidc-provider`) and headless Chromium (Debian's `chromium`, driven by npm
# `playwright-core`): npm ci into control-plane/tests/harness when the lock
# file is newer than the install, apt-get chromium when missing. Those tests
# fail with "run `make login-harness`" when this step was skipped.
LOGIN_HARNESS := control-plane/tests/harness
.PHONY: login-harness
login-harness:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }
	@[ $(LOGIN_HARNESS)/node_modules/.package-lock.json -nt $(LOGIN_HARNESS)/package-lock.json ] || \
		(cd $(LOGIN_HARNESS) && npm ci --no-audit --no-fund)

# The end-to-end runner (also `make e2e`) needs the current .wasm.
envoy-e2e: build

lint: wasm-target
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p meshgate-filter --target $(WASM_TARGET) -- -D warnings

fmt:
	$(CARGO) fmt --all

# The demo: control plane (SQLite under ./data), echo upstream, and Envoy with
# 2 workers whose filter follows the control plane's sync feed.
run: build $(ENVOY)
	$(CARGO) build -p meshgate
	ENVOY=$(ENVOY) MESHGATE_WASM=$(WASM) MESHGATE_BIN=target/debug/meshgate python3 envoy/run_demo.py

smoke: build $(ENVOY)
	ENVOY=$(ENVOY) MESHGATE_WASM=$(WASM) bash envoy/smoke.sh

clean:
	$(CARGO) clean

# Side-by-side Envoy benchmark: one Envoy per variant (baseline, no-op Wasm,
# native jwt_authn + local_ratelimit, meshgate with HS256/ES256/EdDSA/API keys,
# first-seen tokens, Envoy ext_authz → a release control plane the script
# starts), wrk on the other core; prints ratios and writes
# bench/results.md. Installs wrk and taskset (Debian) when missing, and
# `cryptography` into .venv (ES256/EdDSA tokens).
# Options: make bench BENCH_ARGS="--duration 10 --rounds 5".
NOOP_WASM := bench/noop-filter/target/$(WASM_TARGET)/release/meshgate_bench_noop.wasm
BENCH_ARGS ?=

.PHONY: bench bench-envoy bench-tools bench-core bench-cp bench-revocation bench-v8
bench: bench-envoy bench-revocation bench-core bench-v8

# Revocation latency: 100 revocations of five kinds through the control plane's
# API, timed until both Envoy workers refuse them (p50/p90/p99/max printed).
bench-revocation: build $(ENVOY)
	$(CARGO) build -p meshgate
	MESHGATE_E2E_ONLY=sync ENVOY=$(ENVOY) MESHGATE_WASM=$(MESHGATE_WASM) \
		MESHGATE_BIN=$(abspath target/debug/meshgate) python3 envoy/e2e/run.py

bench-tools: $(ENVOY)
	@command -v wrk >/dev/null && command -v taskset >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq wrk util-linux; }
	@$(VENV)/bin/python -c 'import cryptography' 2>/dev/null || \
		$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
			--only-binary=:all: cryptography

bench-envoy: build bench-tools
	CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
		$(CARGO) build --release -p meshgate
	$(CARGO) build --manifest-path bench/noop-filter/Cargo.toml --target $(WASM_TARGET) --release
	$(CARGO) build --release -p meshgate-bench-pace
	ENVOY=$(ENVOY) MESHGATE_WASM=$(WASM) MESHGATE_BENCH_NOOP_WASM=$(NOOP_WASM) \
		$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

# Core micro-benchmarks (native): cost per decision for each credential
# type, with a rate limit, with 10^5 revocations.
bench-core:
	$(CARGO) bench -p meshgate-core --bench decide

# The core compiled to wasm32 like the filter and timed under node's V8, no
# Envoy: first-seen signatures per algorithm (p256's ES256 beside meshgate's
# per-key tables) and warm decisions, in microseconds. Skipped without node.
V8_WASM := target/$(WASM_TARGET)/release/meshgate_bench_v8.wasm
bench-v8: wasm-target
	@command -v node >/dev/null || { echo "bench-v8: node not found, skipped"; exit 0; }; \
		$(CARGO) build -p meshgate-bench-v8 --target $(WASM_TARGET) --release && \
		node --no-warnings bench/v8-core/run.mjs $(V8_WASM)

# Control-plane throughput on SQLite, in process: POST /api/v1/apikeys/verify
# and POST /api/v1/auth/refresh (args: seconds per endpoint, clients). A thin
# LTO keeps the build short; the numbers are for comparison between commits.
bench-cp:
	CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
		$(CARGO) run --release -p meshgate --example bench -- 5 8

# Soak (issue 11, SECURITY.md): SOAK_SECS seconds (default 600) of steady mixed
# traffic (SOAK_RATE req/s, default 100) through Envoy (2 workers) + the control
# plane, with revocations and signing-key rotations meanwhile; checks every
# answer, samples Envoy's memory (RSS, admin /memory) and stats, and writes the
# curve to bench/soak.md (runs of 600 s or more; shorter ones to target/soak.md).
SOAK_SECS ?= 600
.PHONY: soak
soak: build $(ENVOY)
	$(CARGO) build -p meshgate
	SOAK_SECS=$(SOAK_SECS) ENVOY=$(ENVOY) MESHGATE_WASM=$(MESHGATE_WASM) \
		MESHGATE_BIN=$(abspath target/debug/meshgate) python3 envoy/e2e/soak.py

# Fuzzing (issue 11, SECURITY.md): cargo-fuzz targets over the pure core in
# fuzz (its own workspace): jwt, path_route, config, sync, ratelimit, header_map,
# signatures (meshgate's ES256 and EdDSA checks against p256 and ed25519-compact),
# FUZZ_SECS seconds each. Installs cargo-fuzz when missing; stable rustc is
# enough (fuzz/run.sh sets RUSTC_BOOTSTRAP=1 for its -Z flags).
# One target: make fuzz FUZZ_TARGETS=jwt FUZZ_SECS=600.
FUZZ_SECS ?= 60
FUZZ_TARGETS ?=
CARGO_FUZZ_VERSION := 0.13.2

.PHONY: fuzz
fuzz:
	@$(CARGO) fuzz --version 2>/dev/null | grep -q ' $(CARGO_FUZZ_VERSION)$$' || \
		$(CARGO) install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION)
	FUZZ_SECS=$(FUZZ_SECS) fuzz/run.sh $(FUZZ_TARGETS)
