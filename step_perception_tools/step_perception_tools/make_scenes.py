"""``step-perception make-scenes``: render synthetic scenes into a scenes bag with ground truth."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from rich.console import Console
from step_perception.core.errors import StepPerceptionError
from step_perception.core.types import Box2D, Detection, Point3

from step_perception_tools.bags import SceneBagWriter, Storage
from step_perception_tools.progress import progress_bar
from step_perception_tools.scenes import Scene, render_scene

__all__ = ["SCENES_START_NS", "make_scenes"]

#: Stamp of the first frame of every scenes bag (2026-01-01T00:00:00Z): deterministic bags.
SCENES_START_NS = 1_767_225_600 * 1_000_000_000


def _render(args: tuple[int, int, int, int]) -> Scene:
    seed, index, width, height = args
    return render_scene(seed, index, width, height)


def make_scenes(
    out: Path,
    *,
    count: int,
    seed: int = 0,
    width: int = 1280,
    height: int = 720,
    fps: float = 15.0,
    storage: str = "mcap",
    encoding: str = "rgb8",
    jpeg_quality: int = 90,
    jobs: int = 1,
    console: Console | None = None,
) -> int:
    """Render ``count`` scenes of stream ``seed`` into a new scenes bag; returns frames written."""
    if count < 1 or fps <= 0:
        raise StepPerceptionError(f"need count >= 1 and fps > 0 (got {count}, {fps})")
    period_ns = 1e9 / fps

    def scenes() -> Iterator[Scene]:
        tasks = ((seed, i, width, height) for i in range(count))
        if jobs <= 1:
            for t in tasks:
                yield _render(t)
            return
        # Bounded look-ahead keeps memory flat while workers render in parallel.
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            window: deque[Future[Scene]] = deque()
            for t in tasks:
                window.append(pool.submit(_render, t))
                if len(window) >= 2 * jobs:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()

    with (
        SceneBagWriter(
            out, storage=Storage(storage), encoding=encoding, jpeg_quality=jpeg_quality
        ) as writer,
        progress_bar(console) as progress,
    ):
        task = progress.add_task(f"scenes -> {out}", total=count)
        for scene in scenes():
            truth = tuple(
                Detection(
                    id=str(i),
                    label=o.label,
                    box=Box2D(*o.box),
                    score=1.0,
                    position=Point3(*o.position),
                )
                for i, o in enumerate(scene.objects)
            )
            stamp = SCENES_START_NS + round(scene.index * period_ns)
            writer.write(stamp, scene.rgb, scene.depth_mm, scene.intrinsics, truth)
            progress.advance(task)
        return writer.frames
