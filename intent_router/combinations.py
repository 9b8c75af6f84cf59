"""The label sets a multilabel model may predict: those its head was trained on.

A one-vs-rest head decides each label on its own, so it can accept two labels that never occurred
together in anything it learned from (on ATIS: ``flight`` beside a ``meal`` question). Such a set is
cut to the trained-on set within it whose labels stand furthest above their thresholds: the subset
whose labels' logits, each less its threshold's logit, sum highest. Each label's decision is
independent, so with every threshold at 0.5 that is the subset of highest joint probability; measured
from the thresholds, a label a team accepts below 0.5 (a router's ``intent_thresholds``, or a fitted
threshold) counts for its set rather than against it. Single labels are always allowed.

Trained on: the sets of two or more labels in the training data, and any two of the labels the
synthetic multi-intent rows paired (``data.synthetic_multi_intent``). Stored in ``intent_router.json``
as ``label_combinations``; a model saved without it predicts any set.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from .data import label_key, parse_labels


@dataclass(frozen=True)
class Combinations:
    seen: frozenset[frozenset[str]]  # the training data's sets of two or more labels
    any_two_of: frozenset[str]  # the labels synthetic rows paired: any two of them together
    # the seen sets by their rarest label: a row tries only those whose rarest label it accepted, not
    # every seen set (20,000 of them: 180 ms a batch of 96)
    by_rarest: dict[str, list[frozenset[str]]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        counts = Counter(label for label_set in self.seen for label in label_set)
        by_rarest: dict[str, list[frozenset[str]]] = {}
        for label_set in self.seen:
            by_rarest.setdefault(min(label_set, key=lambda y: (counts[y], y)), []).append(label_set)
        object.__setattr__(self, "by_rarest", by_rarest)

    @classmethod
    def trained_on(cls, label_sets: Iterable[frozenset[str]], synthetic_sets: Iterable[frozenset[str]]) -> Combinations:
        paired = frozenset(label for label_set in synthetic_sets for label in label_set)
        return cls(frozenset(s for s in label_sets if len(s) > 1), paired)

    def allows(self, label_set: frozenset[str]) -> bool:
        return len(label_set) < 2 or label_set in self.seen or (len(label_set) == 2 and label_set <= self.any_two_of)

    def closest(
        self, accepted: Sequence[int], probabilities: np.ndarray, thresholds: np.ndarray, labels: Sequence[str]
    ) -> list[int]:
        """``accepted`` (label indices) if allowed, else its allowed subset furthest above its labels'
        ``thresholds`` (one per label, as ``probabilities``); in the order of ``accepted``."""
        chosen = frozenset(labels[i] for i in accepted)
        if self.allows(chosen):
            return list(accepted)
        index = {labels[i]: i for i in accepted}
        p, t = (np.clip(v[list(accepted)], 1e-9, 1 - 1e-9) for v in (probabilities, thresholds))
        margins = np.log(p) - np.log1p(-p) - (np.log(t) - np.log1p(-t))
        logit = {labels[i]: float(v) for i, v in zip(accepted, margins, strict=True)}
        # Of the single labels and of the pairs of ``any_two_of``, only the likeliest (and any tied with
        # them) can win: trying every pair is quadratic (150 labels passing: half a second a batch).
        likeliest = max(logit.values())
        candidates = [frozenset([label]) for label in chosen if logit[label] >= likeliest]
        pairable = sorted((logit[label] for label in chosen & self.any_two_of), reverse=True)
        if len(pairable) > 1:
            likely = [label for label in chosen & self.any_two_of if logit[label] >= pairable[1]]
            candidates += [frozenset(pair) for pair in combinations(likely, 2)]
        candidates += [s for label in chosen for s in self.by_rarest.get(label, ()) if s <= chosen]
        # rounded: equal sums added up in another order (a set's order varies by process) still tie
        sums = [round(sum(logit[label] for label in s), 9) for s in candidates]
        top = max(sums)
        best = max((s for s, total in zip(candidates, sums, strict=True) if total == top), key=label_key)
        return [index[label] for label in (labels[i] for i in accepted) if label in best]

    def to_json(self) -> dict:
        return {"seen": sorted(label_key(s) for s in self.seen), "any_two_of": sorted(self.any_two_of)}

    @classmethod
    def from_json(cls, value: object, labels: Sequence[str]) -> Combinations:
        """``ValueError`` saying what is wrong: not the shape ``to_json`` writes, or unknown labels."""
        if not isinstance(value, dict) or set(value) != {"seen", "any_two_of"}:
            raise ValueError("must be an object with 'seen' and 'any_two_of'")
        seen, paired = value["seen"], value["any_two_of"]
        if not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in (seen, paired)):
            raise ValueError("'seen' and 'any_two_of' must be lists of strings")
        combined = cls(frozenset(s for s in map(parse_labels, seen) if len(s) > 1), frozenset(paired))
        unknown = sorted(({y for s in combined.seen for y in s} | combined.any_two_of) - set(labels))
        if unknown:
            raise ValueError(f"{unknown} are not its labels")
        return combined
