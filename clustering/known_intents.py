"""New intent or coverage gap: what the fine-tuned model says about the centre of each cluster.

A cluster's centre is the mean of its members' tuned embeddings, renormalised to unit length. The
model's own head classifies that centre: its top intent is the cluster's **nearest existing intent**
and its confidence the **similarity**. Each member fell below the threshold on its own, but when the
members agree on where they belong, their mean lands inside that intent's region and the head is
confident: the cluster is a **coverage gap** of that intent (phrasings it knows too weakly). When
the centre stays below the model's threshold, the members point nowhere the model knows: a **new
intent**. The threshold is the model's own fitted routing threshold (``info_["default_threshold"]``)
unless one is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from intent_router.model import IntentClassifier

NEW_INTENT = "new_intent"
COVERAGE_GAP = "coverage_gap"


@dataclass(frozen=True)
class IntentMatch:
    nearest_intent: str
    similarity: float  # the head's confidence for nearest_intent at the cluster's centre
    kind: str  # NEW_INTENT or COVERAGE_GAP


class KnownIntents:
    """Match clusters to the intents of a fine-tuned ``IntentClassifier``."""

    def __init__(self, model: IntentClassifier, threshold: float | None = None):
        self.model = model
        self.threshold = threshold if threshold is not None else default_threshold(model)

    def match(self, member_embeddings: Sequence[np.ndarray]) -> list[IntentMatch]:
        """One match per cluster, given each cluster's members as rows of the model's own embeddings."""
        if not member_embeddings:
            return []
        centres = np.vstack([_unit(np.asarray(rows).mean(axis=0)) for rows in member_embeddings])
        head, labels = self.model.head_, self.model.labels_
        assert head is not None and labels is not None, "a fitted model is needed"
        probabilities = head.predict_proba(centres)
        matches = []
        for row in probabilities:
            best = int(row.argmax())
            kind = COVERAGE_GAP if row[best] >= self.threshold else NEW_INTENT
            matches.append(IntentMatch(labels[best], round(float(row[best]), 4), kind))
        return matches


def default_threshold(model: IntentClassifier) -> float:
    return float(model.info_.get("default_threshold", {}).get("value", 0.5))


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)
