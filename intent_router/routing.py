"""The high-pass routing decision: an intent and where to send it, or a fallback.

    >>> config = RouterConfig(model="atis", destinations={"airfare": "https://fares.example/bot"})
    >>> decide(config, labels, probabilities_row, default_threshold=0.62)
    RouteDecision(intent='airfare', confidence=0.97, destination='https://fares.example/bot', fallback=False, ...)

Rules, in order:
1. ``low_confidence``: the top confidence is below the threshold (the intent's own override, else the
   router's, else the model's validation-fitted default) -> the fallback destination.
2. ``far_from_intents``: the utterance's cosine to the nearest intent centroid is below the
   similarity threshold (the router's, else the model's default: the 5th percentile of validation
   similarities) -> the fallback destination. This catches what the model was never taught: a
   softmax is often confident about an utterance of an unknown intent, a centroid cosine is not.
3. ``ambiguous``: the top two are closer than ``ambiguity_margin`` -> the fallback destination, with
   both candidates in ``alternatives`` so the bot can ask which one was meant.
4. ``no_destination``: the intent has no destination and there is no ``default_destination`` -> fallback.
5. ``confident``: the intent's destination.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from pydantic import BaseModel, Field


class RouterConfig(BaseModel):
    """How one router turns a model's confidences into a destination (stored as JSON)."""

    model: str
    destinations: dict[str, str] = Field(default_factory=dict, description="intent -> name or URL")
    default_destination: str | None = Field(None, description="for intents not in destinations")
    fallback_destination: str = "fallback"
    threshold: float | None = Field(None, ge=0, le=1, description="None: the model's fitted default")
    intent_thresholds: dict[str, float] = Field(default_factory=dict, description="per-intent overrides")
    similarity_threshold: float | None = Field(
        None, ge=0, le=1, description="cosine to the nearest intent centroid; None: the model's default, 0: off"
    )
    ambiguity_margin: float = Field(0.1, ge=0, le=1)
    alternatives: int = Field(3, ge=0, le=20, description="how many runners-up to return")


@dataclass
class RouteDecision:
    intent: str | None
    confidence: float
    destination: str
    fallback: bool
    reason: str  # confident | low_confidence | far_from_intents | ambiguous | no_destination
    threshold: float
    alternatives: list[dict] = field(default_factory=list)
    similarity: float | None = None  # cosine to the nearest intent centroid (None: the model keeps no centroids)

    def to_dict(self) -> dict:
        return asdict(self)


def decide(
    config: RouterConfig,
    labels: Sequence[str],
    probabilities: np.ndarray,
    default_threshold: float,
    similarity: float | None = None,
    default_similarity_threshold: float = 0.0,
) -> RouteDecision:
    """Route one utterance given its confidence for every label (a row of ``predict_proba``) and its
    cosine to the nearest intent centroid (None skips that rule)."""
    order = np.argsort(-probabilities)
    top, top_confidence = labels[order[0]], float(probabilities[order[0]])
    runner_up = float(probabilities[order[1]]) if len(order) > 1 else 0.0
    threshold = config.intent_thresholds.get(
        top, config.threshold if config.threshold is not None else default_threshold
    )
    alternatives = [
        {"intent": labels[i], "confidence": round(float(probabilities[i]), 6)}
        for i in order[1 : 1 + config.alternatives]
    ]
    destination = config.destinations.get(top, config.default_destination)

    similarity_threshold = (
        config.similarity_threshold if config.similarity_threshold is not None else default_similarity_threshold
    )
    similarity = None if similarity is None else round(float(similarity), 6)

    def fallback(reason: str) -> RouteDecision:
        destination = config.fallback_destination
        return RouteDecision(top, top_confidence, destination, True, reason, threshold, alternatives, similarity)

    if top_confidence < threshold:
        return fallback("low_confidence")
    if similarity is not None and similarity < similarity_threshold:
        return fallback("far_from_intents")
    if top_confidence - runner_up < config.ambiguity_margin:
        return fallback("ambiguous")
    if destination is None:
        return fallback("no_destination")
    return RouteDecision(top, top_confidence, destination, False, "confident", threshold, alternatives, similarity)
