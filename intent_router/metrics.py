"""Classification metrics as plain JSON-ready dictionaries."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

MAX_THRESHOLD_ROUNDS = 10  # passes over the labels when fitting thresholds; ATIS settles in two or three
# Up to this many labels the confusion matrix is written whole (CLINC150 has 150 intents); beyond, only its
# non-zero cells: the whole grows with the square of the labels (10,000 labels: 10^8 cells, a metrics.json
# of about 1 GB, kept in the registry and sent with every fine-tune's and model's details).
MAX_DENSE_CONFUSION_LABELS = 200


def classification_metrics(
    true_labels: Sequence[str],
    predicted_labels: Sequence[str],
    probabilities: np.ndarray,
    model_labels: Sequence[str],
) -> dict:
    """Accuracy, cross-entropy, macro and per-label precision / recall / F1, confusion matrix.

    Labels are canonical label-set names, so accuracy is exact label-set accuracy. Labels that occur
    only in ``true_labels`` (unknown to the model) count as errors and appear in the per-label table;
    the cross-entropy is taken over the rows whose label the model knows. The confusion matrix is
    ``{"labels": [...], "matrix": [[count, ...], ...]}`` (rows true, columns predicted), or beyond
    ``MAX_DENSE_CONFUSION_LABELS`` labels ``{"labels": [...], "cells": [[true, predicted, count], ...]}``,
    its non-zero cells, most frequent first.
    """
    if not true_labels:
        raise ValueError("no examples to evaluate")
    true = np.asarray(true_labels, dtype=object)
    predicted = np.asarray(predicted_labels, dtype=object)
    labels = sorted(set(true_labels) | set(predicted_labels))
    precision, recall, f1, support = precision_recall_fscore_support(true, predicted, labels=labels, zero_division=0)
    index = {label: i for i, label in enumerate(model_labels)}
    known = [i for i, label in enumerate(true_labels) if label in index]
    if known:
        picked = probabilities[known, [index[true_labels[i]] for i in known]]
        loss = float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))
    else:
        loss = None
    return {
        "examples": len(true_labels),
        "accuracy": float(np.mean(true == predicted)),
        "loss": loss,
        "macro_precision": float(np.mean(precision)),
        "macro_recall": float(np.mean(recall)),
        "macro_f1": float(np.mean(f1)),
        "per_label": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": _confusion(true_labels, predicted_labels, labels),
        "unknown_labels": sorted(set(true_labels) - set(model_labels)),
    }


def _confusion(true_labels: Sequence[str], predicted_labels: Sequence[str], labels: list[str]) -> dict:
    """The confusion matrix over ``labels``: whole, or its non-zero cells (see ``classification_metrics``)."""
    counts = Counter(zip(true_labels, predicted_labels, strict=True))
    if len(labels) > MAX_DENSE_CONFUSION_LABELS:
        cells = sorted(counts.items(), key=lambda cell: (-cell[1], cell[0]))
        return {"labels": labels, "cells": [[true, predicted, count] for (true, predicted), count in cells]}
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for (true, predicted), count in counts.items():
        matrix[index[true]][index[predicted]] = count
    return {"labels": labels, "matrix": matrix}


def confidence_threshold(
    confidences: np.ndarray, correct: np.ndarray, target_precision: float = 0.95, floor: float = 0.5
) -> float:
    """The lowest confidence at which the predictions at or above it are ``target_precision`` right.

    Fitted on validation predictions, it is the default threshold a router falls back below; never
    below ``floor``, so an easy validation set does not yield a threshold that accepts anything.
    """
    order = np.argsort(-confidences, kind="stable")
    ranked = confidences[order]
    precision = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    # a threshold passes all of a run of equal confidences or none: cut only after each run's last
    last_of_run = np.append(ranked[1:] != ranked[:-1], True)
    meeting = np.nonzero(last_of_run & (precision >= target_precision))[0]
    if len(meeting) == 0:
        return 1.0
    return float(max(floor, ranked[meeting[-1]]))


def multilabel_metrics(
    true_sets: Sequence[frozenset[str]],
    predicted_sets: Sequence[frozenset[str]],
    probabilities: np.ndarray | None,
    model_labels: Sequence[str],
) -> dict:
    """Exact-set accuracy, micro and macro F1, Hamming loss and per-label figures of label sets.

    ``accuracy`` is exact-set accuracy (an empty set is a prediction like any other). Hamming loss is
    the share of wrong (example, label) decisions over the model's labels and any label of the truth.
    Macro figures average the labels that occur in the truth or the predictions, as
    ``classification_metrics`` does; labels unknown to the model count as misses there. ``loss`` is
    the mean binary cross-entropy of the probabilities (columns: ``model_labels``; None: no loss).
    """
    if not true_sets:
        raise ValueError("no examples to evaluate")
    space = sorted(set(model_labels) | {label for s in true_sets for label in s})
    true = _multi_hot(true_sets, space)
    predicted = _multi_hot(predicted_sets, space)
    occurring = [i for i, label in enumerate(space) if true[:, i].any() or predicted[:, i].any()]
    precision, recall, f1, support = precision_recall_fscore_support(
        true[:, occurring], predicted[:, occurring], average=None, zero_division=0
    )
    micro = precision_recall_fscore_support(true, predicted, average="micro", zero_division=0)
    loss = None
    if probabilities is not None:
        known = _multi_hot(true_sets, list(model_labels))
        clipped = np.clip(probabilities, 1e-12, 1 - 1e-12)
        loss = float(-np.mean(known * np.log(clipped) + (1 - known) * np.log(1 - clipped)))
    return {
        "examples": len(true_sets),
        "accuracy": float(np.mean([t == p for t, p in zip(true_sets, predicted_sets, strict=True)])),
        "loss": loss,
        "hamming_loss": float(np.mean(true != predicted)),
        "micro_precision": float(micro[0]),
        "micro_recall": float(micro[1]),
        "micro_f1": float(micro[2]),
        "macro_precision": float(np.mean(precision)),
        "macro_recall": float(np.mean(recall)),
        "macro_f1": float(np.mean(f1)),
        "per_label": {
            space[i]: {
                "precision": float(precision[j]),
                "recall": float(recall[j]),
                "f1": float(f1[j]),
                "support": int(support[j]),
            }
            for j, i in enumerate(occurring)
        },
        "empty_sets": {"true": sum(not s for s in true_sets), "predicted": sum(not s for s in predicted_sets)},
        "unknown_labels": sorted(set(space) - set(model_labels)),
    }


def label_thresholds(probabilities: np.ndarray, targets: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Each label's decision threshold (``probability >= it``), fitted for exact-set accuracy on validation.

    A label's F1-best threshold is the start (``f1_thresholds``); then, label by label and until no
    change helps, each threshold moves to the cut that gets the most validation sets exactly right
    given the others'. It only moves for a strict gain, to the best cut nearest where it was. Rows
    with no label (the empty set) count like any other. Per-label F1 scores a label's decisions
    even on rows that another label gets wrong anyway; exact sets do not: on ATIS the F1 threshold
    of ``flight`` was 0.08 (``flight`` beside nearly every other label), the exact-set one 0.51.
    A label without a positive validation example keeps ``default``.
    """
    thresholds = f1_thresholds(probabilities, targets, default)
    targets = targets.astype(bool)
    fitted = [k for k in range(probabilities.shape[1]) if targets[:, k].any()]
    for _ in range(MAX_THRESHOLD_ROUNDS):
        moved = False
        for k in fitted:
            accepted = probabilities >= thresholds
            others_right = np.delete(accepted == targets, k, axis=1).all(axis=1)
            best = _exact_set_cut(probabilities[others_right, k], targets[others_right, k], thresholds[k])
            if best != thresholds[k]:
                thresholds[k], moved = best, True
        if not moved:
            break
    return thresholds


def _exact_set_cut(scores: np.ndarray, positive: np.ndarray, current: float) -> float:
    """The threshold on one label that gets the most of these rows right (their other labels are).

    Cuts sit halfway between neighbouring distinct scores; ``current`` is kept unless a cut does better.
    """
    if not len(scores):
        return current
    distinct, group = np.unique(-scores, return_inverse=True)  # most probable first
    distinct = -distinct
    positives = np.bincount(group, weights=positive, minlength=len(distinct))
    negatives = np.bincount(group, weights=~positive, minlength=len(distinct))
    # right[j]: the top j distinct scores accepted, the rest rejected (j = 0 .. all)
    right = (
        np.concatenate([[0.0], np.cumsum(positives)]) + negatives.sum() - np.concatenate([[0.0], np.cumsum(negatives)])
    )
    now = float(positive[scores >= current].sum() + (~positive[scores < current]).sum())
    if right.max() <= now:
        return current
    cuts = (np.concatenate([[1.0], distinct]) + np.concatenate([distinct, [0.0]])) / 2
    best = np.nonzero(right == right.max())[0]
    return float(cuts[best[np.argmin(np.abs(cuts[best] - current))]])


def f1_thresholds(probabilities: np.ndarray, targets: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Each label's threshold with the best F1 for that label on validation (``probability >= it``).

    The threshold sits halfway between the least probable example it accepts and the most probable
    one it rejects, so a new example needs to look like the accepted ones. A label without a
    positive validation example keeps ``default``.
    """
    thresholds = np.full(probabilities.shape[1], default)
    for k in range(probabilities.shape[1]):
        positive = targets[:, k].astype(bool)
        if not positive.any():
            continue
        order = np.argsort(-probabilities[:, k])
        scores, hits = probabilities[order, k], positive[order]
        true_positives = np.cumsum(hits)
        f1 = 2 * true_positives / (np.arange(1, len(scores) + 1) + positive.sum())
        # Only cut between distinct scores: ties are accepted or rejected together.
        cuttable = np.append(scores[:-1] > scores[1:], True)
        best = int(np.argmax(np.where(cuttable, f1, -1.0)))
        below = scores[best + 1] if best + 1 < len(scores) else 0.0
        thresholds[k] = (scores[best] + below) / 2
    return thresholds


def _multi_hot(label_sets: Sequence[frozenset[str]], labels: Sequence[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(label_sets), len(labels)), dtype=bool)
    for row, label_set in enumerate(label_sets):
        for label in label_set:
            if label in index:
                matrix[row, index[label]] = True
    return matrix
