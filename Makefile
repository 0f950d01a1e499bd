# step_perception: the two commands that matter are `make demo` and `make test`.
# Both start from an empty clone and do their own set-up (`make build`).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTEST_ARGS ?=

.PHONY: help build test lint demo bench fuzz clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

build:  ## create .venv (ROS 2 Jazzy wheels + deps) and colcon-build the workspace
	@scripts/setup.sh

test: build  ## set up, then run lint, type checks and the whole test suite
	@$(MAKE) --no-print-directory lint
	@scripts/test.sh $(PYTEST_ARGS)

lint:  ## ruff (lint + format check) and mypy (strict)
	@.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

demo: build  ## real perception end to end on the embedded reference model; prints a results table
	@scripts/demo.sh

bench: build  ## run the benchmarks under bench/ and print their tables
	@. ./env.sh && set -e && for b in bench/bench_*.py; do echo "== $$b"; python "$$b"; done

fuzz: build  ## >= 10,000 hostile model answers per property through parse and command path, 50 ms CPU budget
	@. ./env.sh && STEP_PERCEPTION_FUZZ=1 python -m pytest fuzz -q -s -p no:cacheprovider

clean:  ## remove build outputs (keeps .venv)
	rm -rf build install log
