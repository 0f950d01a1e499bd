"""core.box_encoding is the exact inverse of the parser's box reading, for every convention."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from step_perception.core.box_encoding import encode_box, encode_source_box
from step_perception.core.parsing import box_to_sent
from step_perception.core.profiles import BoxConvention
from step_perception.core.types import Box2D, ImageTransform, PreparedImage

W, H = 728, 410


@st.composite
def boxes(draw):
    x1 = draw(st.floats(0, W - 2))
    y1 = draw(st.floats(0, H - 2))
    x2 = draw(st.floats(x1 + 1.5, W))
    y2 = draw(st.floats(y1 + 1.5, H))
    return Box2D(x1, y1, x2, y2)


@pytest.mark.parametrize("convention", list(BoxConvention))
@given(box=boxes())
def test_box_to_sent_reads_back_what_encode_box_wrote(convention, box):
    back = box_to_sent(list(encode_box(box, convention, W, H)), convention, W, H)
    assert back is not None
    assert (back.x1, back.y1, back.x2, back.y2) == pytest.approx((box.x1, box.y1, box.x2, box.y2))


def test_conventions_lay_the_numbers_out_differently():
    box = Box2D(72.8, 41.0, 364.0, 205.0)  # 10 %..50 % of the sent image
    assert encode_box(box, BoxConvention.ABS_PIXELS_SENT, W, H) == (72.8, 41.0, 364.0, 205.0)
    assert encode_box(box, BoxConvention.NORM_1000_XYXY, W, H) == pytest.approx(
        (100, 100, 500, 500)
    )
    yxyx = encode_box(Box2D(72.8, 0.0, 364.0, 410.0), BoxConvention.NORM_1000_YXYX, W, H)
    assert yxyx == pytest.approx((0, 100, 1000, 500))


def test_source_box_goes_through_the_image_transform():
    image = PreparedImage(
        data=b"x",
        mime="image/jpeg",
        width=W,
        height=H,
        transform=ImageTransform(1920 / W, 1080 / H),
        source_width=1920,
        source_height=1080,
    )
    values = encode_source_box(
        Box2D(192.0, 108.0, 960.0, 540.0), image, BoxConvention.NORM_1000_XYXY
    )
    assert values == pytest.approx((100, 100, 500, 500))
