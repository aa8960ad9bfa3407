# Strata: the two commands a newcomer needs.
#   make demo   set up everything, then run the main job
#   make test   set up everything, then run every test (benchmarks: make bench)
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test bench plan clean

setup:
	@.ci/setup

# Until the local pipeline lands (strata local up --demo): the three offline plans, then
# a real local training run of the digits example (Ray Train, MLflow, evaluation gate).
demo: setup
	@for stack in quick standard enterprise; do $(VENV)/bin/strata plan --stack $$stack || exit $$?; done
	@$(VENV)/bin/strata train digits --local --smoke

# Set-up installed every service binary, so a missing one is a failure, not a skip.
test: setup
	@STRATA_REQUIRE_MONITORING_BINARIES=1 $(PY) -m pytest --ignore=tests/benchmarks $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as failure"; exit 1; fi; \
	exit $$rc

bench: setup
	@$(PY) -m pytest tests/benchmarks --benchmark-enable --benchmark-columns=min,median,mean,rounds -s $(PYTEST_ARGS)

plan: setup
	@$(VENV)/bin/strata plan --stack $(STACK)

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
