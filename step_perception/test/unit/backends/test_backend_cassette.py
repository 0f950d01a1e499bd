"""Record answers of real backends to a cassette, then replay them with no server or model."""

from __future__ import annotations

import json
from concurrent.futures import wait
from pathlib import Path

import pytest
from conftest import make_request
from fault_server import Behaviour, FaultServer
from step_perception.backends.cassette import CassetteBackend, load_cassette
from step_perception.backends.openai import OpenAIBackend, OpenAIBackendConfig
from step_perception.backends.transformers_backend import (
    TransformersBackend,
    TransformersBackendConfig,
)
from step_perception.core.backend import Backend
from step_perception.core.config import CassetteMode
from step_perception.core.errors import (
    BackendError,
    BackendUnavailableError,
    CassetteMissError,
    ConfigError,
)
from step_perception.core.parsing import parse_answer
from step_perception.core.profiles import get_profile

ANSWERS = [
    '{"objects": [{"label": "red cube", "bbox_2d": [10, 20, 300, 400], "score": 0.93}]}',
    '{"objects": [], "summary": "grüne Tasse ☕ — \\"quoted\\"\\n\\u0000 tab\\t"}',
    '{"objects": [{"label": "blue ball", "bbox_2d": [1, 2, 3, 4]}], "action": {"name": "pick"}}',
]


def _openai(url: str, **over: object) -> OpenAIBackend:
    return OpenAIBackend(OpenAIBackendConfig(endpoints=(url,), request_timeout_s=5.0, **over))  # type: ignore[arg-type]


def test_record_then_replay_is_byte_identical(tmp_path: Path) -> None:
    cassette = tmp_path / "run.jsonl"
    requests = [make_request(seed=i, user=f"Task: detect\nRequest: thing {i}") for i in range(3)]
    with FaultServer(script=[Behaviour(content=a) for a in ANSWERS]) as srv:
        recorder = CassetteBackend.recording(cassette, _openai(srv.base_url))
        assert isinstance(recorder, Backend)
        live = [recorder.submit(r).result(timeout=10) for r in requests]
        assert recorder.health().state == "record/closed"  # the live breaker's state
        assert len(recorder) == 3
        recorder.close()
    # The server is gone: replay needs no network.
    replayer = CassetteBackend.replaying(cassette)
    try:
        replayed = [replayer.submit(r).result(timeout=1) for r in requests]
        health = replayer.health()
    finally:
        replayer.close()
    assert [r.text for r in live] == ANSWERS
    assert [r.text.encode() for r in replayed] == [r.text.encode() for r in live]
    assert [json.loads(r.text) for r in replayed] == [json.loads(a) for a in ANSWERS]
    assert [r.usage for r in replayed] == [r.usage for r in live]
    # ... and so the parsed results are identical too (the parser is the real one).
    profile = get_profile(requests[0].profile)
    parsed = [
        (parse_answer(a.text, profile, q.image), parse_answer(b.text, profile, q.image))
        for a, b, q in zip(live, replayed, requests, strict=True)
    ]
    assert all(p == q for p, q in parsed)
    assert [len(p.detections) for p, _ in parsed] == [1, 0, 0]
    assert parsed[1][0].summary.startswith("grüne Tasse")
    assert all(r.endpoint == f"replay:{srv.base_url}" for r in replayed)
    assert (health.healthy, health.state) == (True, "replay")
    lines = cassette.read_text().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert first["key"] == requests[0].cache_key()
    assert first["image_sha256"] == requests[0].image.sha256


def test_replay_miss_names_the_key(tmp_path: Path) -> None:
    cassette = tmp_path / "empty.jsonl"
    cassette.write_text("")
    replayer = CassetteBackend.replaying(cassette)
    request = make_request(seed=42)
    with pytest.raises(CassetteMissError) as info:
        replayer.submit(request).result(timeout=1)
    assert info.value.key == request.cache_key()
    assert request.cache_key() in str(info.value)
    assert "1 misses" in replayer.health().detail


def test_other_image_bytes_are_a_miss(tmp_path: Path) -> None:
    cassette = tmp_path / "one.jsonl"
    with FaultServer() as srv:
        recorder = CassetteBackend.recording(cassette, _openai(srv.base_url))
        recorder.submit(make_request(seed=1)).result(timeout=10)
        recorder.close()
    replayer = CassetteBackend.replaying(cassette)
    assert replayer.submit(make_request(seed=1)).result(timeout=1).text == '{"objects": []}'
    with pytest.raises(CassetteMissError):
        replayer.submit(make_request(seed=2)).result(timeout=1)


def test_record_passes_errors_on_and_stores_nothing(tmp_path: Path) -> None:
    cassette = tmp_path / "errors.jsonl"
    with FaultServer(default=Behaviour("status", status=400, message="bad request")) as srv:
        recorder = CassetteBackend.recording(cassette, _openai(srv.base_url))
        with pytest.raises(BackendError, match="HTTP 400"):
            recorder.submit(make_request()).result(timeout=10)
        recorder.close()
    assert cassette.read_text() == ""


def test_concurrent_recording_writes_whole_lines(tmp_path: Path) -> None:
    cassette = tmp_path / "many.jsonl"
    requests = [make_request(seed=i) for i in range(12)]
    with FaultServer(default=Behaviour("sleep", delay_s=0.02)) as srv:
        recorder = CassetteBackend.recording(cassette, _openai(srv.base_url, max_workers=6))
        futures = [recorder.submit(r) for r in requests]
        done, _ = wait(futures, timeout=20)
        recorder.close()
    assert len(done) == 12 and all(f.exception() is None for f in futures)
    entries = load_cassette(cassette)
    assert set(entries) == {r.cache_key() for r in requests}


def test_record_and_replay_the_in_process_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    cassette = tmp_path / "tiny.jsonl"
    request = make_request(str(tiny_model_dir), max_tokens=10)
    live = TransformersBackend(TransformersBackendConfig(model=str(tiny_model_dir), device="cpu"))
    recorder = CassetteBackend.recording(cassette, live)
    recorded = recorder.submit(request).result(timeout=60)
    recorder.close()
    assert live.health().state == "closed"  # record mode closes what it wraps
    replayed = CassetteBackend.replaying(cassette).submit(request).result(timeout=1)
    assert replayed.text.encode("utf-8", "surrogatepass") == recorded.text.encode(
        "utf-8", "surrogatepass"
    )
    assert replayed.usage == recorded.usage


def test_malformed_cassette_and_bad_modes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "k", "text": "ok"}\nnot json\n')
    with pytest.raises(BackendError, match="line 2 is malformed"):
        CassetteBackend.replaying(bad)
    with pytest.raises(ConfigError, match="cannot read cassette"):
        CassetteBackend.replaying(tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match="needs a live backend"):
        CassetteBackend(tmp_path / "x.jsonl", CassetteMode.RECORD)
    with pytest.raises(ConfigError, match="mode off"):
        CassetteBackend(tmp_path / "x.jsonl", CassetteMode.OFF)


def test_closed_cassette_backend_fails_typed(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    cassette.write_text("")
    replayer = CassetteBackend.replaying(cassette)
    replayer.close()
    replayer.close()
    with pytest.raises(BackendUnavailableError, match="closed"):
        replayer.submit(make_request()).result(timeout=1)
