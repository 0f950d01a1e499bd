"""The real node over real DDS against the real vLLM server (the CI slice of ``make vllm-smoke``).

The same code as ``make vllm-smoke`` (serving/vllm_smoke.py), on the session's server, for two
tasks and two frames each: synthetic 1280x720 scenes replayed frame by frame into
``perception_node`` (openai backend, profile step3p7, response_format, thinking_token_budget 8),
every raw answer kept by the node's cassette and checked against the schema it sent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from step_perception.core.types import Task
from vllm_server import VllmServer
from vllm_smoke import make_scenes, run_task, smoke_env


@pytest.mark.ros
# Random weights: a frame whose schema-valid answer holds only degenerate boxes is a parse failure
# and the node publishes nothing for it. The replay's lockstep counts such a frame as failed from
# the node's /diagnostics (`--lockstep-node`) and goes on; before, it waited for an answer that
# never came, the stall that kept this test out of CI. The answers are checked in the cassette.
@pytest.mark.timeout(600)  # 2 nodes, replays, lockstep waits: ~110 s on a quiet machine
def test_node_answers_every_frame_with_schema_valid_json(
    vllm_server: VllmServer, tmp_path: Path
) -> None:
    env = smoke_env()
    scenes = make_scenes(tmp_path, 2, env)
    for task in (Task.DETECT, Task.DESCRIBE):
        outcome = run_task(task, vllm_server.base_url, scenes, tmp_path, env)
        assert outcome.frames == 2, outcome
        assert outcome.answers == 2 and outcome.schema_valid == 2, outcome
        assert outcome.backend_errors == 0, outcome
        # Same text and the same 728x410 image in every frame of a task: one prompt size.
        assert len(set(outcome.prompt_tokens)) == 1, outcome
