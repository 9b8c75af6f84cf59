"""Specification of the classification metrics (intent_router.metrics) on labels and predictions made here."""

from __future__ import annotations

import json

import numpy as np
from sklearn.metrics import confusion_matrix

from intent_router.metrics import MAX_DENSE_CONFUSION_LABELS, classification_metrics


def predictions(n_labels: int) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """Two rows per label: the first right, the second given to the next label."""
    labels = [f"intent_{i:05d}" for i in range(n_labels)]
    true = [label for label in labels for _ in range(2)]
    predicted = [labels[(i + row) % n_labels] for i in range(n_labels) for row in range(2)]
    probabilities = np.full((len(true), 1), 1.0)  # one column: the loss is not what is checked here
    return true, predicted, probabilities, labels[:1]


def test_the_confusion_matrix_of_few_labels_is_whole():
    true, predicted, probabilities, model_labels = predictions(MAX_DENSE_CONFUSION_LABELS)

    confusion = classification_metrics(true, predicted, probabilities, model_labels)["confusion_matrix"]

    assert confusion["matrix"] == confusion_matrix(true, predicted, labels=confusion["labels"]).tolist()


def test_the_confusion_matrix_of_many_labels_keeps_its_non_zero_cells_only():
    # 10,000 labels made a dense matrix of 10^8 cells: a metrics.json of about 1 GB
    true, predicted, probabilities, model_labels = predictions(10_000)

    metrics = classification_metrics(true, predicted, probabilities, model_labels)

    confusion = metrics["confusion_matrix"]
    assert "matrix" not in confusion and len(confusion["labels"]) == 10_000
    assert len(confusion["cells"]) == 20_000
    assert confusion["cells"][:2] == [["intent_00000", "intent_00000", 1], ["intent_00000", "intent_00001", 1]]
    assert sum(count for _, _, count in confusion["cells"]) == len(true)
    assert len(json.dumps(metrics)) < 5_000_000
