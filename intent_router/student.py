"""The static student and the cascade: a token-vector table that answers the easy inputs alone.

The student embeds a text as the unit-length mean of its tokens' vectors (Model2Vec-style), which
costs a tokenisation and a table lookup: tens of thousands of texts a second on one core. Its table
holds the whole vocabulary (at most ``MAX_TABLE_TOKENS``; a larger vocabulary, e.g. a multilingual
one, keeps only the tokens of the training texts), distilled from the tuned body in two steps:

1. each token's vector is the body's embedding of that token alone (``[CLS] t [SEP]``), which
   places every token, even one no training text has, in the body's space;
2. the vectors of the training texts' tokens are then fitted, for a few passes, so that each
   training text's mean points where the body embeds that text (cosine loss).

It has its own linear head, fitted on its embeddings of the training texts. A text with a token the
table lacks gets no opinion from it (uniform confidences). The **cascade** asks the student first
and hands the inputs it is unsure of (top confidence below ``threshold``, or an unknown token) to the
transformer. The threshold is the lowest at which the cascade's accuracy on the validation split
stays within half the tolerance the other backends get (``fit_cascade_threshold``); the validation texts
play no part in fitting the student, so what it hands over there is what it hands over in use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save

from .backends import Encoder, Tokenizer
from .head import LinearHead

MAX_TABLE_TOKENS = 65536  # a 30k-token vocabulary costs about 15 s to distil and 23 MB on disk
DISTILL_BATCH = 4096
# The student's head is regularised less than the transformer's (scikit-learn's C): its features are
# noisier, and a weaker penalty spreads its confidences so that the cascade's threshold separates
# the inputs it gets right from the rest.
HEAD_REGULARIZATION = 100.0
FIT_PASSES = 8
FIT_BATCH = 64
FIT_LEARNING_RATE = 0.01


class StaticStudent:
    """``encode(texts)``: unit mean token vectors; ``predict_proba`` through its own head.

    ``token_ids`` (k,): the vocabulary ids the table covers; ``vectors`` (k, d): their vectors.
    """

    def __init__(self, token_ids: np.ndarray, vectors: np.ndarray, head: LinearHead, tokenizer: Tokenizer):
        if vectors.ndim != 2 or token_ids.shape != (vectors.shape[0],) or vectors.shape[1] != head.dimension:
            raise ValueError(
                f"student table {vectors.shape} with {token_ids.shape} ids does not fit a head of dimension "
                f"{head.dimension}"
            )
        if len(token_ids) and (token_ids.min() < 0 or token_ids.max() >= tokenizer.vocabulary_size):
            raise ValueError(f"student token ids fall outside the tokenizer's {tokenizer.vocabulary_size} tokens")
        self.token_ids = token_ids.astype(np.int64)
        self.vectors = vectors.astype(np.float32)
        self.head = head
        self.tokenizer = tokenizer
        self.rows = np.full(tokenizer.vocabulary_size, -1, dtype=np.int64)  # vocabulary id -> table row
        self.rows[self.token_ids] = np.arange(len(token_ids))

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(unit vectors (n, d), covered (n,)): covered is False for a text with a token not in the table."""
        token_ids = self.tokenizer.token_ids(texts)
        lengths = np.array([len(ids) for ids in token_ids], dtype=np.int64)
        flat = np.fromiter((i for ids in token_ids for i in ids), dtype=np.int64, count=int(lengths.sum()))
        rows = self.rows[flat]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        unknown = np.zeros(len(texts), dtype=bool)
        present = lengths > 0
        if len(flat):
            unknown[present] = np.minimum.reduceat(rows, starts[present]) < 0
        sums = np.zeros((len(texts), self.vectors.shape[1]), dtype=np.float32)
        if present.any():
            sums[present] = np.add.reduceat(self.vectors[np.maximum(rows, 0)], starts[present], axis=0)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return sums / np.maximum(norms, 1e-12), present & ~unknown

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Confidences from its head; uniform (no opinion) for texts it does not cover."""
        vectors, covered = self.encode(texts)
        probabilities = self.head.predict_proba(vectors)
        probabilities[~covered] = 1.0 / self.head.n_classes
        return probabilities

    def to_bytes(self) -> bytes:
        """safetensors: the table in float16 (half the size; the mean of many tokens hides the rounding)."""
        tensors: dict[str, np.ndarray] = {
            "token_ids": self.token_ids,
            "vectors": self.vectors.astype(np.float16),
            "weight": self.head.weight,
            "bias": self.head.bias,
        }
        return save(tensors)

    @classmethod
    def load(cls, path: Path, tokenizer: Tokenizer) -> StaticStudent:
        tensors = load_file(str(path))
        head = LinearHead(tensors["weight"], tensors["bias"])
        return cls(tensors["token_ids"], tensors["vectors"].astype(np.float32), head, tokenizer)


def distill_student(
    teacher,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    teacher_vectors: np.ndarray,
    class_ids: np.ndarray,
    n_classes: int,
) -> StaticStudent:
    """A student of ``teacher`` (an ``OnnxEncoder``) fitted on the training texts and their embeddings."""
    text_ids = tokenizer.token_ids(texts)
    if tokenizer.vocabulary_size <= MAX_TABLE_TOKENS:
        known = np.arange(tokenizer.vocabulary_size, dtype=np.int64)
    else:
        known = np.unique(np.fromiter((i for ids in text_ids for i in ids), np.int64))
    vectors = _token_vectors(teacher, tokenizer, known)
    placeholder = LinearHead(np.zeros((n_classes, vectors.shape[1])), np.zeros(n_classes))
    student = StaticStudent(known, vectors, placeholder, tokenizer)
    rows = [student.rows[ids].tolist() for ids in text_ids]
    student.vectors = _fit_to_sentences(vectors, rows, teacher_vectors)
    student.head = LinearHead.fit(student.encode(texts)[0], class_ids, n_classes, HEAD_REGULARIZATION)
    return student


def _token_vectors(teacher, tokenizer: Tokenizer, token_ids: np.ndarray) -> np.ndarray:
    specials = tokenizer([""])[0]  # e.g. [CLS] [SEP]
    prefix, suffix = specials[:1], specials[1:]
    rows = []
    for start in range(0, len(token_ids), DISTILL_BATCH):
        ids = token_ids[start : start + DISTILL_BATCH, None]
        input_ids = np.hstack(
            [
                np.full((len(ids), len(prefix)), prefix, np.int64),
                ids,
                np.full((len(ids), len(suffix)), suffix, np.int64),
            ]
        ).astype(np.int64)
        rows.append(teacher.encode_ids(input_ids, np.ones_like(input_ids)))
    return np.vstack(rows).astype(np.float32)


def _fit_to_sentences(vectors: np.ndarray, token_ids: list[list[int]], targets: np.ndarray) -> np.ndarray:
    """Move the table so each text's mean token vector points at the teacher's embedding of it.

    Sparse updates: a step touches only the rows of its batch's tokens, so the cost follows the
    training texts, not the size of the table.
    """
    keep = [i for i, ids in enumerate(token_ids) if ids]
    if not keep:
        return vectors
    generator = torch.Generator().manual_seed(0)
    table = torch.nn.EmbeddingBag.from_pretrained(torch.tensor(vectors), freeze=False, mode="mean", sparse=True)
    optimizer = torch.optim.SparseAdam(list(table.parameters()), lr=FIT_LEARNING_RATE)
    target = torch.from_numpy(np.ascontiguousarray(targets[keep], dtype=np.float32))
    for _ in range(FIT_PASSES):
        for batch in torch.randperm(len(keep), generator=generator).split(FIT_BATCH):
            ids = [torch.tensor(token_ids[keep[i]]) for i in batch.tolist()]
            offsets = torch.tensor([0] + [len(x) for x in ids[:-1]]).cumsum(0)
            predicted = table(torch.cat(ids), offsets)
            loss = 1 - torch.nn.functional.cosine_similarity(predicted, target[batch]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return table.weight.detach().numpy().copy()


class Cascade:
    """The student answers when its top confidence reaches ``threshold``; the transformer answers the rest."""

    def __init__(self, student: StaticStudent, transformer: Encoder, head: LinearHead, threshold: float):
        self.student = student
        self.transformer = transformer
        self.head = head
        self.threshold = threshold
        self.handed_over = 0  # inputs passed to the transformer so far
        self.answered = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings always come from the transformer: the student's space is its own."""
        return self.transformer.encode(texts)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        probabilities = self.student.predict_proba(texts)
        unsure = np.flatnonzero(probabilities.max(axis=1) < self.threshold)
        if len(unsure):
            vectors = self.transformer.encode([texts[int(i)] for i in unsure])
            probabilities[unsure] = self.head.predict_proba(vectors)
        self.answered += len(texts)
        self.handed_over += len(unsure)
        return probabilities


def fit_cascade_threshold(
    student_probabilities: np.ndarray,
    transformer_predictions: np.ndarray,
    class_ids: np.ndarray,
    least_accuracy: float,
) -> float:
    """The lowest student confidence at which the cascade's accuracy is still ``least_accuracy``.

    Inputs at or above the threshold keep the student's answer, the rest get the transformer's
    (``transformer_predictions``); ``class_ids`` are the true classes. Never below 0.5; 1.0
    (everything handed over) when no threshold keeps the accuracy.
    """
    confidence = student_probabilities.max(axis=1)
    order = np.argsort(-confidence, kind="stable")
    student_right = (student_probabilities.argmax(axis=1) == class_ids)[order]
    transformer_right = (transformer_predictions == class_ids)[order]
    # Keeping the k most confident student answers (k = 1..n): right = student's k + transformer's rest.
    right = np.cumsum(student_right) + transformer_right.sum() - np.cumsum(transformer_right)
    ranked = confidence[order]
    cuttable = np.append(ranked[:-1] > ranked[1:], True)  # ties are kept or handed over together
    keeps = np.flatnonzero(cuttable & (right >= least_accuracy * len(order) - 1e-9))
    if not len(keeps):
        return 1.0
    return float(max(ranked[keeps[-1]], 0.5))
