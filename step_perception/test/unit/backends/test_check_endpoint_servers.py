"""``step-perception check-endpoint`` against a real ``transformers serve`` and the fault server.

(The vLLM case is in test/vllm/test_vllm_check_endpoint.py, on the session's vLLM server.) The
fixtures of both servers live here, hence the tools' command is tested from this folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fault_server import Behaviour, FaultServer
from step_perception_tools.check_endpoint import main


def test_transformers_serve_is_reported_unfit(
    serve_url: str, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # transformers serve ignores response_format: random weights answer no JSON at all.
    code = main(
        [serve_url, "--model", str(tiny_model_dir), "--profile", "generic", "--requests", "2",
         "--param", "use_response_format=true", "--param", "max_tokens=12"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1, out
    assert str(tiny_model_dir) in out.splitlines()[1]  # the listed model
    assert "0/2 answers schema-valid" in out
    assert "response_format not honoured" in out
    assert "box convention   inconclusive (no box parsed under any convention)" in out


def test_reference_model_box_convention_and_profile(
    reference_serve_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A real (trained) detector: its boxes fit the generated scene in one convention only, and
    # that convention implies the profile the demo runs it with.
    code = main([reference_serve_url, "--profile", "generic", "--requests", "2"])
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("box convention"))
    assert "norm_1000_xyxy fits the scene" in line, out
    assert line.endswith("-> model_profile generic"), out
    score = float(line.split("(score ", 1)[1].split(";", 1)[0])
    assert score >= 0.7, out
    # transformers serve ignores response_format (the node's schema is not enforced): that is the
    # one problem; the box convention is not one.
    assert code == 1, out
    assert out.rstrip().endswith(
        "verdict          response_format not honoured (2 of 2 answers not schema-valid)"
    ), out


def test_reference_model_under_the_wrong_profile_is_reported(
    reference_serve_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Under qwen2_5_vl the node would read the model's 0-1000 boxes as pixels: a problem, and the
    # report names the profile that reads them right.
    code = main([reference_serve_url, "--profile", "qwen2_5_vl", "--requests", "1"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "norm_1000_xyxy fits the scene" in out, out
    assert (
        "boxes follow norm_1000_xyxy, profile qwen2_5_vl reads abs_pixels_sent: use model_profile "
        "generic" in out
    ), out


def test_reasoning_leak_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    leaky = Behaviour(content='<think>hmm</think>{"objects": []}')
    with FaultServer(default=leaky) as server:
        code = main([server.base_url, "--profile", "generic", "--requests", "3"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "fault-model" in out
    assert "3 answers with <think> in the content" in out
    assert "reasoning leaks into the content" in out


def test_server_errors_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    with FaultServer(default=Behaviour(kind="status", status=500, message="boom")) as server:
        code = main([server.base_url, "--profile", "generic", "--requests", "2"])
    out = capsys.readouterr().out
    assert code == 1 and "HTTP 500 on a chat request" in out, out


def test_a_well_behaved_server_passes(capsys: pytest.CaptureFixture[str]) -> None:
    with FaultServer(
        default=Behaviour(content='{"objects": []}', reasoning="looked twice")
    ) as server:
        code = main([server.base_url, "--profile", "generic", "--requests", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2/2 answers schema-valid" in out
    assert "separate (message.reasoning_content)" in out
    assert "box convention   inconclusive (no box parsed under any convention)" in out
    assert out.rstrip().endswith("verdict          OK")


@pytest.mark.parametrize(
    "url",
    ["ftp://gpu:8000/v1", "http://user:sk-secret@gpu:8000/v1", "http://gpu:8000/v1?k=sk-secret"],
)
def test_a_url_the_node_would_refuse_is_refused(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-endpoint validates the URL with the node's own rule, before any request."""
    with pytest.raises(SystemExit) as info:
        main([url, "--profile", "generic", "--requests", "1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "endpoint:" in err and "sk-secret" not in err
