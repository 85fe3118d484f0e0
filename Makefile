# cachu: the habits, as targets. `make help` lists them.
PYTHON ?= python3

.PHONY: help install demo test test-rust test-python test-pythons wheels check-wheels check-sdist fmt lint bench

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: ## build and install the package (release build)
	$(PYTHON) -m pip install .

demo: ## run the short demo on the installed package
	$(PYTHON) -m cachu

test: ## the whole test suite: Rust core, then Python against the installed package
	$(PYTHON) -m pip install '.[test]'
	bash tests/ensure_redis
	cargo test
	$(PYTHON) -m pytest

test-rust: ## Rust unit and doc tests (no Python)
	cargo test

test-python: ## pytest against the installed package
	$(PYTHON) -m pytest

# Interpreters for test-pythons: names on PATH or full paths.
PYTHONS ?= python3.10 python3.12 python3.13
test-pythons: ## pytest under each interpreter of PYTHONS, each in its own venv (.venv-py<version>/)
	set -e; for p in $(PYTHONS); do \
	  v=.venv-py$$($$p -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	  $$p -m venv $$v; \
	  $$v/bin/python -m pip install -q '.[test]'; \
	  PATH=$$PWD/$$v/bin:$$PATH $$v/bin/python -m pytest -q -p no:cacheprovider; \
	done

# wheels, check-wheels, check-sdist: the interpreters of PYTHONS when given on the
# command line or in the environment, else every CPython 3.10-3.13 on the machine.
WHEEL_PYTHONS = $(if $(filter file,$(origin PYTHONS)),,$(PYTHONS))
wheels: ## dist/: a stripped manylinux wheel per CPython (3.10-3.13, or PYTHONS), and the sdist
	nice -n 10 $(PYTHON) scripts/wheels.py build $(WHEEL_PYTHONS)

check-wheels: ## each wheel of dist/ in a fresh venv without Rust: python -m cachu, whole pytest suite
	bash tests/ensure_redis
	nice -n 10 $(PYTHON) scripts/wheels.py check $(WHEEL_PYTHONS)

check-sdist: ## the sdist of dist/ builds from source in a fresh venv (needs Rust) and runs
	nice -n 10 $(PYTHON) scripts/wheels.py check-sdist $(firstword $(WHEEL_PYTHONS))

fmt: ## format Rust and Python
	cargo fmt
	$(PYTHON) -m ruff format python tests bench scripts

lint: ## rustfmt, clippy, ruff, mypy and stubtest (tools: pip install '.[dev]')
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings
	cargo fmt --check --manifest-path bench/redis_floor/Cargo.toml
	cargo clippy --manifest-path bench/redis_floor/Cargo.toml --target-dir bench/redis_floor/target -- -D warnings
	$(PYTHON) -m ruff check python tests bench scripts
	$(PYTHON) -m ruff format --check python tests bench scripts
	$(PYTHON) -m mypy python/cachu
	MYPYPATH=python $(PYTHON) -m mypy.stubtest cachu._cachu  # the stubs match the built module

bench: ## ours beside the reference and the peers (see bench/README.md)
	$(PYTHON) bench/run.py
