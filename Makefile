# The two commands a new machine needs: `make run` (the demo) and `make test` (everything CI runs).
# Each creates its own virtual environment in .venv and installs what it needs.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
LISTEN ?= :18765

.PHONY: run test lint unit system-deps bench soak container-smoke clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

## run: the living emulated Room and the exporter on $(LISTEN); Ctrl-C stops both
run: $(BIN)/.installed
	$(BIN)/trueconf-exporter demo --web.listen-address $(LISTEN)

## system-deps: Debian's prometheus package (the real Prometheus server and promtool used by the tests)
## and systemd (systemd-analyze checks the unit; it needs no systemd running)
system-deps:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; }
	@command -v systemd-analyze >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends systemd; }

lint: $(BIN)/.installed
	$(BIN)/ruff check exporter tests benchmarks scripts
	$(BIN)/ruff format --check exporter tests benchmarks scripts

unit: $(BIN)/.installed system-deps
	$(BIN)/python -m pytest

## test: the whole suite, as CI runs it
test: lint unit

## soak: thousands of scrapes against healthy and faulty Rooms; fails if fds, threads or RSS grow (not in CI)
soak: $(BIN)/.installed
	$(BIN)/python scripts/soak.py

## bench: scrape latency figures (median, p95) against the emulator
bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_scrape.py

## container-smoke: build the image with podman, run it against the emulator, scrape it (needs root; not in CI)
container-smoke: $(BIN)/.installed
	PYTHON=$(BIN)/python scripts/container-smoke.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
