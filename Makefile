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

# The whole pipeline on this machine (state and logs in .strata/; `strata local down`
# stops the services it leaves running for inspection): the offline plan of the quick
# stack, then `strata local up --demo` (train, serve, stream, traffic, canary,
# drift -> page -> retrain, summary + .strata/report/index.html).
demo: setup
	@$(VENV)/bin/strata plan --stack quick
	@$(VENV)/bin/strata local up --demo

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
