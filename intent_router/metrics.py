"""Classification metrics as plain JSON-ready dictionaries."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def classification_metrics(
    true_labels: Sequence[str],
    predicted_labels: Sequence[str],
    probabilities: np.ndarray,
    model_labels: Sequence[str],
) -> dict:
    """Accuracy, cross-entropy, macro and per-label precision / recall / F1, confusion matrix.

    Labels are canonical label-set names, so accuracy is exact label-set accuracy. Labels that occur
    only in ``true_labels`` (unknown to the model) count as errors and appear in the per-label table;
    the cross-entropy is taken over the rows whose label the model knows.
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
    matrix = confusion_matrix(true, predicted, labels=labels)
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
        "confusion_matrix": {"labels": labels, "matrix": matrix.tolist()},
        "unknown_labels": sorted(set(true_labels) - set(model_labels)),
    }


def confidence_threshold(
    confidences: np.ndarray, correct: np.ndarray, target_precision: float = 0.95, floor: float = 0.5
) -> float:
    """The lowest confidence at which the predictions at or above it are ``target_precision`` right.

    Fitted on validation predictions, it is the default threshold a router falls back below; never
    below ``floor``, so an easy validation set does not yield a threshold that accepts anything.
    """
    order = np.argsort(-confidences)
    precision = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    meeting = np.nonzero(precision >= target_precision)[0]
    if len(meeting) == 0:
        return 1.0
    return float(max(floor, confidences[order][meeting[-1]]))
