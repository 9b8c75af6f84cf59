"""Review by neighbours: a routed utterance whose neighbours fell back is kept for discovery too.

An intent the model was never taught does not fall back every time: a share of its utterances lands
confidently on some known intent. Those routed ones sit among the ones that did fall back. A router
with ``review_neighbours`` keeps, for each router, the model's training utterances (the head's
``anchors``) and the last ``WINDOW`` utterances it routed, and looks at the ``NEIGHBOURS`` nearest of
them to each new utterance: when one of those fell back for being unsure or far from every intent
(``VOTING_REASONS``; not ambiguous, not a missing destination), the utterance is kept for review.
The training utterances never fell back, so among known phrasings the fallbacks are outnumbered and
nothing more is kept; in a region the model does not cover, the fallbacks are all there is.

On HWU64 with a quarter of the intents unknown (``benchmarks/discovery_hwu64.py --neighbours``) this
raised the share of the unknown intents' traffic that reaches discovery from 0.59 to 0.80, while the
known traffic kept went from 9% to 11%.
"""

from __future__ import annotations

import numpy as np

from .head import _product

NEIGHBOURS = 20
WINDOW = 1000
VOTING_REASONS = frozenset({"low_confidence", "far_from_intents"})


class RecentTraffic:
    """A ring of the last ``window`` utterances, with which of them fell back, beside the anchors.

    ``anchors`` are used as given when they are float32 already: routers on the same model share one
    array (``Service.recent_traffic``). Used from the service's event loop only: no lock.
    """

    def __init__(self, anchors: np.ndarray, window: int = WINDOW, neighbours: int = NEIGHBOURS):
        if anchors.ndim != 2:
            raise ValueError(f"anchors should be (n, dimension), not {anchors.shape}")
        self.anchors = np.asarray(anchors, dtype=np.float32)
        self.window = window
        self.neighbours = neighbours
        self.recent = np.zeros((window, anchors.shape[1]), dtype=np.float32)
        self.fell_back = np.zeros(window, dtype=bool)
        self.seen = 0  # utterances added so far

    def near_a_fallback(self, vector: np.ndarray) -> bool:
        """Whether one of the ``neighbours`` nearest anchors or recent utterances to ``vector`` fell back."""
        filled = min(self.seen, self.window)
        if not self.fell_back[:filled].any():
            return False
        row = np.asarray(vector).reshape(1, -1)
        similarity = np.concatenate([_product(row, self.anchors)[0], _product(row, self.recent[:filled])[0]])
        fell_back = np.concatenate([np.zeros(len(self.anchors), dtype=bool), self.fell_back[:filled]])
        k = min(self.neighbours, len(similarity))
        nearest = np.argpartition(-similarity, k - 1)[:k]
        return bool(fell_back[nearest].any())

    def add(self, vector: np.ndarray, reason: str) -> None:
        """Remember a routed utterance and why it was routed so (``RouteDecision.reason``); the oldest
        one goes once ``window`` are kept."""
        slot = self.seen % self.window
        self.recent[slot] = vector
        self.fell_back[slot] = reason in VOTING_REASONS
        self.seen += 1
