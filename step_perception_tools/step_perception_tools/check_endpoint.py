"""``step-perception check-endpoint URL``: probe a live model server before deploying the node.

It sends the node's own request (a generated 1280x720 tabletop scene prepared with the node's
geometry, the profile's prompt, schema and sampling) a few times and reports on one screen:

* the models the server lists (``GET /models``);
* round-trip latency, the median of ``--requests`` requests;
* whether ``response_format`` is honoured (every answer valid JSON against the schema sent);
* whether reasoning leaks into the content (``<think>``/``</think>`` in ``message.content``), and
  where the server puts it (``reasoning`` in vLLM 0.32, ``reasoning_content`` in SGLang);
* prompt tokens per image at the node's send geometry (with vs without the image), against the
  profile's own count where it has one;
* which box convention the answers follow: the scene is generated, so its objects' boxes are
  known. Every answer is parsed under each convention the profiles use (core/profiles.py
  ``BoxConvention``), mapped back to source pixels as the node would, and scored against the
  truth (one-to-one IoU matching). The best convention, and the ``model_profile`` it implies, are
  named only when the fit is clear; a random-weight model (or one that is no detector) gets
  "inconclusive", never a recommendation.

Exit status 0 when nothing is wrong, 1 otherwise (2: bad arguments). A box convention that fits
clearly but differs from the profile's is wrong (the node would misplace every box).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import jsonschema
import yaml
from step_perception.core.config import PerceptionConfig
from step_perception.core.endpoints import normalise_endpoint
from step_perception.core.errors import ParseError, StepPerceptionError
from step_perception.core.imaging import prepare_array_for
from step_perception.core.parsing import parse_answer
from step_perception.core.profiles import PROFILES, BoxConvention, ModelProfile, get_profile
from step_perception.core.prompts import build_request
from step_perception.core.types import Box2D, ModelRequest, PreparedImage

__all__ = [
    "SCENE_SEED",
    "ConventionFit",
    "EndpointReport",
    "add_arguments",
    "box_fit",
    "check_endpoint",
    "main",
    "recommend_profile",
]

_THINK_MARKS = ("<think>", "</think>")
#: A convention is named only when its boxes match the scene at least this well (matched IoU, see
#: ``box_fit``): a real detector scores 0.7-0.9 on the generated scene, random boxes below 0.1.
FIT_MIN_SCORE = 0.5
#: ... and beat every other reading by this much; closer, two readings fit and it is inconclusive.
FIT_MARGIN = 0.2
#: The generated scene sent: five objects spread over the table (one object would let a wrong
#: reading of a near-square box score well).
SCENE_SEED = 4
#: Profiles named by the served model's name, for conventions that several profiles share.
_NAME_HINTS = (("step", "step3p7"), ("qwen3", "qwen3_vl"), ("qwen2.5", "qwen2_5_vl"),
               ("qwen2_5", "qwen2_5_vl"), ("gemini", "gemini"))  # fmt: skip


@dataclass(frozen=True)
class ConventionFit:
    """How well the answers' boxes, read in one convention, match the scene's truth."""

    convention: BoxConvention
    score: float  # mean over answers of matched IoU / max(truth objects, boxes); 0..1
    boxes: int  # boxes that parsed, over all answers


def _matched_score(found: Sequence[Box2D], truth: Sequence[Box2D]) -> float:
    """Sum of one-to-one matched IoUs (greedy, best pairs first) over max(len(found), len(truth)).

    Misses and extra boxes both lower it, so many random boxes cannot buy a good score.
    """
    if not found or not truth:
        return 0.0
    pairs = sorted(
        ((f.iou(t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)), reverse=True
    )
    used_f: set[int] = set()
    used_t: set[int] = set()
    total = 0.0
    for iou, i, j in pairs:
        if iou <= 0.0:
            break
        if i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
            total += iou
    return total / max(len(found), len(truth))


def box_fit(
    answers: Sequence[str], profile: ModelProfile, image: PreparedImage, truth: Sequence[Box2D]
) -> tuple[ConventionFit, ...]:
    """Score ``answers`` (raw contents) under every box convention, best first.

    Each answer is parsed as the node would (``parse_answer``, boxes mapped to source pixels
    through the image's transform), with only the profile's convention swapped.
    """
    fits = []
    for convention in BoxConvention:
        variant = dataclasses.replace(profile, box_convention=convention)
        scores: list[float] = []
        boxes = 0
        for text in answers:
            try:
                found = [d.box for d in parse_answer(text, variant, image).detections]
            except ParseError:
                found = []
            boxes += len(found)
            scores.append(_matched_score(found, truth))
        mean = statistics.fmean(scores) if scores else 0.0
        fits.append(ConventionFit(convention, mean, boxes))
    return tuple(sorted(fits, key=lambda f: f.score, reverse=True))


def recommend_profile(convention: BoxConvention, current: str, model: str) -> str:
    """Return the ``model_profile`` that reads boxes in ``convention``.

    The current one if it does, else the one the model's name points to, else ``generic``, else
    the first that does.
    """
    fitting = [name for name, p in PROFILES.items() if p.box_convention is convention]
    if current in fitting:
        return current
    low = model.lower()
    for hint, name in _NAME_HINTS:
        if hint in low and name in fitting:
            return name
    return "generic" if "generic" in fitting else fitting[0]


@dataclass
class EndpointReport:
    """What the probe found; ``problems`` empty means the endpoint is fit for the node."""

    url: str
    models: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    answers: int = 0
    schema_valid: int = 0
    reasoning_field: str = ""  # where reasoning arrived, "" = none seen
    leaks: int = 0  # answers with <think> markup in the content
    image_tokens: int | None = None
    expected_image_tokens: int | None = None
    sent_size: tuple[int, int] = (0, 0)
    fits: tuple[ConventionFit, ...] = ()  # best first; empty: not scored (no answers)
    box_convention: BoxConvention | None = None  # named only when the fit is clear
    recommended_profile: str = ""
    box_note: str = ""  # why inconclusive
    problems: list[str] = field(default_factory=list)

    def _box_line(self) -> str:
        if self.box_convention is not None:
            others = ", ".join(f"{f.convention.value} {f.score:.2f}" for f in self.fits[1:])
            return (
                f"{self.box_convention.value} fits the scene (score {self.fits[0].score:.2f}; "
                f"{others}) -> model_profile {self.recommended_profile}"
            )
        return f"inconclusive ({self.box_note or 'no answers'})"

    def lines(self) -> list[str]:
        """Return the one-screen report, line by line."""
        median = f"{statistics.median(self.latencies_s):.2f} s" if self.latencies_s else "-"
        tokens = "unknown (no usage)" if self.image_tokens is None else str(self.image_tokens)
        if self.expected_image_tokens is not None:
            tokens += f" (profile expects {self.expected_image_tokens})"
        return [
            f"endpoint         {self.url}",
            f"models           {', '.join(self.models) or '(none listed)'}",
            f"latency          median {median} over {len(self.latencies_s)} requests",
            f"response_format  {self.schema_valid}/{self.answers} answers schema-valid",
            f"reasoning        {self.reasoning_field or 'none seen'}; "
            f"{self.leaks} answers with <think> in the content",
            f"image tokens     {tokens} per {self.sent_size[0]}x{self.sent_size[1]} image",
            f"box convention   {self._box_line()}",
            "verdict          " + ("OK" if not self.problems else "; ".join(self.problems)),
        ]


def _body(req: ModelRequest, model: str, *, image: bool, extras: bool) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": req.user}]
    if image:
        content.insert(0, {"type": "image_url", "image_url": {"url": req.image.data_url()}})
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": req.system},
            {"role": "user", "content": content},
        ],
        "max_tokens": req.sampling.max_tokens,
        "temperature": req.sampling.temperature,
    }
    if req.use_response_format and req.json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "perception_answer", "schema": dict(req.json_schema)},
        }
    if extras and req.sampling.reasoning_effort:
        body["reasoning_effort"] = req.sampling.reasoning_effort
    if extras and req.sampling.thinking_token_budget is not None:
        body["thinking_token_budget"] = req.sampling.thinking_token_budget
    return body


def check_endpoint(
    url: str,
    *,
    config: PerceptionConfig,
    requests: int = 3,
    timeout_s: float = 60.0,
    api_key: str = "",
) -> EndpointReport:
    """Probe ``url`` (an OpenAI base URL) with the node's request for ``config``."""
    from step_perception_tools.scenes import render_scene

    base = normalise_endpoint(url)  # the node's own rule: ConfigError if it would refuse it
    report = EndpointReport(url=base)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    client = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=5.0), headers=headers)
    with client:
        try:
            listed = client.get(f"{base}/models")
            listed.raise_for_status()
            report.models = [str(m.get("id")) for m in listed.json().get("data", [])]
        except (httpx.HTTPError, ValueError, AttributeError) as err:
            report.problems.append(f"GET /models failed ({type(err).__name__})")
            return report
        model = config.model if config.model in report.models else (report.models or [""])[0]
        scene = render_scene(seed=SCENE_SEED, index=0)
        image = prepare_array_for(scene.rgb[:, :, ::-1].copy(), config)
        req = build_request(config, image)
        report.sent_size = (image.width, image.height)
        profile = get_profile(config.model_profile)
        if profile.image_tokens is not None:
            report.expected_image_tokens = profile.image_tokens(image.width, image.height)
        extras = True
        prompt_tokens: int | None = None
        contents: list[str] = []
        for _ in range(requests):
            t0 = time.monotonic()
            reply = client.post(
                f"{base}/chat/completions", json=_body(req, model, image=True, extras=extras)
            )
            if reply.status_code in (400, 422) and extras and "budget" in reply.text.lower():
                extras = False  # a server without a reasoning parser refuses the budget
                reply = client.post(
                    f"{base}/chat/completions", json=_body(req, model, image=True, extras=False)
                )
            report.latencies_s.append(time.monotonic() - t0)
            if reply.status_code != 200:
                report.problems.append(f"HTTP {reply.status_code} on a chat request")
                break
            try:
                data = reply.json()
                message = data["choices"][0]["message"]
            except (ValueError, KeyError, IndexError, TypeError):
                report.problems.append("a chat answer is not a chat completion")
                break
            report.answers += 1
            for name in ("reasoning", "reasoning_content"):
                if message.get(name):
                    report.reasoning_field = f"separate (message.{name})"
            content = message.get("content") or ""
            contents.append(content)
            if any(mark in content for mark in _THINK_MARKS):
                report.leaks += 1
            try:
                assert req.json_schema is not None
                jsonschema.validate(json.loads(content), dict(req.json_schema))
                report.schema_valid += 1
            except (ValueError, jsonschema.ValidationError, AssertionError):
                pass
            usage = data.get("usage") or {}
            if isinstance(usage.get("prompt_tokens"), int) and usage["prompt_tokens"] > 0:
                prompt_tokens = usage["prompt_tokens"]
        if prompt_tokens is not None:
            text_only = client.post(
                f"{base}/chat/completions",
                json={**_body(req, model, image=False, extras=False), "max_tokens": 1},
            )
            usage = (text_only.json().get("usage") or {}) if text_only.status_code == 200 else {}
            if isinstance(usage.get("prompt_tokens"), int):
                report.image_tokens = prompt_tokens - usage["prompt_tokens"]
        truth = [Box2D(*o.box) for o in scene.objects]
        _judge_boxes(report, contents, profile, model, image, truth)
    if report.answers and report.schema_valid < report.answers:
        report.problems.append(
            f"response_format not honoured ({report.answers - report.schema_valid} of "
            f"{report.answers} answers not schema-valid)"
        )
    if report.leaks:
        report.problems.append(f"reasoning leaks into the content ({report.leaks} answers)")
    if (
        report.image_tokens is not None
        and report.expected_image_tokens is not None
        and report.image_tokens != report.expected_image_tokens
    ):
        report.problems.append(
            f"image costs {report.image_tokens} tokens, profile says {report.expected_image_tokens}"
        )
    return report


def _judge_boxes(
    report: EndpointReport,
    contents: Sequence[str],
    profile: ModelProfile,
    model: str,
    image: PreparedImage,
    truth: Sequence[Box2D],
) -> None:
    """Fill the box-convention part of ``report`` (and its problem, on a clear mismatch)."""
    if not contents:
        return
    report.fits = box_fit(contents, profile, image, truth)
    best, runner_up = report.fits[0], report.fits[1]
    if best.boxes == 0:
        report.box_note = "no box parsed under any convention"
    elif best.score < FIT_MIN_SCORE:
        report.box_note = (
            f"best {best.convention.value} scores {best.score:.2f} < {FIT_MIN_SCORE}: the boxes "
            "do not match the scene (random weights, or not a detector?)"
        )
    elif best.score - runner_up.score < FIT_MARGIN:
        report.box_note = (
            f"{best.convention.value} {best.score:.2f} and {runner_up.convention.value} "
            f"{runner_up.score:.2f} fit about equally"
        )
    else:
        report.box_convention = best.convention
        report.recommended_profile = recommend_profile(best.convention, profile.name, model)
        if profile.box_convention is not best.convention:
            report.problems.append(
                f"boxes follow {best.convention.value}, profile {profile.name} reads "
                f"{profile.box_convention.value}: use model_profile {report.recommended_profile}"
            )


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``check-endpoint``."""
    p.add_argument("url", help="OpenAI base URL, e.g. http://gpu-ws:8000/v1")
    p.add_argument("--model", default="", help="model name (default: the first one listed)")
    p.add_argument(
        "--profile", default="step3p7", help="model_profile of the node (default step3p7)"
    )
    p.add_argument("--requests", type=int, default=3, help="chat requests for the median (3)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (60)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a node parameter, e.g. --param detail=low --param thinking_token_budget=8",
    )
    p.add_argument("--api-key-env", default="", help="environment variable holding the API key")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the probe, print the report; 0 when fit, 1 otherwise."""
    p = argparse.ArgumentParser(prog="step-perception check-endpoint", description=__doc__)
    add_arguments(p)
    args = p.parse_args(argv)
    values: dict[str, object] = {"model_profile": args.profile, "model": args.model or "-"}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            p.error(f"--param wants NAME=VALUE, got {item!r}")
        # Typed as `ros2 param set` would type it (YAML: 8 is an int, true a bool).
        values[name.strip()] = yaml.safe_load(value.strip()) if value.strip() else ""
    try:
        config = PerceptionConfig.from_mapping(values)
    except StepPerceptionError as err:
        p.error(str(err))
    key = os.environ.get(args.api_key_env, "") if args.api_key_env else ""
    try:
        report = check_endpoint(
            args.url, config=config, requests=args.requests, timeout_s=args.timeout, api_key=key
        )
    except StepPerceptionError as err:  # a URL the node would refuse
        p.error(str(err))
    print("\n".join(report.lines()))
    return 0 if not report.problems else 1


if __name__ == "__main__":
    sys.exit(main())
