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

A **multilabel** model (``label_thresholds`` given: each label's fitted decision threshold) can
accept several intents at once. ``intents`` lists every intent at or above its threshold (the
intent's override, else the router's ``threshold``, else the label's fitted threshold), most
confident first, cut to the closest set the model was trained on (``combinations``, when given: the
model's ``combinations_``), and the utterance goes to the destination of the first of them:
1. ``low_confidence``: no intent reaches its threshold (the predicted set is empty) -> fallback.
2. ``far_from_intents``: as above, the cosine to the nearest label centroid.
3. ``no_destination``: the top accepted intent has no destination and there is no default -> fallback.
4. ``confident``: the top accepted intent's destination; the others are in ``intents``.
There is no ``ambiguous`` rule: two intents both above their thresholds are both meant, not a doubt.
For a single-label model ``intents`` holds the top intent when it reaches its threshold.

**Review** (off unless the router sets ``review``): an utterance that is routed (``confident``) but
whose cosine to the nearest intent centroid is below the review threshold (the router's
``review_similarity_threshold``, else the model's default: the 15th percentile of validation
similarities) is still routed, and ``review`` is true: the service also keeps it in the
low-confidence store (reason ``review``) so new-intent discovery sees it. This widens what discovery
sees without sending more traffic to the fallback.

**Review by neighbours** (off unless the router sets ``review_neighbours``; the model must keep
anchors, as models fitted since it exists do): a routed utterance is also kept for review when one
of its 20 nearest among the model's training utterances and the router's last 1,000 utterances fell
back as ``low_confidence`` or ``far_from_intents`` (``neighbourhood``). The service decides this
after ``decide``, which knows nothing of other utterances.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from .combinations import Combinations
from .strict import StrictModel

# The heads give float32 confidences, whose rounding error is about 1e-7.
MARGIN_TOLERANCE = 1e-6


class RouterConfig(BaseModel):
    """How one router turns a model's confidences into a destination (stored as JSON)."""

    model: str
    destinations: dict[str, str] = Field(default_factory=dict, description="intent -> name or URL")
    default_destination: str | None = Field(None, description="for intents not in destinations")
    fallback_destination: str = "fallback"
    threshold: float | None = Field(None, ge=0, le=1, description="None: the model's fitted default")
    intent_thresholds: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict, description="per-intent overrides, 0 to 1"
    )
    similarity_threshold: float | None = Field(
        None, ge=0, le=1, description="cosine to the nearest intent centroid; None: the model's default, 0: off"
    )
    ambiguity_margin: float = Field(0.1, ge=0, le=1)
    review: bool = Field(
        False,
        description="also keep routed utterances far from every intent in the low-confidence store, for discovery",
    )
    review_similarity_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="with review on: the cosine below which a routed utterance is kept; None: the model's",
    )
    review_neighbours: bool = Field(
        False,
        description="also keep routed utterances whose nearest training or recent utterances fell back, for discovery",
    )
    alternatives: int = Field(3, ge=0, le=20, description="how many runners-up to return")


class NewRouterConfig(RouterConfig, StrictModel):
    """A router config as a user writes it (``PUT /v1/routers``, ``serve --config``): a setting it does
    not know, such as a misspelt ``treshold``, is refused instead of leaving the setting meant at its
    default. A stored config is read as a ``RouterConfig``, which skips settings it does not know: a
    newer version's, written by another server on the same database."""

    field_kind: ClassVar[str] = "router setting"
    owner: ClassVar[str] = "a router"

    @field_validator(
        "threshold", "similarity_threshold", "ambiguity_margin", "review_similarity_threshold", "alternatives",
        mode="before",
    )  # fmt: skip
    @classmethod
    def _a_number(cls, value: Any) -> Any:
        """``true`` would be read as 1 (every utterance falls back), ``false`` as 0 (a rule off)."""
        if isinstance(value, bool):
            raise ValueError(f"{str(value).lower()} is not a number; give one")
        return value

    @field_validator("intent_thresholds", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for intent, threshold in value.items():
                if isinstance(threshold, bool):
                    raise ValueError(f"{intent!r}: {str(threshold).lower()} is not a number; give one from 0 to 1")
        return value

    @model_validator(mode="after")
    def _review_threshold_with_review(self) -> NewRouterConfig:
        if self.review_similarity_threshold is not None and not self.review:
            raise ValueError("review_similarity_threshold applies only with review: true; set review, or drop it")
        return self

    @field_validator("destinations", "default_destination", "fallback_destination")
    @classmethod
    def _named(cls, value: Any) -> Any:
        """A destination is a name or URL the bot sends the utterance to: never blank."""
        for destination in value.values() if isinstance(value, dict) else [value]:
            if destination is not None and not destination.strip():
                raise ValueError("a destination may not be blank; give a name or URL")
        return value


@dataclass
class RouteDecision:
    intent: str | None
    confidence: float
    destination: str
    fallback: bool
    reason: str  # confident | low_confidence | far_from_intents | ambiguous | no_destination
    threshold: float
    alternatives: list[dict] = field(default_factory=list)
    intents: list[dict] = field(default_factory=list)  # every intent at or above its threshold
    similarity: float | None = None  # cosine to the nearest intent centroid (None: the model keeps no centroids)
    review: bool = False  # routed, and kept in the low-confidence store for discovery

    def to_dict(self) -> dict:
        return asdict(self)


def decide(
    config: RouterConfig,
    labels: Sequence[str],
    probabilities: np.ndarray,
    default_threshold: float,
    label_thresholds: Sequence[float] | np.ndarray | None = None,
    *,
    similarity: float | None = None,
    default_similarity_threshold: float = 0.0,
    default_review_similarity_threshold: float = 0.0,
    combinations: Combinations | None = None,
) -> RouteDecision:
    """Route one utterance given its confidence for every label (a row of ``predict_proba``).

    ``label_thresholds``: a multilabel model's fitted threshold for each label (the multilabel rules).
    ``similarity``: its cosine to the nearest intent centroid (None skips that rule).
    ``combinations``: the label sets a multilabel model may predict (None: any).
    """
    multilabel = label_thresholds is not None

    if config.threshold is not None:
        thresholds = np.full(len(labels), config.threshold)
    elif label_thresholds is None:
        thresholds = np.full(len(labels), default_threshold)
    else:
        thresholds = np.array(label_thresholds, dtype=float)
    for i, label in enumerate(labels):
        if label in config.intent_thresholds:
            thresholds[i] = config.intent_thresholds[label]

    order = [int(i) for i in np.argsort(-probabilities)]
    accepted = [i for i in order if probabilities[i] >= thresholds[i]]
    if multilabel and combinations is not None:
        accepted = combinations.closest(accepted, probabilities, thresholds, labels)
    first = accepted[0] if multilabel and accepted else order[0]
    top, top_confidence, threshold = labels[first], float(probabilities[first]), float(thresholds[first])
    runner_up = float(probabilities[order[1]]) if len(order) > 1 else 0.0
    # Confidences as the model gave them, as the top one and /v1/classify's are: a client comparing
    # them with a threshold sees what the decision saw.
    alternatives = [
        {"intent": labels[i], "confidence": float(probabilities[i])}
        for i in [i for i in order if i != first][: config.alternatives]
    ]
    if not multilabel:  # the top intent, when it passes: never a runner-up past a lower threshold of its own
        accepted = [first] if top_confidence >= threshold else []
    intents = [{"intent": labels[i], "confidence": float(probabilities[i])} for i in accepted]
    destination = config.destinations.get(top, config.default_destination)

    similarity_threshold = (
        config.similarity_threshold if config.similarity_threshold is not None else default_similarity_threshold
    )
    similarity = None if similarity is None else round(float(similarity), 6)

    review_threshold = (
        config.review_similarity_threshold
        if config.review_similarity_threshold is not None
        else default_review_similarity_threshold
    )

    def decision(destination: str, reason: str) -> RouteDecision:
        fell_back = reason != "confident"
        far = similarity is not None and review_threshold > 0 and similarity < review_threshold  # 0: off
        review = config.review and not fell_back and far
        return RouteDecision(
            top, top_confidence, destination, fell_back, reason, threshold, alternatives, intents, similarity, review
        )

    if top_confidence < threshold:
        return decision(config.fallback_destination, "low_confidence")
    if similarity is not None and similarity_threshold > 0 and similarity < similarity_threshold:  # 0: off
        return decision(config.fallback_destination, "far_from_intents")
    # A gap equal to the margin is not closer than it, also where float subtraction lands a hair
    # below (0.6 - 0.5 is 0.0999...; in float32, 0.7 - 0.6 is 0.09999996).
    if not multilabel and top_confidence - runner_up < config.ambiguity_margin - MARGIN_TOLERANCE:
        if not alternatives:  # alternatives: 0, but the bot must see the candidates to ask between them
            alternatives.append({"intent": labels[order[1]], "confidence": runner_up})
        return decision(config.fallback_destination, "ambiguous")
    if destination is None:
        return decision(config.fallback_destination, "no_destination")
    return decision(destination, "confident")
