"""``step-perception check-endpoint`` against the real vLLM server (tiny Step-3.7 model)."""

from __future__ import annotations

import pytest
from step_perception_tools.check_endpoint import main
from vllm_server import SERVED_MODEL, VllmServer


@pytest.mark.parametrize(
    ("detail", "tokens", "size"), [("high", 337, "728x410"), ("low", 171, "727x545")]
)
def test_vllm_is_reported_fit(
    vllm_server: VllmServer,
    capsys: pytest.CaptureFixture[str],
    detail: str,
    tokens: int,
    size: str,
) -> None:
    code = main(
        [vllm_server.base_url, "--requests", "2", "--param", "thinking_token_budget=8",
         "--param", "max_objects=4", "--param", "max_tokens=1500", "--param", f"detail={detail}"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert SERVED_MODEL in out
    assert "2/2 answers schema-valid" in out
    assert "0 answers with <think> in the content" in out
    assert f"image tokens     {tokens} (profile expects {tokens}) per {size} image" in out
    # Random weights: whatever boxes parse match no convention; no profile is recommended.
    assert "box convention   inconclusive (" in out, out
    assert "model_profile" not in out, out
