"""The intent classifier: a fine-tuned sentence-embedding body and a linear head.

>>> from intent_router import IntentClassifier, load_dataset
>>> clf = IntentClassifier(base_model="english-small").fit(load_dataset("train.csv"))
>>> clf.predict(["show me fares from boston to denver"])
['airfare']
>>> clf.save("models/atis")
>>> clf = IntentClassifier.load("models/atis")
"""

from __future__ import annotations

import platform
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .backends import ONNX_FILES, BackendError, Encoder, OnnxEncoder, Tokenizer, TorchEncoder
from .base_models import DEFAULT_BASE_MODEL, load_base_model
from .data import Dataset, Problem, check_trainable, normalize_text, train_validation_split
from .finetune import FinetuneSettings, ProgressCallback, finetune_body
from .head import LinearHead
from .metrics import classification_metrics, confidence_threshold
from .model_folder import ModelFolderError, read_model_folder, write_model_folder
from .optimize import BACKENDS, Optimized, optimize
from .student import Cascade, StaticStudent

ENCODE_BATCH_SIZE = 64
STUDENT_FILE = "student.safetensors"
THRESHOLD_PRECISION = 0.95  # the default router threshold keeps validation precision at this level


class NotFittedError(RuntimeError):
    """The classifier was used before ``fit`` or ``load``."""


class IntentClassifier:
    """Fine-tune with ``fit``; then ``predict``, ``predict_proba``, ``embed``, ``evaluate``, ``save``.

    Learned state lives in attributes ending in ``_``: ``labels_`` (class names, the columns of
    ``predict_proba``), ``metrics_`` (on the validation split) and ``info_`` (how it was trained).
    ``backend_`` names the inference backend in use (``torch`` after ``fit``; see ``load``).
    """

    def __init__(
        self,
        base_model: str = DEFAULT_BASE_MODEL,
        *,
        steps: int | None = None,
        batch_size: int = 32,
        learning_rate: float = 5e-5,
        seed: int = 0,
        validation_fraction: float = 0.2,
        allow_rare_labels: bool = False,
        head_regularization: float = 10.0,
        device: str | None = None,
    ):
        self.base_model = base_model
        self.settings = FinetuneSettings(steps=steps, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
        self.validation_fraction = validation_fraction
        self.allow_rare_labels = allow_rare_labels
        self.head_regularization = head_regularization
        self.device = device
        self.body_ = None
        self.head_: LinearHead | None = None
        self.labels_: list[str] | None = None
        self.metrics_: dict | None = None
        self.info_: dict = {}
        self.backend_ = "torch"
        self.encoder_: Encoder | None = None  # what embeds: the torch body or an ONNX session
        self.cascade_: Cascade | None = None  # set when backend_ == "cascade"
        self.optimized_: Optimized | None = None  # the backends' files, until saved

    # -- training -------------------------------------------------------------------------------

    def fit(
        self,
        train: Dataset,
        validation: Dataset | None = None,
        progress: ProgressCallback | None = None,
    ) -> IntentClassifier:
        """Fine-tune on ``train``; score on ``validation`` or on an automatic stratified split."""
        report = progress or (lambda stage, fraction: None)
        started = time.perf_counter()
        warnings = list(train.warnings) + check_trainable(train, allow_rare_labels=self.allow_rare_labels)
        if validation is None:
            train_part, validation = train_validation_split(train, self.validation_fraction, self.settings.seed)
            split = {"kind": "automatic", "fraction": self.validation_fraction, "seed": self.settings.seed}
        else:
            train_part = train
            split = {"kind": "given", "source": validation.source}
        _seed_everything(self.settings.seed)
        report("loading", 0.0)
        body = load_base_model(self.base_model, self.device)
        warnings += long_text_warnings(train, body)
        report("loading", 1.0)

        labels = sorted(set(train_part.labels))
        class_ids = [labels.index(label) for label in train_part.labels]
        tuning = finetune_body(body, train_part.texts, class_ids, self.settings, report)

        report("head", 0.0)
        train_vectors = encode(body, train_part.texts)
        head = LinearHead.fit(train_vectors, np.array(class_ids), len(labels), self.head_regularization)
        self.body_, self.head_, self.labels_ = body, head, labels
        self.backend_, self.encoder_, self.cascade_ = "torch", TorchEncoder(body), None
        report("head", 1.0)

        report("evaluating", 0.0)
        self.metrics_, default_threshold = None, {"value": 0.5, "fitted_on": 0}
        if len(validation):
            probabilities, self.metrics_ = self._score(validation)
            default_threshold = _fit_threshold(probabilities, validation.labels, labels)
        report("evaluating", 1.0)

        report("optimizing", 0.0)
        known = [i for i, label in enumerate(validation.labels) if label in labels]
        self.optimized_ = optimize(
            body,
            head,
            _clean(train_part.texts),
            train_vectors,
            np.array(class_ids),
            _clean([validation.texts[i] for i in known]),
            np.array([labels.index(validation.labels[i]) for i in known]),
            self.head_regularization,
        )
        report("optimizing", 1.0)
        self.info_ = {
            "base_model": self.base_model,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "fit_seconds": round(time.perf_counter() - started, 2),
            "fine_tuning": tuning,
            "head_regularization": self.head_regularization,
            "default_threshold": default_threshold,
            "inference": self.optimized_.info,
            "data": {
                "train_source": train.source,
                "train_examples": len(train_part),
                "train_checksum": train_part.checksum(),
                "validation_examples": len(validation),
                "validation_checksum": validation.checksum(),
                "validation_split": split,
            },
            "warnings": [str(w) for w in warnings],
            "versions": _versions(),
        }
        return self

    # -- inference ------------------------------------------------------------------------------

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Fine-tuned, unit-length embeddings, one row per text (from the loaded backend's transformer)."""
        encoder, _, _ = self._fitted()
        return encoder.encode(_clean(texts))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """A confidence for every label, one row per text; columns follow ``labels_``."""
        encoder, head, _ = self._fitted()
        cleaned = _clean(texts)
        if self.cascade_ is not None:
            return self.cascade_.predict_proba(cleaned)
        return head.predict_proba(encoder.encode(cleaned))

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most confident label of each text."""
        _, _, labels = self._fitted()
        return [labels[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def evaluate(self, dataset: Dataset) -> dict:
        """Metrics of this model on labelled data (see ``classification_metrics``)."""
        return self._score(dataset)[1]

    def _score(self, dataset: Dataset) -> tuple[np.ndarray, dict]:
        _, _, labels = self._fitted()
        probabilities = self.predict_proba(dataset.texts)
        predicted = [labels[i] for i in probabilities.argmax(axis=1)]
        return probabilities, classification_metrics(dataset.labels, predicted, probabilities, labels)

    # -- persistence ----------------------------------------------------------------------------

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the model folder atomically; ``SentenceTransformer(path)`` loads its tuned body.

        The ONNX exports and the static student built by ``fit`` (or ``optimize``) are saved with it.
        """
        _, head, labels = self._fitted()
        if self.body_ is None:
            raise NotFittedError(
                f"a model loaded with backend={self.backend_!r} has no torch body to save: load it "
                "with backend='torch' to save it"
            )
        files, info = {}, dict(self.info_)
        if self.optimized_ is not None:
            files = {ONNX_FILES[name]: content for name, content in self.optimized_.onnx_models.items()}
            files[STUDENT_FILE] = self.optimized_.student.to_bytes()
            info["inference"] = self.optimized_.info
        else:  # the backends' files are not in memory: a saved default could not be loaded
            info.pop("inference", None)
        config = {"labels": labels, "multilabel": False, **info}
        return write_model_folder(Path(path), self.body_, head, config, self.metrics_, overwrite, files)

    def optimize(self, train: Dataset, validation: Dataset) -> IntentClassifier:
        """Build the ONNX and cascade backends for a model fitted before they existed (then ``save``)."""
        body, head, labels = self.body_, self.head_, self.labels_
        if body is None or head is None or labels is None:
            raise NotFittedError("optimize needs the torch body: IntentClassifier.load(path, backend='torch')")
        train_part = [i for i, label in enumerate(train.labels) if label in labels]
        known = [i for i, label in enumerate(validation.labels) if label in labels]
        texts = _clean([train.texts[i] for i in train_part])
        self.optimized_ = optimize(
            body,
            head,
            texts,
            encode(body, texts),
            np.array([labels.index(train.labels[i]) for i in train_part]),
            _clean([validation.texts[i] for i in known]),
            np.array([labels.index(validation.labels[i]) for i in known]),
            self.head_regularization,
        )
        self.info_["inference"] = self.optimized_.info
        return self

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, backend: str | None = None) -> IntentClassifier:
        """Load a folder written by ``save``; a foreign or damaged folder raises ``ModelFolderError``.

        ``backend``: ``torch``, ``onnx``, ``onnx-int8`` or ``cascade``; None takes the model's default
        (``info_["inference"]["default_backend"]``, fitted on its validation split; torch for models
        saved before backends existed).
        """
        path = Path(path)
        _, _, config, _ = read_model_folder(path, load_body=False)
        inference = config.get("inference") or {}
        chosen = backend or inference.get("default_backend") or "torch"
        if chosen not in BACKENDS:
            raise ValueError(f"unknown backend {chosen!r}: choose one of {', '.join(BACKENDS)}")
        transformer = (inference.get("cascade") or {}).get("transformer", "torch") if chosen == "cascade" else chosen
        body, head, config, metrics = read_model_folder(path, device, load_body=transformer == "torch")
        classifier = cls(config.get("base_model", DEFAULT_BASE_MODEL), device=device)
        classifier.body_, classifier.head_, classifier.labels_ = body, head, list(config["labels"])
        classifier.metrics_ = metrics
        classifier.info_ = {k: v for k, v in config.items() if k not in ("labels", "multilabel")}
        classifier.backend_ = chosen
        classifier.encoder_ = (
            TorchEncoder(body) if body is not None else _onnx_encoder(path, transformer, head, inference)
        )
        if chosen == "cascade":
            classifier.cascade_ = _cascade(path, classifier.encoder_, head, inference)
        return classifier

    def _fitted(self) -> tuple[Encoder, LinearHead, list[str]]:
        if self.encoder_ is None or self.head_ is None or self.labels_ is None:
            raise NotFittedError("this classifier is not trained: call fit(...) or IntentClassifier.load(path)")
        return self.encoder_, self.head_, self.labels_


def _onnx_encoder(path: Path, backend: str, head: LinearHead, inference: dict) -> OnnxEncoder:
    file = path / ONNX_FILES[backend]
    if not file.is_file():
        raise ModelFolderError(
            f"{path} has no {ONNX_FILES[backend]}: it was saved before the ONNX backends existed. Build them with "
            f"`intent-router optimize {path.name} --data TRAIN.csv`, or load it with backend='torch'"
        )
    try:
        encoder = OnnxEncoder(file, Tokenizer.from_folder(path, int(inference.get("max_seq_length", 256))), backend)
        dimension = encoder.encode(["dimension check"]).shape[1]
    except BackendError as err:
        raise ModelFolderError(
            f"{err}. Rebuild it with `intent-router optimize {path.name} --data TRAIN.csv`, "
            "or load the model with backend='torch'"
        ) from err
    if dimension != head.dimension:
        raise ModelFolderError(
            f"{file} gives {dimension}-dimensional embeddings, but the head expects "
            f"{head.dimension}: rebuild it with `intent-router optimize {path.name}`"
        )
    return encoder


def _cascade(path: Path, transformer: Encoder, head: LinearHead, inference: dict) -> Cascade:
    file = path / STUDENT_FILE
    if not file.is_file() or "threshold" not in (inference.get("cascade") or {}):
        raise ModelFolderError(
            f"{path} has no static student ({STUDENT_FILE}) or cascade threshold: build it with "
            f"`intent-router optimize {path.name} --data TRAIN.csv`, or choose another backend"
        )
    try:
        student = StaticStudent.load(file, Tokenizer.from_folder(path, int(inference.get("max_seq_length", 256))))
    except Exception as err:  # safetensors, shape and tokenizer errors all mean a damaged file
        raise ModelFolderError(f"cannot read the static student {file}: {err}") from err
    return Cascade(student, transformer, head, float(inference["cascade"]["threshold"]))


def _fit_threshold(probabilities: np.ndarray, true_labels: list[str], labels: list[str]) -> dict:
    """The router's default confidence threshold, fitted on validation predictions."""
    predicted = [labels[i] for i in probabilities.argmax(axis=1)]
    correct = np.array([p == y for p, y in zip(predicted, true_labels, strict=True)])
    value = confidence_threshold(probabilities.max(axis=1), correct, THRESHOLD_PRECISION)
    return {"value": round(value, 4), "fitted_on": len(true_labels), "target_precision": THRESHOLD_PRECISION}


def long_text_warnings(dataset: Dataset, body) -> list[Problem]:
    """A warning counting the texts longer than the body's token window (they are truncated)."""
    window = body.max_seq_length
    lengths = [len(ids) for ids in body.tokenizer(dataset.texts, add_special_tokens=True)["input_ids"]]
    long_lines = [e.line for e, n in zip(dataset.examples, lengths, strict=True) if n > window]
    if not long_lines:
        return []
    shown = ", ".join(str(line) for line in long_lines[:10])
    message = f"{len(long_lines)} text(s) longer than the model's {window}-token window are truncated (lines {shown})"
    return [Problem(dataset.source, None, message, "warning")]


def encode(body, texts: Sequence[str]) -> np.ndarray:
    """Unit-length embeddings of ``texts`` by a body (tuned or base), made as the classifier makes them."""
    vectors = body.encode(_clean(texts), batch_size=ENCODE_BATCH_SIZE, convert_to_numpy=True, normalize_embeddings=True)
    return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)


def _clean(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not one string: predict([text])")
    cleaned = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is a {type(text).__name__}, not a string")
        cleaned.append(normalize_text(text))
    return cleaned


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _versions() -> dict:
    import sentence_transformers
    import transformers

    return {
        "intent_router": __version__,
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
