import threading

from hypothesis import given
from hypothesis import strategies as st
from step_perception.core.ordering import OrderCounters, StampOrder


def test_a_late_older_reply_is_dropped_and_counted():
    order = StampOrder()
    # Three requests in flight (stamps 10, 20, 30); they finish 20, 10, 30.
    assert order.admit(20)
    assert not order.admit(10)  # older than what is out already
    assert order.admit(30)
    assert not order.admit(30)  # the same frame twice: late as well
    assert order.counters() == OrderCounters(published=2, dropped_out_of_order=2)


def test_reset_forgets_the_last_stamp_but_keeps_counts():
    order = StampOrder()
    assert order.admit(100)
    order.reset()  # e.g. a bag looped: stamps start over
    assert order.admit(5)
    assert order.counters() == OrderCounters(published=2, dropped_out_of_order=0)


@given(st.lists(st.integers(min_value=0, max_value=10**12), max_size=50))
def test_what_is_admitted_is_strictly_increasing(stamps):
    order = StampOrder()
    admitted = [s for s in stamps if order.admit(s)]
    assert admitted == sorted(set(admitted))
    c = order.counters()
    assert c.published == len(admitted) and c.published + c.dropped_out_of_order == len(stamps)
    # Each admitted stamp is the running maximum at its point in the input.
    best = -1
    for s in stamps:
        if s > best:
            best = s
            assert s in admitted


def test_concurrent_finishers_never_publish_backwards():
    order = StampOrder()
    published: list[int] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        for k in range(500):
            s = 4 * k + offset
            with lock:  # admit + record as one step, as the node's drain does on one thread
                if order.admit(s):
                    published.append(s)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert published == sorted(published)
    c = order.counters()
    assert c.published == len(published) and c.published + c.dropped_out_of_order == 2000
