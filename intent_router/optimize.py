"""Build every inference backend of a trained model, score each on the validation split, pick the default.

Run at the end of ``fit`` (and by ``intent-router optimize`` for folders saved before backends
existed). The default is the fastest transformer backend whose validation accuracy is within
``ACCURACY_TOLERANCE`` of torch's, in the order the benchmark measures (``benchmarks/inference_speed.py``):
onnx-int8, onnx, torch.

The cascade is built only on request (``cascade=True``; ``intent-router optimize NAME --cascade``):
its static student costs a pass over the whole vocabulary and a table on disk, and it is never the
default, because on held-out test sets it lost more than its validation figure promised (full ATIS:
-0.56 point at 35% handed over; German ATIS: -0.89 point at 12%, where validation said -0.24). It
hands its unsure inputs to the default backend; its threshold is the lowest that keeps its own
validation accuracy within half the tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .backends import Encoder, OnnxEncoder, Tokenizer, TorchEncoder, export_onnx
from .head import LinearHead
from .student import Cascade, StaticStudent, distill_student, fit_cascade_threshold

BACKENDS = ("torch", "onnx", "onnx-int8", "cascade")
FASTEST_FIRST = ("onnx-int8", "onnx", "torch")  # the transformer backends a default is chosen from
ACCURACY_TOLERANCE = 0.005  # half a point of validation accuracy
# The cascade's threshold is fitted on the validation split it is then scored on, so its figure there
# is optimistic: it is fitted to lose at most half the tolerance (on ATIS, a threshold fitted to the
# whole 0.5 point handed over 12% and lost 0.78 point on the test set).
CASCADE_FIT_TOLERANCE = ACCURACY_TOLERANCE / 2


@dataclass
class Optimized:
    """What ``optimize`` built: the files to save and the figures for ``intent_router.json``."""

    onnx_models: dict[str, bytes]
    student: StaticStudent | None  # only when the cascade was asked for
    info: dict = field(default_factory=dict)


def optimize(
    body,
    head: LinearHead,
    train_texts: Sequence[str],
    train_class_ids: np.ndarray,
    validation_texts: Sequence[str],
    validation_class_ids: np.ndarray,
    cascade: bool = False,
) -> Optimized:
    """Export and quantise (and distil the cascade's student); score each backend on the validation texts.

    The training texts are used only by the student; texts come cleaned, class ids are indices into
    the head's labels.
    """
    onnx_models = export_onnx(body)
    tokenizer = Tokenizer.from_body(body)
    fp32 = OnnxEncoder(onnx_models["onnx"], tokenizer, "onnx")
    encoders: dict[str, Encoder] = {
        "torch": TorchEncoder(body),
        "onnx": fp32,
        "onnx-int8": OnnxEncoder(onnx_models["onnx-int8"], tokenizer, "onnx-int8"),
    }
    # The quantised body distils the token table: faster, and the vectors are fitted to torch's afterwards.
    student = None
    if cascade:
        train_vectors = encoders["torch"].encode(train_texts)
        student = distill_student(
            encoders["onnx-int8"], tokenizer, train_texts, train_vectors, train_class_ids, head.n_classes
        )
    info: dict = {"max_seq_length": tokenizer.max_length, "validation_examples": len(validation_texts)}
    if not len(validation_texts):  # nothing to measure on: keep the reference backend
        info.update(default_backend="torch", validation_accuracy={})
        if student is not None:
            info["cascade"] = {"transformer": "torch", "threshold": 1.0}
        return Optimized(onnx_models, student, info)

    predictions = {name: head.predict_proba(e.encode(validation_texts)).argmax(axis=1) for name, e in encoders.items()}
    accuracy = {name: float(np.mean(p == validation_class_ids)) for name, p in predictions.items()}
    transformer = _fastest(accuracy, accuracy["torch"])
    info["default_backend"] = transformer
    if student is not None:
        fitted, accuracy["cascade"] = _fit_cascade(
            student,
            encoders[transformer],
            head,
            validation_texts,
            validation_class_ids,
            predictions[transformer],
            accuracy["torch"] - CASCADE_FIT_TOLERANCE,
        )
        info["cascade"] = {
            "transformer": transformer,
            "threshold": round(fitted.threshold, 4),
            "validation_handed_over": round(fitted.handed_over / len(validation_texts), 4),
        }
    info["validation_accuracy"] = {name: round(value, 4) for name, value in accuracy.items()}
    return Optimized(onnx_models, student, info)


def _fit_cascade(
    student: StaticStudent,
    transformer: Encoder,
    head: LinearHead,
    texts: Sequence[str],
    class_ids: np.ndarray,
    transformer_predictions: np.ndarray,
    least_accuracy: float,
) -> tuple[Cascade, float]:
    """The cascade with the lowest threshold whose measured validation accuracy is ``least_accuracy``.

    The threshold is fitted on the transformer's predictions for the whole validation split, but
    the cascade encodes only what it hands over, and int8 results shift slightly with the batch
    they are in; so the cascade is measured as it runs, and the threshold raised until it holds.
    """
    student_probabilities = student.predict_proba(texts)
    target = least_accuracy
    while True:
        threshold = fit_cascade_threshold(student_probabilities, transformer_predictions, class_ids, target)
        cascade = Cascade(student, transformer, head, threshold)
        accuracy = float(np.mean(cascade.predict_proba(texts).argmax(axis=1) == class_ids))
        if accuracy >= least_accuracy or threshold >= 1.0:
            return cascade, accuracy
        target += 1 / len(texts)  # one more right answer asked of the fit


def _fastest(accuracy: dict[str, float], reference: float) -> str:
    return next(name for name in FASTEST_FIRST if name in accuracy and accuracy[name] >= reference - ACCURACY_TOLERANCE)
