"""Fit progress for the benchmarks: each stage's start and every tenth of it, with the time taken."""

from __future__ import annotations

import time


class Progress:
    """``IntentClassifier.fit(progress=Progress("name"))``: full-ATIS fits take many minutes."""

    def __init__(self, name: str = "fit"):
        self.name, self.shown = name, ("", -1)
        self.started = time.perf_counter()

    def __call__(self, stage: str, fraction: float) -> None:
        step = (stage, int(fraction * 10))
        if step != self.shown:
            self.shown = step
            print(f"{self.name}: {stage} {fraction:.0%} after {time.perf_counter() - self.started:.0f} s", flush=True)
