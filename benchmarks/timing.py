"""What the benchmarks share: the median wall time of a call."""

import statistics
import time


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn``, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
