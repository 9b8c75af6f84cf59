"""Contrastive fine-tuning of the sentence-embedding body, SetFit-style, with in-batch triplets.

Batches are grouped by label (several examples of several labels each), and every valid triplet in a
batch contributes to the loss, so each example is seen once per pass instead of once per pair: this
is what makes fine-tuning on a CPU take seconds to minutes rather than hours.

Multilabel data is grouped by label set, and its triplets follow the sets (``LabelSetTripletLoss``):
two examples are positives when their sets share a label, negatives when they share none, so
``flight+airfare`` is pulled toward both ``flight`` and ``airfare``. Examples with no label (the
empty set) are positives of each other.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from datasets import Dataset as HFDataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.base.training_args import BatchSamplers
from sentence_transformers.sentence_transformer import losses
from transformers import PrinterCallback, TrainerCallback

DEFAULT_MARGIN = 0.5  # the triplet margin, a cosine distance; see README, How it trains
MAX_SEED = 2**32 - 1  # the largest seed numpy's and torch's generators take

# progress(stage, fraction): stage is a short name ("fine-tuning", "head", ...), fraction in 0..1
ProgressCallback = Callable[[str, float], None]


@dataclass
class FinetuneSettings:
    """How the body is fine-tuned. ``steps=None`` picks a budget from the data size; 0 leaves the body frozen."""

    steps: int | None = None
    batch_size: int = 32
    learning_rate: float = 5e-5
    margin: float = DEFAULT_MARGIN
    seed: int = 0
    freeze_word_embeddings: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def default_steps(n_examples: int, batch_size: int) -> int:
    """The training budget: about four passes over the data, at least 60 steps, at most 400.

    Small sets get many passes (few-shot needs them), large ones stop before the cost grows with N.
    """
    return int(min(400, max(60, math.ceil(4 * n_examples / batch_size))))


def finetune_body(
    body: SentenceTransformer,
    texts: Sequence[str],
    class_ids: Sequence[int],
    settings: FinetuneSettings,
    progress: ProgressCallback | None = None,
    label_sets: np.ndarray | None = None,
) -> dict:
    """Fine-tune ``body`` in place on texts and their class indices; return what was done.

    ``label_sets`` (multilabel): a boolean matrix (n_classes, n_labels), the labels of each class;
    the classes are then label sets and their triplets follow shared labels (``LabelSetTripletLoss``).
    """
    steps = default_steps(len(texts), settings.batch_size) if settings.steps is None else settings.steps
    if steps == 0:
        return {**settings.to_dict(), "steps": 0, "seconds": 0.0}
    if settings.freeze_word_embeddings:
        # The vocabulary matrix is half of a MiniLM's weights; freezing it halves optimiser work and
        # keeps the rare words of a small training set from drifting.
        for name, parameter in body.named_parameters():
            if "word_embeddings" in name:
                parameter.requires_grad = False
    distance = losses.BatchHardTripletLossDistanceFunction.cosine_distance
    if label_sets is None:
        loss = losses.BatchAllTripletLoss(body, distance_metric=distance, margin=settings.margin)
    else:
        loss = LabelSetTripletLoss(body, label_sets, distance_metric=distance, margin=settings.margin)
    train_data = HFDataset.from_dict({"sentence": list(texts), "label": list(class_ids)})
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="intent-router-train-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch,
            max_steps=steps,
            per_device_train_batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            warmup_steps=0.1,
            batch_sampler=BatchSamplers.GROUP_BY_LABEL,
            seed=settings.seed,
            data_seed=settings.seed,
            save_strategy="no",
            report_to="none",
            logging_strategy="no",
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
        )
        trainer = _Trainer(
            model=body,
            args=args,
            train_dataset=train_data,
            loss=loss,
            callbacks=[_ProgressReporter(progress)] if progress else None,
        )
        trainer.remove_callback(PrinterCallback)  # it prints a summary dict to stdout
        trainer.train()
    for parameter in body.parameters():
        parameter.requires_grad = True
    return {**settings.to_dict(), "steps": steps, "seconds": round(time.perf_counter() - started, 2)}


class LabelSetTripletLoss(losses.BatchAllTripletLoss):
    """Batch-all triplet loss over label sets: a positive shares a label with the anchor, a negative none.

    The batch's labels are class indices into ``label_sets`` (n_classes, n_labels); a class with no
    label counts as having a label of its own, "none".
    """

    def __init__(self, model, label_sets: np.ndarray, **kwargs):
        super().__init__(model, **kwargs)
        sets = np.asarray(label_sets, dtype=bool)
        sets = np.hstack([sets, ~sets.any(axis=1, keepdims=True)])
        shares = torch.from_numpy(sets.astype(np.float32))
        self.shares = (shares @ shares.T) > 0  # (n_classes, n_classes): do two classes share a label?

    def batch_all_triplet_loss(self, labels: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        labels = labels.view(-1)
        distances = self.distance_metric(embeddings)
        shares = self.shares.to(labels.device)[labels][:, labels]  # (batch, batch)
        not_self = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        anchors, positives = (shares & not_self).nonzero(as_tuple=True)
        triplets = distances[anchors, positives].unsqueeze(1) - distances[anchors] + self.triplet_margin
        triplets = torch.relu(triplets * (~shares[anchors]).float())
        hard = int((triplets > 1e-16).sum())
        return triplets.sum() / (hard + 1e-16)


class _Trainer(SentenceTransformerTrainer):
    def add_model_card_callback(self, default_args_dict: dict) -> None:
        """Skip model-card tracking: it samples the data for widget examples behind its own progress bar."""


class _ProgressReporter(TrainerCallback):
    def __init__(self, progress: ProgressCallback):
        self.progress = progress

    def on_step_end(self, args, state, control, **kwargs):
        self.progress("fine-tuning", state.global_step / max(1, state.max_steps))
