"""The content filter the node pushes the throttle into, over real DDS (in one process).

Small messages only: Fast DDS 2.x (Jazzy) stops delivering filtered samples over
~64 KB, which is why the node's ``content_filter: auto`` does not use it there.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from ros_harness import qos, stamp_of, wait_for

pytestmark = [pytest.mark.ros]


def test_stamp_filter_moves_with_the_bound(ros: Any, tester: Any) -> None:
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    from step_perception.ros.content_filter import StampFilter

    topic = "/it_cft/image_raw"
    got: list[int] = []
    # The filtered reader lives on a node spun only here: turning a reader into a filtered one
    # recreates it, which must not race an executor waiting on it (the node does it from a
    # callback of the subscription's own mutually exclusive group, for the same reason).
    reader = Node("cft_reader", context=ros.context)
    spin = SingleThreadedExecutor(context=ros.context)
    spin.add_node(reader)
    sub = reader.create_subscription(Image, topic, lambda m: got.append(stamp_of(m)), qos(True, 10))
    filt = StampFilter(sub)
    try:
        if not filt.enable():
            pytest.skip("this RMW has no content-filtered topics")
        _check_bounds(tester, topic, filt, got, spin)
    finally:
        spin.shutdown()
        reader.destroy_node()


def _check_bounds(tester: Any, topic: str, filt: Any, got: list[int], spin: Any) -> None:
    from sensor_msgs.msg import Image

    pub = tester.create_publisher(Image, topic, qos(True, 10))
    assert wait_for(lambda: pub.get_subscription_count() > 0, 10.0)
    time.sleep(0.5)

    def send(stamps: range) -> list[int]:
        got.clear()
        for s in stamps:
            msg = Image(height=2, width=2, encoding="mono8", step=2, data=bytes(4))
            msg.header.stamp.sec, msg.header.stamp.nanosec = s, 500
            pub.publish(msg)
            time.sleep(0.01)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            spin.spin_once(timeout_sec=0.05)
        return sorted(got)

    ns = 1_000_000_000
    assert send(range(10, 15)) == [s * ns + 500 for s in range(10, 15)]  # open: all pass
    assert filt.set_bound(12 * ns + 501)
    time.sleep(0.3)  # the new parameters travel to the writer through discovery
    assert send(range(20, 25)) == [s * ns + 500 for s in range(20, 25)]
    # Same second, earlier nanoseconds: 12 s + 500 ns is below the bound, 13 s + 500 ns above.
    assert send(range(10, 14)) == [13 * ns + 500]
    assert not filt.set_bound(12 * ns + 501)  # unchanged: no DDS traffic
    assert filt.set_bound(None)
    time.sleep(0.3)
    assert send(range(30, 33)) == []  # closed
    assert filt.set_bound(0)
    time.sleep(0.3)
    assert send(range(40, 42)) == [s * ns + 500 for s in range(40, 42)]
