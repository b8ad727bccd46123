# Two commands matter: `make run` (self-test) and `make test` (whole suite).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SH := $(VENV)/bin/scicode-harness

.PHONY: setup venv docker browser bwrap data image envs run test bench container clean

setup: venv docker browser bwrap data image envs

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

docker:
	bash scripts/ensure-docker.sh

# headless Chromium for the report page's browser test (tests/test_report_page.py); root on Debian only
browser:
	@command -v chromium >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -q chromium >/dev/null; }; \
	else echo "make browser: install Chromium (Debian: apt-get install chromium); the report page's test needs it" >&2; fi

# --sandbox bwrap (and auto without Docker): Debian's bubblewrap, and libseccomp's Python
# bindings that the test of the shipped seccomp filter checks its syscall numbers against.
bwrap:
	@if ! command -v bwrap >/dev/null || ! /usr/bin/python3 -c 'import seccomp' 2>/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && [ -r /etc/debian_version ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap python3-seccomp >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap python3-seccomp >/dev/null; }; \
	  else echo "bwrap: install bubblewrap for --sandbox bwrap (scicode-harness doctor says more)"; fi; \
	fi

data: venv
	$(SH) data verify >/dev/null 2>&1 || $(SH) data pull

image: venv docker
	$(SH) image build --offline --env all

# Each sandbox environment as a venv (offline, from the image's wheelhouse) for bwrap and process jobs.
envs: venv image
	$(SH) env build --env all -q

run: setup
	$(SH) selftest

# The process backend's cases run in the built environments (`make envs`), which uid 65534 can
# reach as root (/var/cache/scicode-harness/envs): its privilege drop is tested, not skipped.
test: setup
	env24=$$($(SH) env path --env 2024) && env25=$$($(SH) env path --env 2025) && \
	SCICODE_PROCESS_PYTHON=$$env24/bin/python SCICODE_PROCESS_PYTHON_2025=$$env25/bin/python \
	$(VENV)/bin/pytest -q -ra --durations=40

bench: setup
	$(PY) bench/run_all.py

container: setup
	$(PY) -m harness.cli.container

clean:
	rm -rf $(VENV) build *.egg-info
