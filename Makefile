# Two commands matter: `make run` (self-test) and `make test` (whole suite).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SH := $(VENV)/bin/scicode-harness

.PHONY: setup venv docker data image procvenv run test bench container clean

# As root, the process backend drops to uid 65534; that needs an interpreter outside /root.
# `make test` builds one from the sandbox lock (same versions as the image) so those red-team
# cases run instead of being skipped.
PROCVENV ?= /opt/scicode-procvenv

setup: venv docker data image

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

docker:
	bash scripts/ensure-docker.sh

data: venv
	$(SH) data verify >/dev/null 2>&1 || $(SH) data pull

image: venv docker
	$(SH) image build --offline

run: setup
	$(SH) selftest

procvenv:
	@if [ "$$(id -u)" = 0 ] && [ -x /usr/bin/python3 ]; then \
	  if [ ! -f $(PROCVENV)/.lock-$$(sha256sum sandbox_image/requirements.lock | cut -c1-12) ]; then \
	    rm -rf $(PROCVENV) && /usr/bin/python3 -m venv $(PROCVENV) && \
	    $(PROCVENV)/bin/pip install -q --require-hashes --only-binary=:all: -r sandbox_image/requirements.lock && \
	    touch $(PROCVENV)/.lock-$$(sha256sum sandbox_image/requirements.lock | cut -c1-12); \
	  fi; \
	fi

test: setup procvenv
	if [ -x $(PROCVENV)/bin/python ]; then export SCICODE_PROCESS_PYTHON=$(PROCVENV)/bin/python; fi; \
	$(VENV)/bin/pytest -q -ra

bench: setup
	$(PY) bench/run_all.py

container: setup
	$(PY) -m harness.cli.container

clean:
	rm -rf $(VENV) build *.egg-info
