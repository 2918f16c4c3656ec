# Hybrid classroom kit — developer entry points.
#   make setup   create .venv, install the project with its dev extras (kit + server + tools)
#                and the Debian packages the tests need (installed when run as root, otherwise
#                listed)
#   make demo    the provisioning server (SQLite) and one enrolled demo kit on synthetic sources
#   make demo-agent  the agent alone on synthetic sources (or real devices if configured)
#   make test    every test (runs setup first); the fuzz tests with ~150 examples each
#   make fuzz    the fuzz tests (tests/**/test_*_fuzz.py) with many more examples
#                (FUZZ_EXAMPLES, default 5000 each), failures kept in .hypothesis/
#   make bench   the media benchmark; prints a table and writes docs/PERFORMANCE.md
#   make bench-network  pupils on thin links (tc tbf in network namespaces, root): prints the
#                table of issue 14 and writes its section of docs/PERFORMANCE.md
#   make bench-provisioning  15,000 simulated kits against one provisioning server (SQLite, ~4.5 min)
#   make bench-provisioning-cluster  PostgreSQL, 2 nodes behind HAProxy, one node killed (~6.5 min)
#   make lint    ruff + mypy
#   make screenshots  refresh docs/screenshots (kiosk and pupil page, from the browser tests)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEB_PACKAGES := chromium libportaudio2 libasound2 alsa-utils iproute2 nftables fonts-dejavu-core postgresql systemd shellcheck coturn haproxy firefox-esr nodejs libturbojpeg0
# coturn: the NAT tests run their own turnserver (tests/nat.py); the package's service is disabled.
# haproxy: tests/provisioning/test_haproxy.py runs its own in front of two server nodes; the
# package's service is disabled likewise.
# firefox-esr, nodejs (and npm, unless nodejs brings its own): the Firefox pupil of the tests
# (tests/firefox.py), driven by puppeteer-core, which `npm ci` installs in tests/firefox/node_modules.
# libturbojpeg0: libjpeg-turbo's TurboJPEG API, which PyTurboJPEG loads to decode MJPEG cameras.
FIREFOX_DRIVER := tests/firefox/node_modules/.installed
DEMO_ARGS ?=

.PHONY: setup demo demo-agent test fuzz bench bench-network bench-provisioning bench-provisioning-cluster lint screenshots clean

setup: $(VENV)/.installed
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	    case "$$missing" in *coturn*) systemctl disable coturn.service 2>/dev/null; systemctl stop coturn.service 2>/dev/null; esac; \
	    case "$$missing" in *haproxy*) systemctl disable haproxy.service 2>/dev/null; systemctl stop haproxy.service 2>/dev/null; esac; true; \
	  else \
	    echo "missing Debian packages (run as root or: sudo apt-get install$$missing)"; \
	  fi; \
	fi
	@if ! command -v npm >/dev/null 2>&1 && [ "$$(id -u)" = "0" ]; then \
	  echo "installing Debian packages: npm"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm; \
	fi
	@if command -v npm >/dev/null 2>&1; then $(MAKE) -s --no-print-directory $(FIREFOX_DRIVER); \
	else echo "npm is missing: the Firefox tests will be skipped (sudo apt-get install npm)"; fi

$(FIREFOX_DRIVER): tests/firefox/package.json tests/firefox/package-lock.json
	cd tests/firefox && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(PY) -m provisioning.demo $(DEMO_ARGS)

demo-agent: setup
	$(VENV)/bin/kit-agent demo $(DEMO_ARGS)

test: setup
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

fuzz: setup
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q -p no:cacheprovider --timeout 0 \
	  $$(find tests -name 'test_*_fuzz.py' | sort) $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench

bench-network: setup
	$(PY) -m bench.network $(BENCH_ARGS)

screenshots: setup
	SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(PY) -m pytest -q -p no:cacheprovider tests/kiosk

bench-provisioning: setup
	$(PY) -m bench.provisioning $(BENCH_ARGS)

# 19,000 kits: the most this machine can hold with one node killed (docs/PERFORMANCE-provisioning.md:
# every process here may open 20,000 files, and the surviving node takes every link).
bench-provisioning-cluster: setup
	$(PY) -m bench.provisioning --db postgresql --nodes 2 --kits 19000 $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff check agent kiosk provisioning kitsys kitlink tests bench
	$(VENV)/bin/ruff format --check agent kiosk provisioning kitsys kitlink tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info tests/firefox/node_modules
