"""The classification head: a linear softmax layer over the tuned embeddings.

It is fitted as a multinomial logistic regression on the unit-length embeddings, with class weights
that balance skewed data (ATIS is three quarters ``flight``): without them a rare intent phrased like
the common one is always given to the common one. At inference it is one matrix product. Saved as
safetensors: a few tensors, nothing that runs code on load.

It also keeps each class's **centroid**, the normalised mean of its training embeddings: new-intent
discovery compares clusters with them (a softmax is confident even far from any training data; a
cosine to the centroids is not).

It can keep **anchors**, up to ``MAX_ANCHORS`` of the training embeddings in float16 (a seeded
sample when there are more): a router with ``review_neighbours`` compares new utterances with them
(``neighbourhood``).

A multilabel model has a ``SigmoidHead`` instead: one logistic regression per label (one-vs-rest),
each probability independent of the others, in the same file format.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from threadpoolctl import ThreadpoolController

MAX_ANCHORS = 10_000  # a route compares its utterance with each: 0.6 ms for 6,700, 2.1 ms for 20,000


class LinearHead:
    """``probabilities = softmax(embeddings @ weight.T + bias)``.

    ``centroids`` (n_classes, d): each class's normalised mean training embedding (zeros for a class
    without examples); None in heads saved before they were kept.
    ``anchors`` (n, d): training embeddings kept for ``review_neighbours`` (``keep_anchors``); None
    until kept.
    """

    def __init__(
        self,
        weight: np.ndarray,
        bias: np.ndarray,
        centroids: np.ndarray | None = None,
        anchors: np.ndarray | None = None,
    ):
        if weight.ndim != 2 or bias.shape != (weight.shape[0],):
            raise ValueError(f"head weight {weight.shape} and bias {bias.shape} do not fit together")
        if centroids is not None and centroids.shape != weight.shape:
            raise ValueError(f"head centroids {centroids.shape} do not fit its weight {weight.shape}")
        self.weight = weight.astype(np.float32)
        self.bias = bias.astype(np.float32)
        if anchors is not None and (anchors.ndim != 2 or anchors.shape[1] != weight.shape[1]):
            raise ValueError(f"head anchors {anchors.shape} do not fit its weight {weight.shape}")
        self.centroids = None if centroids is None else centroids.astype(np.float32)
        self.anchors: np.ndarray | None = None if anchors is None else anchors.astype(np.float16)

    @property
    def n_classes(self) -> int:
        return self.weight.shape[0]

    @property
    def dimension(self) -> int:
        return self.weight.shape[1]

    @classmethod
    def fit(
        cls, embeddings: np.ndarray, targets: np.ndarray, n_classes: int, regularization: float = 10.0
    ) -> LinearHead:
        """Fit on embeddings (n, d) and class indices (n,) in ``range(n_classes)``.

        ``regularization`` is scikit-learn's ``C``: smaller is stronger.
        """
        from sklearn.linear_model import LogisticRegression  # here: loading a model for inference does not need it

        model = LogisticRegression(C=regularization, class_weight="balanced", max_iter=5000)
        model.fit(embeddings, targets)
        coef, intercept = model.coef_, model.intercept_
        if len(model.classes_) == 2:  # binary: one logit; softmax([0, z]) == sigmoid(z)
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.array([0.0, intercept[0]])
        # Classes absent from the targets never win: a large negative bias.
        weight = np.zeros((n_classes, embeddings.shape[1]))
        bias = np.full(n_classes, -1e4)
        weight[model.classes_] = coef
        bias[model.classes_] = intercept
        centroids = np.zeros((n_classes, embeddings.shape[1]))
        for k in model.classes_:
            mean = embeddings[targets == k].mean(axis=0)
            centroids[k] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        return cls(weight, bias, centroids)

    def keep_anchors(self, embeddings: np.ndarray, seed: int) -> None:
        """Keep the training ``embeddings`` as anchors: all of them, or a seeded sample of ``MAX_ANCHORS``."""
        if len(embeddings) > MAX_ANCHORS:
            rows = np.random.default_rng(seed).choice(len(embeddings), MAX_ANCHORS, replace=False)
            embeddings = embeddings[np.sort(rows)]
        self.anchors = np.asarray(embeddings, dtype=np.float16)

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        return _product(embeddings, self.weight) + self.bias

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        logits = self.logits(embeddings)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def centroid_similarity(self, embeddings: np.ndarray) -> np.ndarray | None:
        """Each embedding's cosine to its nearest class centroid (None for a head without centroids).

        Low means far from everything the model was trained on, however confident the softmax is.
        """
        if self.centroids is None:
            return None
        return _product(embeddings, self.centroids).max(axis=1)

    def save(self, path: str | Path) -> None:
        tensors = {"weight": self.weight, "bias": self.bias}
        if self.centroids is not None:
            tensors["centroids"] = self.centroids
        if self.anchors is not None:
            tensors["anchors"] = self.anchors
        save_file(tensors, str(path))

    @classmethod
    def load(cls, path: str | Path) -> LinearHead:
        tensors = load_file(str(path))
        return cls(tensors["weight"], tensors["bias"], tensors.get("centroids"), tensors.get("anchors"))


class SigmoidHead(LinearHead):
    """``probabilities = sigmoid(embeddings @ weight.T + bias)``: one independent probability a label.

    ``centroids``: each label's normalised mean embedding of the training examples that carry it.
    """

    @classmethod
    def fit(  # type: ignore[override]
        cls, embeddings: np.ndarray, targets: np.ndarray, n_classes: int, regularization: float = 10.0
    ) -> SigmoidHead:
        """Fit on embeddings (n, d) and a multi-hot target matrix (n, n_classes).

        Each label's regression is class-weighted, as ``LinearHead``'s is: a label on 2% of the
        examples still gets probabilities that a fitted threshold can separate.
        """
        if targets.shape != (len(embeddings), n_classes):
            raise ValueError(f"targets {targets.shape} should be (examples, labels) = ({len(embeddings)}, {n_classes})")
        from sklearn.linear_model import LogisticRegression

        targets = targets.astype(bool)
        weight = np.zeros((n_classes, embeddings.shape[1]))
        bias = np.zeros(n_classes)
        centroids = np.zeros((n_classes, embeddings.shape[1]))
        for k in range(n_classes):
            positive = targets[:, k]
            if positive.all() or not positive.any():  # one answer only: a bias that always gives it
                bias[k] = 30.0 if positive.all() else -30.0
            else:
                model = LogisticRegression(C=regularization, class_weight="balanced", max_iter=5000)
                model.fit(embeddings, positive)
                weight[k], bias[k] = model.coef_[0], model.intercept_[0]
            if positive.any():
                mean = embeddings[positive].mean(axis=0)
                centroids[k] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        return cls(weight, bias, centroids)

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.logits(embeddings), -60, 60)))


def _product(embeddings: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``embeddings @ matrix.T`` on one BLAS thread.

    The head's products are small, and numpy's OpenBLAS threads keep spinning for a while after a
    threaded one, taking the cores from the ONNX Runtime (or torch) threads that encode the next
    batch: on 2 cores that cut onnx-int8's classify throughput at batch 96 from about 1,170 to 660 texts/s.
    """
    with _blas().limit(limits=1, user_api="blas"):
        return embeddings.astype(np.float32) @ matrix.T


@cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()
