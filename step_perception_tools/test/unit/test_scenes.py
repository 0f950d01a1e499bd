"""The synthetic scene renderer: determinism, vocabulary, depth/K consistency, boxes."""

from __future__ import annotations

import numpy as np
import pytest
from step_perception_tools.scenes import (
    COLOURS,
    LABELS,
    SHAPES,
    Scene,
    SceneStyle,
    iter_scenes,
    render_scene,
)


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return list(iter_scenes(seed=101, count=12))


def test_vocabulary_is_the_wire_contract() -> None:
    assert SHAPES == ("cube", "ball", "cylinder", "cone", "mug")
    assert COLOURS == ("red", "green", "blue", "yellow", "orange", "purple", "white")
    assert len(LABELS) == 35 == len(set(LABELS))
    assert "red cube" in LABELS and "white mug" in LABELS


def test_same_seed_and_index_give_identical_scenes() -> None:
    a, b = render_scene(7, 3), render_scene(7, 3)
    assert np.array_equal(a.rgb, b.rgb)
    assert np.array_equal(a.depth_mm, b.depth_mm)
    assert a.objects == b.objects and a.intrinsics == b.intrinsics


def test_other_index_or_seed_gives_another_scene() -> None:
    a = render_scene(7, 3)
    assert not np.array_equal(a.rgb, render_scene(7, 4).rgb)
    assert not np.array_equal(a.rgb, render_scene(8, 3).rgb)


def test_iter_scenes_matches_render_scene(scenes: list[Scene]) -> None:
    assert [s.index for s in scenes] == list(range(12))
    again = render_scene(101, 5)
    assert np.array_equal(again.rgb, scenes[5].rgb) and again.objects == scenes[5].objects


def test_image_and_depth_shapes(scenes: list[Scene]) -> None:
    for s in scenes:
        assert s.rgb.shape == (720, 1280, 3) and s.rgb.dtype == np.uint8
        assert s.depth_mm.shape == (720, 1280) and s.depth_mm.dtype == np.uint16
        assert (s.intrinsics.width, s.intrinsics.height) == (1280, 720)
        # the table fills the view: almost every pixel has a reading, all in sensor range
        assert (s.depth_mm > 0).mean() > 0.95
        assert s.depth_mm.max() <= 6000
        assert s.rgb.std() > 10  # not a blank frame


def test_labels_boxes_and_counts(scenes: list[Scene]) -> None:
    for s in scenes:
        assert 1 <= len(s.objects) <= 6
        labels = [o.label for o in s.objects]
        assert len(set(labels)) == len(labels)
        for o in s.objects:
            assert o.label in LABELS and o.label == f"{o.colour} {o.shape}"
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 < x2 <= 1280 and 0 <= y1 < y2 <= 720
            assert x2 - x1 >= 4 and y2 - y1 >= 4


def test_box_centre_back_projects_to_position(scenes: list[Scene]) -> None:
    for s in scenes:
        k = s.intrinsics
        for o in s.objects:
            x1, y1, x2, y2 = o.box
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            z = s.depth_mm[int(cy), int(cx)] / 1000.0
            assert z > 0
            p = np.array([(cx - k.cx) * z / k.fx, (cy - k.cy) * z / k.fy, z])
            assert np.linalg.norm(p - np.array(o.position)) < 0.01
            assert 0.4 < o.position[2] < 2.3  # objects stand 0.5-2 m away


def test_depth_is_a_plane_consistent_with_k() -> None:
    """Back-projected table pixels (away from objects) lie on one plane."""
    s = render_scene(5, 0)
    k = s.intrinsics
    mask = np.ones(s.depth_mm.shape, bool)
    for o in s.objects:
        x1, y1, x2, y2 = (int(v) for v in o.box)
        mask[max(y1 - 40, 0) : y2 + 40, max(x1 - 40, 0) : x2 + 40] = False
    vs, us = np.nonzero(mask[::8, ::8])
    vs, us = vs * 8, us * 8
    z = s.depth_mm[vs, us] / 1000.0
    keep = (z > 0) & (z < 2.5)  # near table (the far wall is another plane)
    pts = np.stack([(us - k.cx) * z / k.fx, (vs - k.cy) * z / k.fy, z], axis=1)[keep]
    centred = pts - pts.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    normal = vt[2]
    residual = np.abs(centred @ normal)
    assert np.median(residual) < 0.003  # mm quantisation and sensor noise only
    # the camera looks down at the table: the plane normal is mostly along optical y/z
    assert abs(normal[0]) < 0.2


def test_objects_stand_out_from_the_table() -> None:
    """Object pixels are nearer than the table behind them would be."""
    s = render_scene(9, 2)
    for o in s.objects:
        x1, y1, x2, y2 = o.box
        u, v = int((x1 + x2) / 2), int((y1 + y2) / 2)
        obj = int(s.depth_mm[v, u])
        assert obj > 0, o  # valid depth on the object
        # just above the box top the camera sees the table behind the object: farther by more
        # than 5 cm (9-19 cm in this scene), and valid
        top = int(s.depth_mm[max(int(y1) - 3, 0), u])
        assert top > obj + 50, (o, obj, top)


def test_smaller_resolution_scales_intrinsics() -> None:
    s = render_scene(3, 1, width=640, height=360)
    assert s.rgb.shape == (360, 640, 3) and s.depth_mm.shape == (360, 640)
    assert s.intrinsics.width == 640 and 0.6 * 640 < s.intrinsics.fx < 0.8 * 640


def test_too_small_size_is_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        render_scene(1, 1, width=32, height=32)


@pytest.mark.parametrize("style", [SceneStyle.RANDOMISED, SceneStyle.FLAT])
def test_other_styles_are_deterministic_distinct_and_keep_clean_truth(style: SceneStyle) -> None:
    """Each look is its own deterministic stream; its truth follows the same rules as standard."""
    a, b = render_scene(21, 4, 640, 360, style), render_scene(21, 4, 640, 360, style.value)
    assert np.array_equal(a.rgb, b.rgb) and a.objects == b.objects
    assert not np.array_equal(a.rgb, render_scene(21, 4, 640, 360).rgb)
    for i in range(6):
        s = render_scene(21, i, 640, 360, style)
        assert 1 <= len(s.objects) <= 6
        for o in s.objects:
            assert o.label in LABELS
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 360
            # the box centre back-projects through depth and K onto the stored position
            u, v = int((x1 + x2) / 2), int((y1 + y2) / 2)
            z = s.depth_mm[v, u] / 1000.0
            k = s.intrinsics
            assert z > 0
            assert o.position[2] == pytest.approx(z, abs=0.01)
            assert o.position[0] == pytest.approx((u - k.cx) * z / k.fx, abs=0.01)


def test_randomised_style_varies_the_focal_length_within_its_range() -> None:
    focal = [
        render_scene(33, i, 320, 180, SceneStyle.RANDOMISED).intrinsics.fx / 320 for i in range(12)
    ]
    assert min(focal) >= 0.55 and max(focal) <= 0.95
    assert max(focal) - min(focal) > 0.1


def test_unknown_style_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="cartoon"):
        render_scene(1, 1, 320, 180, "cartoon")
