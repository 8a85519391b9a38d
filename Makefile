# The two commands a new machine needs: `make run` (the demo) and `make test` (everything CI runs).
# Each creates its own virtual environment in .venv and installs what it needs.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MIN_VENV ?= .venv-min
MIN_BIN := $(MIN_VENV)/bin
FAST := not process and not e2e and not loopback
IN_PROCESS := not process and not e2e
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
LISTEN ?= 127.0.0.1:18765
JOBS ?= 4
# Test workers: most tests wait on sockets, timeouts and child processes, so 4 keep 2 cores busy. Tests
# marked `serial` (CPU or latency bounds) run alone afterwards.

.PHONY: run demo-stack test test-fast test-min lint unit system-deps bench soak container-smoke clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,emulator]'
	touch $@

## run: six emulated Rooms with different lives behind one exporter on $(LISTEN); Ctrl-C stops them
run: $(BIN)/.installed
	$(BIN)/trueconf-exporter demo --web.listen-address $(LISTEN)

## demo-stack: the demo, plus Prometheus and Alertmanager (Debian's) with this repository's rules and alerting
## config, all on 127.0.0.1; alerts fire within minutes and notifications print in the terminal
demo-stack: $(BIN)/.installed system-deps
	BIN=$(BIN) scripts/demo-stack.sh

## system-deps: Debian's prometheus package (the real Prometheus server and promtool used by the tests),
## prometheus-alertmanager (Alertmanager and amtool) and systemd (systemd-analyze checks the unit; it needs
## no systemd running)
system-deps:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; }
	@command -v prometheus-alertmanager >/dev/null && command -v amtool >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus-alertmanager; }
	@command -v systemd-analyze >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends systemd; }

## lint: ruff (lint and format) over everything, mypy --strict over the package
lint: $(BIN)/.installed
	$(BIN)/ruff check exporter tests benchmarks scripts
	$(BIN)/ruff format --check exporter tests benchmarks scripts
	$(BIN)/mypy

## unit: every test, fast and slow (real processes, a real Prometheus)
unit: $(BIN)/.installed system-deps
	$(BIN)/python -m pytest -n $(JOBS) -m "not serial"
	$(BIN)/python -m pytest -m serial

## test-fast: the fast tier only (no sockets, no processes, no Prometheus), for the edit-test loop
test-fast: $(BIN)/.installed
	HYPOTHESIS_PROFILE=fast $(BIN)/python -m pytest -m "$(FAST)"

## test-min: every runtime dependency at the lowest version pyproject.toml admits, in a venv of its own;
## runs every in-process test (the Room client over loopback included) and one end-to-end scrape
test-min: $(BIN)/.installed
	rm -rf $(MIN_VENV)
	$(PYTHON) -m venv $(MIN_VENV)
	$(BIN)/python scripts/lowest_requirements.py > $(MIN_VENV)/lowest.txt
	$(MIN_BIN)/python -m pip install --quiet --upgrade pip
	$(MIN_BIN)/python -m pip install --quiet -c $(MIN_VENV)/lowest.txt -e '.[test,emulator]'
	@echo "lowest versions under test:" && $(MIN_BIN)/python -m pip list 2>/dev/null \
	  | grep -iE '^(prometheus.client|websocket.client|websockets|click|pyyaml|bcrypt|h11) '
	$(MIN_BIN)/python -m pytest -p no:cacheprovider -n $(JOBS) -m "(($(IN_PROCESS)) or smoke) and not serial"
	$(MIN_BIN)/python -m pytest -p no:cacheprovider -m "(($(IN_PROCESS)) or smoke) and serial" || [ $$? -eq 5 ]

## test: the whole suite, as CI runs it: lint, every test, then the lowest dependency versions
test: lint unit test-min

## soak: thousands of scrapes against healthy and faulty Rooms; fails if fds, threads or RSS grow (not in CI)
soak: $(BIN)/.installed
	$(BIN)/python scripts/soak.py

## bench: scrape latency figures (median, p95) against the emulator, the per-entry parser, sessions measured
## as ratios against raw clients (targets met or missed), and a real serve process's kept sessions: 1000 idle
## (CPU, RSS per session) and a 50 000-notification flood beside a healthy Room; never asserted; 1-2 minutes
bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_scrape.py
	$(BIN)/python benchmarks/bench_parse.py
	$(BIN)/python benchmarks/bench_sessions.py
	$(BIN)/python benchmarks/bench_reader.py

## container-smoke: build the image with podman, run it against the emulator, scrape it (needs root; not in CI)
container-smoke: $(BIN)/.installed
	PYTHON=$(BIN)/python scripts/container-smoke.sh

clean:
	rm -rf $(VENV) $(MIN_VENV) .pytest_cache .ruff_cache build *.egg-info
