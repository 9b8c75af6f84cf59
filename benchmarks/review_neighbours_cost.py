"""What ``review_neighbours`` adds to a route: ``near_a_fallback`` and ``add`` on a full window.

    python benchmarks/review_neighbours_cost.py

The cost depends on the number of anchors and the dimension, not on what the vectors hold, so the
vectors are random unit vectors of all-MiniLM-L6-v2's 384 dimensions; a tenth of the window fell back.
Prints the median and 95th percentile per route over 2,000 routes for each anchor count.
"""

from __future__ import annotations

import time

import numpy as np

from intent_router.head import MAX_ANCHORS
from intent_router.neighbourhood import WINDOW, RecentTraffic

DIMENSION, ROUTES = 384, 2000


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.normal(size=(n, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main() -> None:
    rng = np.random.default_rng(0)
    print("| anchors | window | median ms | p95 ms |\n|---|---|---|---|")
    for anchors in (1_000, 6_700, MAX_ANCHORS, 20_000):
        traffic = RecentTraffic(unit(rng, anchors).astype(np.float16))
        for vector in unit(rng, WINDOW):
            traffic.add(vector, "low_confidence" if rng.random() < 0.1 else "confident")
        seconds = []
        for vector in unit(rng, ROUTES):
            started = time.perf_counter()
            traffic.near_a_fallback(vector)
            traffic.add(vector, "low_confidence" if rng.random() < 0.1 else "confident")
            seconds.append(time.perf_counter() - started)
        median, p95 = np.percentile(seconds, [50, 95]) * 1000
        print(f"| {anchors:,} | {WINDOW:,} | {median:.2f} | {p95:.2f} |")


if __name__ == "__main__":
    main()
