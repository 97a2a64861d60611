# facedrop — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
ROOT   ?= ./facedrop-data
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench install install-service clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## run the daemon on the default root (creates it on first use)
run: $(STAMP)
	test -f $(ROOT)/facedrop.toml || $(VENV)/bin/facedrop init $(ROOT)
	$(VENV)/bin/facedrop run --root $(ROOT)

## run the test suite
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## run the benchmarks (each prints ratios measured in one run)
bench: $(STAMP)
	$(PY) bench/extract.py
	$(PY) bench/train.py
	$(PY) bench/occlusion.py
	$(PY) bench/convert.py
	$(PY) bench/daemon.py
	$(PY) bench/web.py
	$(PY) bench/cluster.py
	$(PY) bench/quality.py --minutes 10  # the full figures: --minutes 10,30,60

## install the system service from a wheel of this checkout (as root; GPU=1 for NVIDIA)
install-service:
	bash systemd/install.sh $(if $(GPU),--gpu,)

clean-venv:
	rm -rf $(VENV)
