# step_perception: the two commands that matter are `make demo` and `make test`.
# Both start from an empty clone and do their own set-up (`make build`).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTEST_ARGS ?=

.PHONY: help build test test-kilted lint demo bench clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

build:  ## create .venv (ROS 2 Jazzy wheels + deps) and colcon-build the workspace (ROS_DISTRO=kilted: .venv-kilted, install-kilted/)
	@scripts/setup.sh

test: build  ## set up, then run lint, type checks and the whole test suite
	@$(MAKE) --no-print-directory lint
	@scripts/test.sh $(PYTEST_ARGS)

# The same workspace on ROS 2 Kilted (its own venv and install-kilted/): unit tests, the node's
# integration tests and the content-filter tests. CI runs it after `make test`.
KILTED_TESTS ?= step_perception/test/unit step_perception/test/integration

test-kilted:  ## build on ROS 2 Kilted beside Jazzy, then run the unit and node integration tests there
	@ROS_DISTRO=kilted scripts/setup.sh
	@ROS_DISTRO=kilted scripts/test.sh $(KILTED_TESTS) $(PYTEST_ARGS)

lint:  ## ruff (lint + format check) and mypy (strict)
	@.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

demo: build  ## real perception end to end on the embedded reference model; prints a results table
	@scripts/demo.sh

bench: build  ## run the benchmarks under bench/ and print their tables
	@. ./env.sh && set -e && for b in bench/bench_*.py; do echo "== $$b"; python "$$b"; done

clean:  ## remove build outputs (keeps .venv and .venv-kilted)
	rm -rf build install log build-kilted install-kilted log-kilted
