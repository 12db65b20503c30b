# Kleene: `make run` starts kleened on its embedded defaults; `make test` runs every test.
# Both install what they need (Debian packages and a virtualenv) on a fresh Debian machine.

PYTHON ?= python3
VENV := .venv
UPSTREAM_VENV := .venv-upstream
BIN := $(VENV)/bin
# What kleened needs on the host (`make run`), then what only the tests add (`make test`).
SYSTEM_PACKAGES := runc conmon tini busybox-static nftables iproute2 xz-utils zstd python3-venv debootstrap
TEST_PACKAGES := docker-registry skopeo podman apache2-utils docker.io
UPSTREAM_KLEE := kleene-cli==0.1.0rc4

.PHONY: run test unit integration compat lint system-deps test-deps packages venv upstream-klee bench bench-peers clean

system-deps:
	@$(MAKE) --no-print-directory packages PACKAGES="$(SYSTEM_PACKAGES)"

test-deps:
	@$(MAKE) --no-print-directory packages PACKAGES="$(SYSTEM_PACKAGES) $(TEST_PACKAGES)"

packages:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(BIN)/kleened: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	@# setuptools' editable finder costs every klee start 10-40 ms (measured with -X importtime);
	@# the three source roots on a plain path file do the same job for free (bench/README.md).
	site=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && \
	printf '%s\n' "$(CURDIR)/protocol" "$(CURDIR)/daemon" "$(CURDIR)/client" > "$$site/kleene-src.pth" && \
	rm -f "$$site"/__editable__.kleene-*.pth "$$site"/__editable___kleene_*_finder.py
	@touch $@

venv: $(BIN)/kleened

$(UPSTREAM_VENV)/bin/klee:
	$(PYTHON) -m venv $(UPSTREAM_VENV)
	$(UPSTREAM_VENV)/bin/pip install -q $(UPSTREAM_KLEE)

upstream-klee: $(UPSTREAM_VENV)/bin/klee

run: system-deps venv
	$(BIN)/kleened $(if $(CONFIG),--config $(CONFIG),)

lint: venv
	$(BIN)/ruff check .

unit: venv
	$(BIN)/pytest -q tests/unit

test: test-deps venv upstream-klee lint
	$(BIN)/pytest -q -p no:cacheprovider tests

bench: test-deps venv upstream-klee
	$(BIN)/python -m bench

# Side by side with podman and docker (bench/peers.py), then the scale curve and the load test.
# bench.peers starts a dockerd of its own (tests/dockerd.py: own roots, no bridge, no iptables) and stops it.
bench-peers: test-deps venv
	$(BIN)/python -m bench.peers
	$(BIN)/python -m bench.scale
	$(BIN)/python -m bench.load

clean:
	rm -rf $(VENV) $(UPSTREAM_VENV) build *.egg-info
