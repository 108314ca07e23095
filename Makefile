# slotkeeper developer entry points. `make test` is the one command CI runs.
#
# Everything lives inside the checkout: the virtualenv in .venv/, etcd, etcdctl
# and consul in .tools/bin/ (both git-ignored). Recipes see both first on PATH,
# so tests and scripts find the project's binaries, not whatever is installed.

PYTHON ?= python3
VENV := .venv
PACKAGES := slotkeeper datanode sidecar coordinator clusterstate dcs
PYTEST_ARGS ?=
BENCH_ARGS ?=

export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup run test bench lint clean distclean

# Stamps keep `make test` fast when nothing changed: the venv is rebuilt when
# pyproject.toml changes, the tools when their install scripts change.
setup: $(VENV)/.stamp .tools/.stamp

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

.tools/.stamp: scripts/install-binaries.sh scripts/install-redis-tools.sh
	bash scripts/install-binaries.sh
	bash scripts/install-redis-tools.sh
	touch $@

# A whole local cluster: etcd, Consul, 2 coordinators, 3 shards x 1 replica.
run: setup
	$(VENV)/bin/slotkeeper up

# pytest exits 5 when it collected nothing; say so plainly: an empty run is a
# failure (a broken conftest or testpaths must not pass CI).
test: setup
	@rc=0; $(VENV)/bin/python -m pytest -q $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): failing"; fi; \
	exit $$rc

bench: setup
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy $(PACKAGES)

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . \( -path ./$(VENV) -o -path ./.tools -o -path ./.git \) -prune -o \
		-name __pycache__ -type d -prune -exec rm -rf {} +

# Also drops the venv, the downloaded binaries and the dev data dir.
distclean: clean
	rm -rf $(VENV) .tools data
