"""The one timer the stand-alone benchmarks share: the median of N wall-clock runs."""

import statistics
import time
from collections.abc import Callable


def median_s(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls of ``fn``: robust to the odd run a busy machine slows down."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
