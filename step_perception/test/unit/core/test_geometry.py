import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from step_perception.core.geometry import (
    back_project,
    box_depth,
    geometric_relations,
    locate,
    merge_relations,
)
from step_perception.core.types import (
    Box2D,
    CameraIntrinsics,
    Detection,
    Point3,
    Relation,
    RelationKind,
    RelationSource,
)

K = CameraIntrinsics(fx=600.0, fy=600.0, cx=319.5, cy=239.5, width=640, height=480)


def det(i, box, position=None, label="thing"):
    return Detection(id=str(i), label=label, box=Box2D(*box), position=position)


def scene_depth(h=480, w=640, background=3.0):
    d = np.full((h, w), background, np.float32)
    d[100:300, 100:300] = 1.2  # an object at 1.2 m
    return d


def test_box_depth_uses_the_inner_region_and_rejects_outliers():
    d = scene_depth()
    rng = np.random.default_rng(1)
    noisy = d.copy()
    # salt: 5% of the object's pixels are flying pixels / zeros
    ys, xs = rng.integers(100, 300, 2000), rng.integers(100, 300, 2000)
    noisy[ys[:1000], xs[:1000]] = 9.0
    noisy[ys[1000:], xs[1000:]] = np.nan
    # the box is a bit loose around the object: background leaks into its border
    z = box_depth(noisy, Box2D(80, 80, 320, 320), 640, 480)
    assert z == pytest.approx(1.2, abs=1e-6)


def test_no_valid_depth_gives_none_never_a_point():
    d = np.full((480, 640), np.nan, np.float32)
    assert box_depth(d, Box2D(10, 10, 100, 100), 640, 480) is None
    zero_mm = np.zeros((480, 640), np.float32)  # 0 = no return
    assert box_depth(zero_mm, Box2D(10, 10, 100, 100), 640, 480) is None
    dets = locate([det(0, (10, 10, 100, 100))], d, K, 640, 480)
    assert dets[0].position is None
    assert locate([det(0, (10, 10, 100, 100))], None, K, 640, 480)[0].position is None
    assert locate([det(0, (10, 10, 100, 100))], scene_depth(), None, 640, 480)[0].position is None


def test_sparse_depth_below_the_valid_fraction_is_rejected():
    d = np.full((480, 640), np.nan, np.float32)
    d[150, 150] = 1.0  # a single valid pixel in a large region
    assert box_depth(d, Box2D(100, 100, 300, 300), 640, 480) is None


def test_depth_at_another_resolution_is_scaled():
    full = scene_depth()
    half = full[::2, ::2].copy()  # 320x240 aligned depth
    box = Box2D(120, 120, 280, 280)
    assert box_depth(half, box, 640, 480) == pytest.approx(box_depth(full, box, 640, 480))
    # background box must not pick up the object in the half-res image
    assert box_depth(half, Box2D(400, 300, 600, 460), 640, 480) == pytest.approx(3.0)


def test_back_projection_pinhole():
    # the box centre at the principal point lies on the optical axis
    p = back_project(320.0, 240.0, 2.0, K, 640, 480)
    assert (p.x, p.y, p.z) == pytest.approx((0.0, 0.0, 2.0))
    p = back_project(320.0 + 300, 240.0 - 150, 2.0, K, 640, 480)
    assert (p.x, p.y) == pytest.approx((1.0, -0.5))
    # intrinsics of a 1280x960 calibration applied to a 640x480 image give the same ray
    k2 = CameraIntrinsics(1200.0, 1200.0, 639.5, 479.5, 1280, 960)
    q = back_project(320.0 + 300, 240.0 - 150, 2.0, k2, 640, 480)
    assert (q.x, q.y, q.z) == pytest.approx((p.x, p.y, p.z))


@settings(max_examples=200, deadline=None)
@given(
    u=st.floats(0, 640),
    v=st.floats(0, 480),
    z=st.floats(0.1, 50),
)
def test_back_projection_reprojects(u, v, z):
    p = back_project(u, v, z, K, 640, 480)
    ru = K.fx * p.x / p.z + K.cx + 0.5
    rv = K.fy * p.y / p.z + K.cy + 0.5
    assert ru == pytest.approx(u, abs=1e-6) and rv == pytest.approx(v, abs=1e-6)


def test_locate_sets_positions():
    dets = locate(
        [det(0, (100, 100, 300, 300)), det(1, (400, 300, 600, 460))], scene_depth(), K, 640, 480
    )
    assert dets[0].position is not None and dets[0].position.z == pytest.approx(1.2)
    assert dets[0].position.x == pytest.approx((199.5 - 319.5) * 1.2 / 600)
    assert dets[1].position.z == pytest.approx(3.0)


def test_geometric_relations_3d():
    a = det(0, (0, 0, 10, 10), Point3(-0.5, 0.0, 1.0))
    b = det(1, (20, 0, 30, 10), Point3(0.5, 0.0, 2.0))
    c = det(2, (40, 0, 50, 10), Point3(0.55, 0.1, 2.05))
    rels = {(r.subject_id, r.relation, r.object_id): r for r in geometric_relations([a, b, c])}
    assert ("0", RelationKind.LEFT_OF, "1") in rels
    assert ("0", RelationKind.IN_FRONT_OF, "1") in rels
    assert ("1", RelationKind.NEAR, "2") in rels
    assert ("0", RelationKind.NEAR, "1") not in rels
    assert ("1", RelationKind.ABOVE, "2") in rels  # y down: b is higher
    r = rels[("0", RelationKind.LEFT_OF, "1")]
    assert r.source is RelationSource.GEOMETRY
    assert r.distance == pytest.approx(math.dist((-0.5, 0, 1), (0.5, 0, 2)))


def test_geometric_relations_2d_without_depth():
    cup = det(0, (100, 100, 200, 200))
    plate = det(1, (80, 195, 260, 260))  # cup sits on the plate
    ball = det(2, (400, 100, 450, 150))
    sticker = det(3, (110, 110, 120, 120))  # inside the cup's box
    rels = {
        (r.subject_id, r.relation, r.object_id)
        for r in geometric_relations([cup, plate, ball, sticker])
    }
    assert ("0", RelationKind.ON_TOP_OF, "1") in rels
    assert ("0", RelationKind.LEFT_OF, "2") in rels
    assert ("3", RelationKind.INSIDE, "0") in rels
    assert ("0", RelationKind.ABOVE, "1") in rels  # overlap of 5 px is under half the height
    # the sticker overlaps the cup fully in x and y: neither left/right nor above/below
    assert not {("3", RelationKind.LEFT_OF, "0"), ("0", RelationKind.LEFT_OF, "3")} & rels
    assert not {("3", RelationKind.ABOVE, "0"), ("0", RelationKind.ABOVE, "3")} & rels
    assert all(math.isnan(r.distance) for r in geometric_relations([cup, ball]))
    assert not any(k == RelationKind.NEAR for _, k, _ in rels)  # no metric near without depth


def test_merge_keeps_both_sources_and_fills_distances():
    a = det(0, (0, 0, 10, 10), Point3(0, 0, 1))
    b = det(1, (20, 0, 30, 10), Point3(0.3, 0, 1))
    model = [
        Relation("0", RelationKind.LEFT_OF, "1", RelationSource.MODEL),
        Relation("0", RelationKind.LEFT_OF, "1", RelationSource.MODEL),
        Relation("0", RelationKind.NEAR, "7", RelationSource.MODEL),  # dangling
    ]
    merged = merge_relations(model, geometric_relations([a, b]), [a, b])
    sources = [(r.relation, r.source) for r in merged]
    assert sources.count((RelationKind.LEFT_OF, RelationSource.MODEL)) == 1
    assert (RelationKind.LEFT_OF, RelationSource.GEOMETRY) in sources
    assert merged[0].distance == pytest.approx(0.3)
    assert all(r.object_id != "7" for r in merged)
