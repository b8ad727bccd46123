# Two commands matter: `make run` (self-test) and `make test` (whole suite).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SH := $(VENV)/bin/scicode-harness

.PHONY: setup venv docker data image run test bench container clean

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

test: setup
	$(VENV)/bin/pytest -q -ra

bench: setup
	$(PY) bench/run_all.py

container: setup
	$(PY) -m harness.container

clean:
	rm -rf $(VENV) build *.egg-info
