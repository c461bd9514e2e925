# Two commands set up a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo lint test test-fast dist check-light bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# constraints-dev.txt pins the CPU torch wheel; the package itself asks only torch>=2.2
	$(BIN)/python -m pip install --quiet -c constraints-dev.txt -e ".[server,dev]"
	touch $@

demo: install
	$(BIN)/corteza demo

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc
	$(MAKE) check-light

# The inner loop: every test but those marked slow (they build the full-size model).
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

# The sdist and the wheel, checked as PyPI would check them.
dist: install
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# The built wheel in a fresh environment (no torch) trains against a real server.
check-light: dist
	./.ci/check-light

bench: install
	$(BIN)/python benchmarks/bench_responsiveness.py
	$(BIN)/python benchmarks/bench_throughput.py
	$(BIN)/python benchmarks/bench_wire.py
	$(BIN)/python benchmarks/bench_predict.py

clean:
	rm -rf $(VENV) .venv-light dist .pytest_cache .mypy_cache .ruff_cache test-artifacts
