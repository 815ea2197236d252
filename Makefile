# fedehr: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DIR ?= demo-output

.PHONY: install demo test test-fast test-network lint bench clean

install: $(STAMP)

# torch first, pinned, so pip takes the CPU wheel on disk instead of a CUDA build.
$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/fedehr demo --out $(DEMO_DIR)

# Two workers, one test file each at a time: the end-to-end tests spend most of their
# time in Flower's polls, so two federations share the cores without slowing each other.
# Files run in collection order, the longest first (tests/conftest.py).
test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# As root: every test of the network of hosts (namespaces), the opt-in ones included.
test-network: install
	FEDEHR_NETWORK_TESTS=1 FEDEHR_SLOW_NETWORK_TESTS=1 $(BIN)/python -m pytest tests/network

test-fast: install
	$(BIN)/python -m pytest -m "not e2e and not slow"

lint: install
	$(BIN)/ruff check .

# Side-by-side benchmarks; each prints a table and writes benchmarks/results/*.json.
bench: install
	$(BIN)/python benchmarks/tokenizer_bench.py
	$(BIN)/python benchmarks/dp_throughput_bench.py
	$(BIN)/python benchmarks/etl_throughput.py --scale 10
	$(BIN)/python benchmarks/federation_overhead.py

clean:
	rm -rf $(VENV) build dist *.egg-info $(DEMO_DIR)
