"""The committed reference model folder loads on CPU with Auto classes and answers real scenes."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from step_perception.core.types import Box2D  # noqa: E402
from step_perception_tools.scenes import LABELS, render_scene  # noqa: E402

MODEL_DIR = Path(__file__).resolve().parents[4] / "models" / "tabletop-ref"
HELD_OUT_SEED = 4242  # never used for training (models/training/train_config.json)


@pytest.fixture(scope="module")
def loaded() -> tuple[Any, Any]:
    assert (MODEL_DIR / "model.safetensors").exists(), f"weights missing in {MODEL_DIR}"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    proc = transformers.AutoProcessor.from_pretrained(str(MODEL_DIR), trust_remote_code=True)
    model = transformers.AutoModelForImageTextToText.from_pretrained(
        str(MODEL_DIR), trust_remote_code=True
    ).eval()
    return proc, model


def _data_url(rgb: np.ndarray) -> str:
    sent = cv2.resize(
        cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (728, 410), interpolation=cv2.INTER_AREA
    )
    ok, enc = cv2.imencode(".jpg", sent, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return "data:image/jpeg;base64," + base64.b64encode(enc.tobytes()).decode("ascii")


def _ask(loaded: tuple[Any, Any], rgb: np.ndarray, text: str) -> dict[str, Any]:
    proc, model = loaded
    msgs = [
        {"role": "system", "content": "You are a perception module."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": _data_url(rgb)}},
                {"type": "text", "text": text},
            ],
        },
    ]
    inputs = proc.apply_chat_template(
        msgs, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    assert set(inputs) >= {"input_ids", "pixel_values"}
    out = model.generate(**inputs, max_new_tokens=512, do_sample=False)
    answer = proc.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    parsed: dict[str, Any] = json.loads(answer)
    return parsed


def _to_source(box: list[int], w: int, h: int) -> Box2D:
    return Box2D(box[0] * w / 1000, box[1] * h / 1000, box[2] * w / 1000, box[3] * h / 1000)


def test_detect_finds_the_objects_of_a_held_out_scene(loaded: tuple[Any, Any]) -> None:
    scene = render_scene(HELD_OUT_SEED, 0)
    ans = _ask(loaded, scene.rgb, "Detect all objects.\nTask: detect\nRequest: ")
    h, w = scene.rgb.shape[:2]
    assert ans["objects"], ans
    for o in ans["objects"]:
        assert o["label"] in LABELS
        assert all(0 <= v <= 1000 for v in o["bbox_2d"])
        assert 0 <= o["score"] <= 1
    hits = 0
    for truth in scene.objects:
        tb = Box2D(*truth.box)
        hits += any(
            o["label"] == truth.label and _to_source(o["bbox_2d"], w, h).iou(tb) >= 0.5
            for o in ans["objects"]
        )
    assert hits >= len(scene.objects) - 1  # held-out recall is ~0.95


def test_locate_and_command_pick_the_named_object(loaded: tuple[Any, Any]) -> None:
    scene = render_scene(HELD_OUT_SEED, 1)
    target = scene.objects[0]
    ans = _ask(loaded, scene.rgb, f"Task: locate\nRequest: the {target.label}")
    assert [o["label"] for o in ans["objects"]] == [target.label]
    cmd = _ask(
        loaded,
        scene.rgb,
        f"Task: command\nRequest: please pick the {target.label}\nAllowed actions: point_at, pick",
    )
    assert cmd["action"]["name"] == "pick"
    assert cmd["objects"][cmd["action"]["target"]]["label"] == target.label


def test_describe_gives_relations_and_summary(loaded: tuple[Any, Any]) -> None:
    scene = render_scene(HELD_OUT_SEED, 2)
    ans = _ask(loaded, scene.rgb, "Task: describe\nRequest: ")
    n = len(ans["objects"])
    assert ans["summary"].endswith(".")
    for r in ans["relations"]:
        assert 0 <= r["subject"] < n and 0 <= r["object"] < n
        assert r["relation"] in {"left_of", "right_of", "in_front_of", "behind", "near"}


def test_processor_refuses_remote_urls(loaded: tuple[Any, Any]) -> None:
    proc, _ = loaded
    msgs = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.jpg"}}]}
    ]
    with pytest.raises(ValueError, match="remote image URLs"):
        proc.apply_chat_template(msgs, tokenize=True, return_dict=True)


def test_tokenizer_is_lossless_and_compact(loaded: tuple[Any, Any]) -> None:
    proc, _ = loaded
    text = (
        '{"objects": [{"label": "blue mug", "bbox_2d": [1, 20, 300, 1000], '
        '"score": 0.50, "description": ""}]}'
    )
    ids = proc.tokenizer.encode(text, add_special_tokens=False)
    assert proc.decode(ids) == text
    assert len(ids) <= 10
