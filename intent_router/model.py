"""The intent classifier: a fine-tuned sentence-embedding body and a linear head.

>>> from intent_router import IntentClassifier, load_dataset
>>> clf = IntentClassifier(base_model="english-small").fit(load_dataset("train.csv"))
>>> clf.predict(["show me fares from boston to denver"])
['airfare']
>>> clf.save("models/atis")
>>> clf = IntentClassifier.load("models/atis")

With ``multilabel=True`` each text has a set of labels (zero, one or several): ``labels_`` are the
single labels, ``predict_proba`` gives each one's independent probability (a sigmoid head), and
``predict`` the labels at or above their thresholds (``thresholds_``, fitted on validation); a model
whose training data had no row without a label never predicts the empty set (none above its
threshold: the most probable label):

>>> clf = IntentClassifier(multilabel=True).fit(load_dataset("train.csv", multilabel=True))
>>> clf.predict(["flights and fares from boston to denver", "hello"])
['airfare+flight', '']

(``''`` for "hello" if the data has rows without a label; else its most probable label.) A set the
head was never trained on (a combination absent from the data and from its synthetic rows) becomes
the closest one it was trained on (``combinations.py``).
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

from . import __version__, cleaning
from .backends import ONNX_FILES, BackendError, Encoder, OnnxEncoder, Tokenizer, TorchEncoder
from .base_models import DEFAULT_BASE_MODEL, load_base_model
from .combinations import Combinations
from .data import (
    DataError,
    Dataset,
    Problem,
    check_trainable,
    first_few,
    label_key,
    normalize_text,
    parse_labels,
    synthetic_multi_intent,
    train_validation_split,
    unicode_problem,
)
from .finetune import DEFAULT_MARGIN, MAX_SEED, FinetuneSettings, ProgressCallback, finetune_body
from .head import LinearHead, SigmoidHead
from .metrics import classification_metrics, confidence_threshold, label_thresholds, multilabel_metrics
from .model_folder import CONFIG_FILE, ModelLoadError, read_config, read_model_folder, write_model_folder
from .optimize import BACKENDS, Optimized, optimize
from .student import Cascade, StaticStudent

ENCODE_BATCH_SIZE = 64
STUDENT_FILE = "student.safetensors"
THRESHOLD_PRECISION = 0.95  # the default router threshold keeps validation precision at this level
# The default similarity threshold: this share (in %) of validation utterances is nearer no intent centroid.
SIMILARITY_PERCENTILE = 5.0
# The default review threshold (a router's ``review``): routed, yet further from every intent centroid
# than this share (in %) of validation utterances, so kept for discovery. See README, Discovery.
REVIEW_PERCENTILE = 15.0
# A multilabel model's synthetic multi-intent rows per training row, unless asked otherwise: without them
# its head rarely predicts two labels at once (see README, Multilabel models).
DEFAULT_SYNTHETIC_MULTI_INTENT = 0.05


class NotFittedError(RuntimeError):
    """The classifier was used before ``fit`` or ``load``."""


class IntentClassifier:
    """Fine-tune with ``fit``; then ``predict``, ``predict_proba``, ``embed``, ``evaluate``, ``save``.

    Learned state lives in attributes ending in ``_``: ``labels_`` (class names, the columns of
    ``predict_proba``), ``metrics_`` (on the validation split) and ``info_`` (how it was trained).

    ``multilabel=True``: ``labels_`` are single labels, ``predict_proba`` independent probabilities,
    ``predict`` the canonical name of the predicted set (``'airfare+flight'``; ``''`` for no label),
    ``thresholds_`` each label's decision threshold, ``predicts_empty_set_`` whether the training data
    held a row with no label (if not, a text with no label at its threshold gets its most probable one:
    on ATIS, 3 seeds, 1 more test set right each). ``synthetic_multi_intent`` (multilabel only; None:
    ``DEFAULT_SYNTHETIC_MULTI_INTENT`` for a multilabel model, 0: off) adds that many synthetic
    multi-intent rows per training row to the head's data (``data.synthetic_multi_intent``; made from
    the train part, never from validation; seeded by ``seed``). On ATIS (3 seeds) they kept as many
    single-intent test rows right and got 9 of the 15 multi-intent ones instead of 2 to 6 (README).
    ``backend_`` names the inference backend in use (``torch`` after ``fit``; see ``load``).
    """

    def __init__(
        self,
        base_model: str = DEFAULT_BASE_MODEL,
        *,
        steps: int | None = None,
        batch_size: int = 32,
        learning_rate: float = 5e-5,
        margin: float | None = None,
        seed: int = 0,
        validation_fraction: float = 0.2,
        allow_rare_labels: bool = False,
        multilabel: bool = False,
        head_regularization: float = 10.0,
        synthetic_multi_intent: float | None = None,
        clean_text: bool = False,
        layers: int | None = None,
        device: str | None = None,
    ):
        self.base_model = base_model
        self.layers = layers  # keep the base model's first N transformer layers; None: all of them
        margin = DEFAULT_MARGIN if margin is None else margin  # None: the library's default
        if not 0 < margin <= 2:
            raise ValueError(f"margin is {margin}: give the triplet margin, a cosine distance above 0 and at most 2")
        if not 0 <= seed <= MAX_SEED:  # else the fit fails after the data is read, in numpy's words
            raise ValueError(f"seed is {seed}: give a whole number from 0 to {MAX_SEED}")
        self.settings = FinetuneSettings(
            steps=steps, batch_size=batch_size, learning_rate=learning_rate, margin=margin, seed=seed
        )
        self.validation_fraction = validation_fraction
        self.allow_rare_labels = allow_rare_labels
        self.multilabel = multilabel
        self.head_regularization = head_regularization
        if synthetic_multi_intent is None:
            synthetic_multi_intent = DEFAULT_SYNTHETIC_MULTI_INTENT if multilabel else 0.0
        if not 0 <= synthetic_multi_intent <= 1 or (synthetic_multi_intent and not multilabel):
            raise ValueError(
                f"synthetic_multi_intent is {synthetic_multi_intent}: give a share from 0 to 1 (synthetic rows "
                "per training row), and only for a multilabel model (--multilabel, multilabel=True)"
            )
        # multilabel: this many synthetic multi-intent rows per training row join the head's data
        self.synthetic_multi_intent = synthetic_multi_intent
        self.clean_text = clean_text  # see cleaning.py; saved with the model and applied at inference
        self.device = device
        self.body_ = None
        self.head_: LinearHead | None = None
        self.labels_: list[str] | None = None
        self.thresholds_: np.ndarray | None = None
        self.predicts_empty_set_ = True  # multilabel: False when no training row had the empty set
        self.combinations_: Combinations | None = None  # multilabel: the label sets it may predict
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
        version = cleaning.VERSION  # a new training cleans as the current version, also of a loaded model
        if self.clean_text:  # rows that cleaning makes the same are dropped ("deduplicated_once_cleaned")
            train = train.cleaned(version)
            validation = validation.cleaned(version) if validation is not None else None
        warnings = list(train.warnings) + check_trainable(
            train, multilabel=self.multilabel, allow_rare_labels=self.allow_rare_labels
        )
        if validation is None:
            train_part, validation = train_validation_split(train, self.validation_fraction, self.settings.seed)
            split = {"kind": "automatic", "fraction": self.validation_fraction, "seed": self.settings.seed}
        else:
            train_part = train
            split = {"kind": "given", "source": validation.source}
            validation, left_out = known_validation(validation, train_part, self.multilabel)
            warnings += left_out + seen_validation(validation, train_part)
        _seed_everything(self.settings.seed)
        report("loading", 0.0)
        body = load_base_model(self.base_model, self.device, self.layers)
        warnings += long_text_warnings(train, body)
        report("loading", 1.0)

        classes = sorted(set(train_part.labels))  # label sets by canonical name
        class_ids = [classes.index(label) for label in train_part.labels]
        if self.multilabel:
            labels = sorted({label for label_set in train_part.label_sets for label in label_set})
            self.predicts_empty_set_ = any(not label_set for label_set in train_part.label_sets)
            label_sets = _multi_hot([parse_labels(name) for name in classes], labels)
            tuning = finetune_body(body, train_part.texts, class_ids, self.settings, report, label_sets)
        else:
            labels = classes
            tuning = finetune_body(body, train_part.texts, class_ids, self.settings, report)

        report("head", 0.0)
        # Synthetic multi-intent rows join the head's data only (in fine-tuning too they cost 19-129 s more
        # on ATIS for no validation gain); made from the train part, never from validation.
        count = round(self.synthetic_multi_intent * len(train_part))
        synthetic = synthetic_multi_intent(train_part, count, self.settings.seed)
        fitted_on = Dataset(train_part.examples + synthetic.examples, train_part.source)
        train_vectors = encode(body, fitted_on.texts, self.clean_text, version)
        if self.multilabel:
            self.combinations_ = Combinations.trained_on(train_part.label_sets, synthetic.label_sets)
            targets = _multi_hot(fitted_on.label_sets, labels)
            head: LinearHead = SigmoidHead.fit(train_vectors, targets, len(labels), self.head_regularization)
        else:
            head = LinearHead.fit(train_vectors, np.array(class_ids), len(labels), self.head_regularization)
        head.keep_anchors(train_vectors[: len(train_part)], self.settings.seed)  # not the synthetic rows
        self.body_, self.head_, self.labels_ = body, head, labels
        self.backend_, self.encoder_, self.cascade_ = "torch", TorchEncoder(body), None
        report("head", 1.0)

        report("evaluating", 0.0)
        self.metrics_ = None
        thresholds: dict = {
            "default_similarity_threshold": {"value": 0.0, "fitted_on": 0},
            "default_review_similarity_threshold": {"value": 0.0, "fitted_on": 0},
        }
        if self.multilabel:
            self.thresholds_ = np.full(len(labels), 0.5)
        else:
            thresholds["default_threshold"] = {"value": 0.5, "fitted_on": 0}
        if len(validation):
            vectors = encode(body, validation.texts, self.clean_text, version)
            probabilities = head.predict_proba(vectors)
            thresholds["default_similarity_threshold"] = fit_similarity_threshold(head, vectors)
            thresholds["default_review_similarity_threshold"] = fit_similarity_threshold(
                head, vectors, REVIEW_PERCENTILE
            )
            if self.multilabel:
                fitted = label_thresholds(probabilities, _multi_hot(validation.label_sets, labels))
                self.thresholds_ = np.round(fitted, 4)  # as stored in intent_router.json
            else:
                thresholds["default_threshold"] = _fit_threshold(probabilities, validation.labels, labels)
            self.metrics_ = self._metrics(validation, probabilities)
        if self.thresholds_ is not None:
            thresholds["label_thresholds"] = dict(zip(labels, self.thresholds_.tolist(), strict=True))
        report("evaluating", 1.0)

        self.optimized_ = None
        if not self.multilabel:  # the ONNX backends are built for single-label models
            report("optimizing", 0.0)
            known = [i for i, label in enumerate(validation.labels) if label in labels]
            self.optimized_ = optimize(
                body,
                head,
                prepare_texts(train_part.texts, self.clean_text, version),
                np.array(class_ids),
                prepare_texts([validation.texts[i] for i in known], self.clean_text, version),
                np.array([labels.index(validation.labels[i]) for i in known]),
            )
            report("optimizing", 1.0)
        self.info_ = {
            "base_model": self.base_model,
            "layers": body[0].auto_model.config.num_hidden_layers,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "fit_seconds": round(time.perf_counter() - started, 2),
            "fine_tuning": tuning,
            "head_regularization": self.head_regularization,
            **(
                {
                    "synthetic_multi_intent": {"share": self.synthetic_multi_intent, "rows": len(synthetic)},
                    "predicts_empty_set": self.predicts_empty_set_,
                    "label_combinations": self.combinations_.to_json() if self.combinations_ else None,
                }
                if self.multilabel
                else {}
            ),
            "clean_text": self.clean_text,
            **({"cleaning_version": version} if self.clean_text else {}),
            **thresholds,
            **({"inference": self.optimized_.info} if self.optimized_ else {}),
            "data": {
                "train_source": train.source,
                "train_examples": len(train_part),
                "train_checksum": train_part.checksum(),
                "validation_examples": len(validation),
                "validation_checksum": validation.checksum(),
                "validation_split": split,
                **({"deduplicated_once_cleaned": True} if self.clean_text else {}),
            },
            "warnings": [str(w) for w in warnings],
            "versions": _versions(),
        }
        return self

    @property
    def cleaning_version_(self) -> int:
        """The text cleaning version (``cleaning.VERSIONS``) the model was trained with, and so cleans
        its inputs with: recorded in ``info_`` with ``clean_text``; a model saved before versions were
        recorded has none and means version 1."""
        return int(self.info_.get("cleaning_version", cleaning.UNVERSIONED))

    # -- inference ------------------------------------------------------------------------------

    def prepare(self, texts: Sequence[str]) -> list[str]:
        """The texts as this model's encoder takes them: normalized and, for a model trained with
        ``clean_text``, cleaned as it was trained (``data.normalize_text``)."""
        return prepare_texts(texts, self.clean_text, self.cleaning_version_)

    def embed(self, texts: Sequence[str], prepared: bool = False) -> np.ndarray:
        """Fine-tuned, unit-length embeddings, one row per text (from the loaded backend's transformer).

        ``prepared``: the texts come from ``prepare`` already (the service cleans a cleaning model's
        texts before they queue, to check them cleaned), so they are not prepared a second time.
        """
        encoder, head, _ = self._fitted()
        prepared_texts = list(texts) if prepared else self.prepare(texts)
        if not prepared_texts:
            return np.zeros((0, head.dimension), dtype=np.float32)
        return encoder.encode(prepared_texts)

    def predict_proba(self, texts: Sequence[str], prepared: bool = False) -> np.ndarray:
        """A confidence for every label, one row per text; columns follow ``labels_``. ``prepared``:
        as in ``embed``."""
        encoder, head, _ = self._fitted()
        prepared_texts = list(texts) if prepared else self.prepare(texts)
        if not prepared_texts:
            return np.zeros((0, head.n_classes), dtype=np.float32)
        if self.cascade_ is not None:
            return self.cascade_.predict_proba(prepared_texts)
        return head.predict_proba(encoder.encode(prepared_texts))

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most confident label of each text; multilabel: the canonical name of its predicted set."""
        return self.predictions(self.predict_proba(texts))

    def predictions(self, probabilities: np.ndarray) -> list[str]:
        """``predict``'s answer from rows of ``predict_proba`` already computed."""
        if self.multilabel:
            return [label_key(s) for s in self.predicted_sets(probabilities)]
        _, _, labels = self._fitted()
        return [labels[i] for i in probabilities.argmax(axis=1)]

    def predicted_sets(self, probabilities: np.ndarray) -> list[frozenset[str]]:
        """Multilabel: each row's labels at or above their thresholds (rows of ``predict_proba``).

        Unless the model ``predicts_empty_set_``, a row with none gets its most probable label: trained
        without an example of "no label", the model never learned what one looks like, and its empty
        sets were labels just under their thresholds (the router still falls back on them). Then a set
        the head was not trained on becomes its closest one that it was (``combinations.py``).
        """
        _, _, labels = self._fitted()
        if self.thresholds_ is None:
            raise NotFittedError("predicted sets need a multilabel model: IntentClassifier(multilabel=True)")
        accepted = probabilities >= self.thresholds_
        if not self.predicts_empty_set_:
            empty = np.flatnonzero(~accepted.any(axis=1))
            accepted[empty, probabilities[empty].argmax(axis=1)] = True
        rows = [np.flatnonzero(row).tolist() for row in accepted]
        if self.combinations_ is not None:
            closest, thresholds = self.combinations_.closest, self.thresholds_
            rows = [closest(row, p, thresholds, labels) for row, p in zip(rows, probabilities, strict=True)]
        return [frozenset(labels[i] for i in row) for row in rows]

    def evaluate(self, dataset: Dataset) -> dict:
        """Metrics of this model on labelled data (``classification_metrics``; ``multilabel_metrics``)."""
        return self._metrics(dataset, self.predict_proba(dataset.texts))

    def _metrics(self, dataset: Dataset, probabilities: np.ndarray) -> dict:
        _, _, labels = self._fitted()
        if self.multilabel:
            return multilabel_metrics(dataset.label_sets, self.predicted_sets(probabilities), probabilities, labels)
        predicted = [labels[i] for i in probabilities.argmax(axis=1)]
        return classification_metrics(dataset.labels, predicted, probabilities, labels)

    # -- persistence ----------------------------------------------------------------------------

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the model folder atomically; ``SentenceTransformer(path)`` loads its tuned body.

        The ONNX exports built by ``fit`` (or ``optimize``) are saved with it, and the static student
        if ``optimize(..., cascade=True)`` built one.
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
            if self.optimized_.student is not None:
                files[STUDENT_FILE] = self.optimized_.student.to_bytes()
            info["inference"] = self.optimized_.info
        else:  # the backends' files are not in memory: a saved default could not be loaded
            info.pop("inference", None)
        config = {"labels": labels, "multilabel": self.multilabel, **info}
        if self.multilabel and self.thresholds_ is not None:  # these may have been changed since fit
            config["label_thresholds"] = {y: float(t) for y, t in zip(labels, self.thresholds_, strict=True)}
            config["predicts_empty_set"] = self.predicts_empty_set_
            config["label_combinations"] = self.combinations_.to_json() if self.combinations_ else None
        return write_model_folder(Path(path), self.body_, head, config, self.metrics_, overwrite, files)

    def optimize(self, train: Dataset, validation: Dataset, cascade: bool | None = None) -> IntentClassifier:
        """Build the ONNX backends again, and the cascade's static student (then ``save``): ``cascade``
        True builds it, False leaves it out, None (the default) builds it again if the model has one.

        For a model fitted before the backends existed, to repair a backend's files, or to add the
        cascade, which ``fit`` does not build. ``train`` and ``validation`` must be the parts the model
        was fitted and validated on (with an automatic split: ``train_validation_split`` of the data,
        with the fraction and seed in ``info_["data"]["validation_split"]``, for a ``clean_text`` model
        of ``cleaned_as_fitted(data)``); others are a ``ValueError``, checked against the checksums the
        fit recorded.
        """
        body, head, labels = self.body_, self.head_, self.labels_
        if body is None or head is None or labels is None:
            raise NotFittedError("optimize needs the torch body: IntentClassifier.load(path, backend='torch')")
        if self.multilabel:
            raise ValueError("multilabel models run on torch only: the ONNX and cascade backends are single-label")
        if cascade is None:
            cascade = self.has_cascade
        train, validation = self.cleaned_as_fitted(train), self.cleaned_as_fitted(validation)
        validation, _ = known_validation(validation, train, multilabel=False)
        data = self.info_.get("data", {})
        for part, dataset, key in (("training part", train, "train"), ("validation split", validation, "validation")):
            expected = data.get(f"{key}_checksum")  # None: a model fitted before checksums were kept
            if expected and dataset.checksum() != expected:
                raise ValueError(
                    f"this {part} is not the one the model was fitted with (checksum differs): give the same "
                    "data file (and validation file, if it had one); without one, the same automatic split"
                )
        train_part = [i for i, label in enumerate(train.labels) if label in labels]
        known = [i for i, label in enumerate(validation.labels) if label in labels]
        texts = prepare_texts([train.texts[i] for i in train_part], self.clean_text, self.cleaning_version_)
        self.optimized_ = optimize(
            body,
            head,
            texts,
            np.array([labels.index(train.labels[i]) for i in train_part]),
            prepare_texts([validation.texts[i] for i in known], self.clean_text, self.cleaning_version_),
            np.array([labels.index(validation.labels[i]) for i in known]),
            cascade=cascade,
        )
        self.info_["inference"] = self.optimized_.info
        return self

    @property
    def has_cascade(self) -> bool:
        """Whether the model has the cascade backend (``optimize`` with ``cascade``; ``fit`` builds none)."""
        return bool((self.info_.get("inference") or {}).get("cascade"))

    def cleaned_as_fitted(self, dataset: Dataset) -> Dataset:
        """``dataset`` cleaned as this model's fit cleaned its data (as it is for a model without
        ``clean_text``; once only: a dataset cleaned so already is returned as it is)."""
        if not self.clean_text:
            return dataset
        deduplicate = self.info_.get("data", {}).get("deduplicated_once_cleaned", False)  # fits before: False
        return dataset.cleaned(self.cleaning_version_, deduplicate=deduplicate)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, backend: str | None = None) -> IntentClassifier:
        """Load a folder written by ``save``; a missing, foreign or damaged folder raises ``ModelLoadError``.

        ``backend``: ``torch``, ``onnx``, ``onnx-int8`` or ``cascade``; None takes the model's default
        (``info_["inference"]["default_backend"]``, fitted on its validation split; torch for models
        saved before backends existed, and for multilabel models, which run on torch only).
        """
        path = Path(path)
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        config = read_config(path)
        multilabel = bool(config.get("multilabel", False))
        if multilabel and backend not in (None, "torch"):
            raise ValueError(
                f"{path.name} is a multilabel model, which runs on torch only (the {backend} backend is built for "
                "single-label models): load it with backend 'torch', or with none"
            )
        inference = config.get("inference") or {}
        chosen = backend or inference.get("default_backend") or "torch"
        if chosen not in BACKENDS:
            raise _wrong_field(path, "inference.default_backend", chosen, ", ".join(BACKENDS))
        transformer = (inference.get("cascade") or {}).get("transformer", "torch") if chosen == "cascade" else chosen
        if transformer not in ("torch", *ONNX_FILES):
            raise _wrong_field(path, "inference.cascade.transformer", transformer, ", ".join(["torch", *ONNX_FILES]))
        body, head, metrics = read_model_folder(path, config, device, load_body=transformer == "torch")
        classifier = cls(
            config.get("base_model", DEFAULT_BASE_MODEL),
            multilabel=multilabel,
            clean_text=bool(config.get("clean_text")),
            device=device,
        )
        classifier.body_, classifier.head_, classifier.labels_ = body, head, list(config["labels"])
        if multilabel:
            classifier.thresholds_ = np.array([config["label_thresholds"][label] for label in config["labels"]])
            # models saved before these keys: the empty set allowed, no synthetic rows
            classifier.predicts_empty_set_ = config.get("predicts_empty_set", True)
            if not isinstance(classifier.predicts_empty_set_, bool):
                raise _wrong_field(path, "predicts_empty_set", classifier.predicts_empty_set_, "true, false")
            synthetic = config.get("synthetic_multi_intent")  # what it was trained with (information only)
            share = synthetic.get("share") if isinstance(synthetic, dict) else None
            classifier.synthetic_multi_intent = float(share) if isinstance(share, int | float) else 0.0
            if config.get("label_combinations") is not None:  # None or absent: any set; checked by read_config
                classifier.combinations_ = Combinations.from_json(config["label_combinations"], config["labels"])
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


def _wrong_field(path: Path, field: str, value: object, choices: str) -> ModelLoadError:
    return ModelLoadError(
        path, f"{path / CONFIG_FILE}: '{field}' is {value!r}, not one of {choices}", "correct it, or retrain the model"
    )


def _onnx_encoder(path: Path, backend: str, head: LinearHead, inference: dict) -> OnnxEncoder:
    file = path / ONNX_FILES[backend]
    if not file.is_file():
        raise ModelLoadError(
            path,
            f"{path} has no {ONNX_FILES[backend]} (it was deleted, or saved before the ONNX backends)",
            f"build them with `intent-router optimize {path.name} --data TRAIN.csv`, or load it with backend='torch'",
        )
    try:  # the tokenizer is the body's: torch needs it too
        tokenizer = Tokenizer.from_folder(path, int(inference.get("max_seq_length", 256)))
    except BackendError as err:
        raise ModelLoadError(path, str(err)) from err
    try:
        encoder = OnnxEncoder(file, tokenizer, backend)
        dimension = encoder.encode(["dimension check"]).shape[1]
    except Exception as err:  # BackendError, or a valid ONNX file of another model that cannot run here
        raise ModelLoadError(
            path,
            str(err) if isinstance(err, BackendError) else f"{file} does not run: {type(err).__name__}: {err}",
            f"rebuild it with `intent-router optimize {path.name} --data TRAIN.csv`, "
            "or load the model with backend='torch'",
        ) from err
    if dimension != head.dimension:
        raise ModelLoadError(
            path,
            f"{file} gives {dimension}-dimensional embeddings, but the head expects {head.dimension}",
            f"rebuild it with `intent-router optimize {path.name} --data TRAIN.csv`",
        )
    return encoder


def _cascade(path: Path, transformer: Encoder, head: LinearHead, inference: dict) -> Cascade:
    file = path / STUDENT_FILE
    if not file.is_file() or "threshold" not in (inference.get("cascade") or {}):
        raise ModelLoadError(
            path,
            f"{path} has no static student ({STUDENT_FILE}): training does not build the cascade",
            f"build it with `intent-router optimize {path.name} --data TRAIN.csv --cascade`, or choose another backend",
        )
    try:
        student = StaticStudent.load(file, Tokenizer.from_folder(path, int(inference.get("max_seq_length", 256))))
    except Exception as err:  # safetensors, shape and tokenizer errors all mean a damaged file
        raise ModelLoadError(
            path,
            f"cannot read the static student {file}: {err}",
            f"rebuild it with `intent-router optimize {path.name} --data TRAIN.csv --cascade`",
        ) from err
    return Cascade(student, transformer, head, float(inference["cascade"]["threshold"]))


def _fit_threshold(probabilities: np.ndarray, true_labels: list[str], labels: list[str]) -> dict:
    """The router's default confidence threshold, fitted on validation predictions."""
    predicted = [labels[i] for i in probabilities.argmax(axis=1)]
    correct = np.array([p == y for p, y in zip(predicted, true_labels, strict=True)])
    value = confidence_threshold(probabilities.max(axis=1), correct, THRESHOLD_PRECISION)
    return {"value": round(value, 4), "fitted_on": len(true_labels), "target_precision": THRESHOLD_PRECISION}


def fit_similarity_threshold(
    head: LinearHead, validation_embeddings: np.ndarray, percentile: float = SIMILARITY_PERCENTILE
) -> dict:
    """The router's default centroid-similarity threshold: a low percentile of validation similarities.

    Utterances of an intent the model never saw often get a confident softmax anyway (the fine-tuned
    space has no room for them) but lie further from every intent's centroid than known traffic does.
    """
    similarities = head.centroid_similarity(validation_embeddings)
    if similarities is None or not len(similarities):
        return {"value": 0.0, "fitted_on": 0}
    value = float(np.percentile(similarities, percentile))
    return {"value": round(value, 4), "fitted_on": len(similarities), "percentile": percentile}


def known_validation(validation: Dataset, train: Dataset, multilabel: bool) -> tuple[Dataset, list[Problem]]:
    """The validation rows whose labels the training data has, and warnings naming what was left out
    and which training labels no validation row has.

    A row with a label the model cannot predict would count as an error in the metrics and, worse,
    push the fitted confidence threshold up (to 1.0 when no row is known: every request would fall
    back). No known row at all is a ``DataError``. A training label without a validation row is
    trained but never measured (a new intent added to the training file only, say).
    """
    if multilabel:  # each label on its own
        known = {label for label_set in train.label_sets for label in label_set}
        keep = [i for i, label_set in enumerate(validation.label_sets) if label_set <= known]
        named = {label for label_set in validation.label_sets for label in label_set}
    else:  # classes: "a+b" is a class of its own
        known, named = set(train.labels), set(validation.labels)
        keep = [i for i, label in enumerate(validation.labels) if label in known]
    warnings = []
    unmeasured = sorted(known - named)
    if unmeasured and keep:
        message = (
            f"{len(unmeasured)} training label(s) have no validation row ({first_few(unmeasured)}): their "
            "metrics are not measured and the thresholds are fitted without them; add a few of their rows "
            "to the validation file"
        )
        warnings.append(Problem(validation.source, None, message, "warning"))
    if len(keep) == len(validation):
        return validation, warnings
    unknown = sorted(named - known)
    if not keep:
        message = (
            f"no validation row has a label of the training data (validation labels: {first_few(unknown)}); "
            "give a validation file with the training data's labels, or none for an automatic split"
        )
        raise DataError([Problem(validation.source, None, message)])
    message = (
        f"{len(validation) - len(keep)} validation row(s) with labels the training data lacks "
        f"({first_few(unknown)}) are left out of the metrics and thresholds"
    )
    return validation.subset(keep), [Problem(validation.source, None, message, "warning"), *warnings]


def seen_validation(validation: Dataset, train: Dataset) -> list[Problem]:
    """A warning counting the validation rows whose text is a training text too (the training file given
    as validation, say): the model has seen them, so their metrics flatter it and the thresholds fitted on
    them are lenient, and nothing else would say so."""
    seen = set(train.texts)
    lines = [example.line for example in validation.examples if example.text in seen]
    if not lines:
        return []
    message = (
        f"{len(lines)} of {len(validation)} validation row(s) are training rows too (lines {first_few(lines)}): "
        "the model has seen them, so the metrics flatter it and the thresholds fitted on them are lenient; keep "
        "each text in one of the files"
    )
    return [Problem(validation.source, None, message, "warning")]


def _multi_hot(label_sets: Sequence[frozenset[str]], labels: list[str]) -> np.ndarray:
    return np.array([[label in s for label in labels] for s in label_sets], dtype=bool).reshape(len(label_sets), -1)


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


def encode(body, texts: Sequence[str], clean: bool = False, cleaning_version: int = cleaning.VERSION) -> np.ndarray:
    """Unit-length embeddings of ``texts`` by a body (tuned or base), made as the classifier makes them.

    ``clean`` and ``cleaning_version`` are the model's ``clean_text`` and ``cleaning_version_``. A text
    that is empty once prepared (white space, or with ``clean`` only markup, links or symbols) is
    encoded as the empty string: it gets a defined but meaningless prediction, so the HTTP service
    refuses such texts with a 422 instead.
    """
    vectors = body.encode(
        prepare_texts(texts, clean, cleaning_version),
        batch_size=ENCODE_BATCH_SIZE,
        convert_to_numpy=True,
        normalize_embeddings=True,
    )
    return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)


def prepare_texts(texts: Sequence[str], clean: bool = False, cleaning_version: int = cleaning.VERSION) -> list[str]:
    """The texts as the encoder sees them (``data.normalize_text``), after checking they are strings
    of valid Unicode (a lone surrogate, from a bad ``\\u`` escape or undecodable bytes, is refused:
    the tokenizer cannot take it)."""
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not one string: predict([text])")
    prepared = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is a {type(text).__name__}, not a string")
        problem = unicode_problem(text, f"text {i}")
        if problem:
            raise ValueError(problem)
        prepared.append(normalize_text(text, clean, cleaning_version))
    return prepared


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
