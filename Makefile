# Two commands on a fresh machine:
#   make up     set up, start a local three-region mesh and run the demo (Ctrl-C stops)
#   make test   set up (Python deps, Go-built test binaries cached in ~/.cache/xchat, Debian's chromium) and run every test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export XCHAT_CACHE ?= $(HOME)/.cache/xchat

.PHONY: up demo test tools browser lint unit sdk-wheel proto-snapshot release clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,operator,chaos,fuzz,release]"
	touch $@

up: $(BIN)/.installed
	$(BIN)/xchat up --demo

demo: $(BIN)/.installed
	$(BIN)/xchat up --demo --exit-after-demo

# Go-built binaries (kube-apiserver, etcd, kubectl, helm, toxiproxy, grpcurl, buf, grpcwebproxy,
# prometheus): built once from the Go module proxy into $(XCHAT_CACHE)/bin, reused when present.
# The scripts run side by side (toxiproxy, grpcurl, buf and grpcwebproxy share a lane, about
# 4 minutes cold; prometheus about 4 minutes alone; the envtest script runs its own lanes, ~9 min).
tools:
	@set -e; \
	operator/envtest/build-binaries.sh & envtest=$$!; \
	{ chaos/tools/build-toxiproxy.sh && chaos/tools/build-grpcurl.sh && chaos/tools/build-buf.sh && chaos/tools/build-grpcwebproxy.sh; } >/dev/null & toxiproxy=$$!; \
	charts/tools/build-prometheus.sh >/dev/null & prometheus=$$!; \
	wait $$envtest; wait $$toxiproxy; wait $$prometheus

# Headless chromium for the status page's browser test (tests/statuspage): Debian's
# packages, installed only when missing (needs root, as on CI's fresh machine).
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

lint: $(BIN)/.installed
	$(BIN)/lint-imports
	$(BIN)/mypy services/xchat operator/xchat_operator chaos/xchat_chaos

test: $(BIN)/.installed tools browser lint
	$(BIN)/python -m pytest -q

# Everything that needs no Go-built binary (no kube-apiserver, helm, toxiproxy or prometheus):
# a first run on a fresh machine without the ~15-minute builds.
unit: $(BIN)/.installed lint
	$(BIN)/python -m pytest -q -m "not envtest and not slow" --ignore=tests/chart

# The client SDK alone (xchat-sdk wheel, no server code) into dist/.
sdk-wheel: $(BIN)/.installed
	$(BIN)/python -m xchat.client.sdk_wheel dist

# Versioned artifacts into dist/release/<version>: Python sdist + wheels (server, SDK), the packaged
# chart, the proto module, a CycloneDX SBOM and SHA256SUMS (docs/chart.md). RELEASE_FLAGS=--images
# adds `docker save` archives of images charts/images/build.sh built (as root) beforehand.
release: $(BIN)/.installed
	@test -x $(XCHAT_CACHE)/bin/helm || operator/envtest/build-binaries.sh helm
	charts/tools/release.sh $(RELEASE_FLAGS)

# At a release: the API as released, what `buf breaking` compares against (docs/proto.md).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
proto-snapshot:
	cd proto && "$$(../chaos/tools/build-buf.sh)" build --exclude-source-info -o released/xchat-v1-$(VERSION).txtpb

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
