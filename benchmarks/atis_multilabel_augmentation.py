"""Synthetic multi-intent training rows for the multilabel head, measured on a saved ATIS body.

    python benchmarks/atis_multilabel_augmentation.py --model /tmp/ml-models/atis-multilabel
    python benchmarks/atis_multilabel_augmentation.py --model ... --test     # and the test figures

Rebuilds the train part and validation split the saved multilabel model was fitted with (automatic
20%, seed 0; checked by checksum) and embeds them and the 893 test rows with its body, once
(cached in --cache). Then, for each share of synthetic rows (``data.synthetic_multi_intent``: two
single-label train-part utterances of different labels joined by a connector, labelled with the
union; made from the train part only, never from validation) and each augmentation seed, fits the
library's sigmoid head (one-vs-rest, class-weighted, C = 10) on train part + synthetic rows and the
library's exact-set thresholds (``label_thresholds``) on validation, and scores:

- validation, in sample: thresholds fitted and scored on all 927 rows (flatters fitted rules);
- validation, held out: thresholds fitted on four fifths of validation, scored on the fifth left
  out (5 shuffled folds, seed 0), summed over the folds;
- with --train-folds, train-part folds: the train part cut in 5 folds (seed 0); for each, the head
  is fitted on the other four (synthetic rows made from those four only), thresholds on the
  validation split, and the fold is scored; summed over the folds (3,707 rows, 18 of them
  multi-intent). More multi-intent rows than validation's 4, still no test row; but the body was
  fine-tuned on these rows, which flatters every variant alike;
- with --test, the 893 test rows (for reporting: choose from the validation columns).

Variants: --weights gives the synthetic rows a smaller weight in the head's regressions (1: as real
rows, the library's way); --sources "frequent" makes them only from labels on at least 2% of the
train part's rows (rare labels' heads then see no synthetic positives).

The body is not fine-tuned again here. The library's option (``synthetic_multi_intent``) puts the
rows in the head's data only, so on the body of a default fit the rows ``--sources frequent
--weights 1`` are what a fit with the option gives (``atis_multilabel.py --models
atis-multilabel`` fits one). Run on a body fine-tuned with the rows (an earlier version of
the option), ``--shares 0`` scores rows in fine-tuning only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from atis_multilabel_diagnosis import saved_split  # noqa: E402  (benchmarks/atis_multilabel_diagnosis.py)
from sklearn.linear_model import LogisticRegression  # noqa: E402

from intent_router import IntentClassifier  # noqa: E402
from intent_router.data import (  # noqa: E402
    SYNTHETIC_MIN_LABEL_SHARE,
    Dataset,
    synthetic_multi_intent,
)
from intent_router.head import SigmoidHead  # noqa: E402
from intent_router.metrics import label_thresholds  # noqa: E402

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "atis"


def cached_embed(classifier: IntentClassifier, texts: list[str], cache: Path, tag: str) -> np.ndarray:
    key = hashlib.sha256((tag + "\x1e" + "\x1f".join(texts)).encode()).hexdigest()[:20]
    file = cache / f"{key}.npy"
    if file.is_file():
        return np.load(file)
    vectors = classifier.embed(texts)
    np.save(file, vectors)
    return vectors


def hot(label_sets, labels: list[str]) -> np.ndarray:
    return np.array([[y in s for y in labels] for s in label_sets], dtype=bool).reshape(len(label_sets), len(labels))


def score(accepted: np.ndarray, targets: np.ndarray) -> dict:
    right = (accepted == targets).all(axis=1)
    multi = targets.sum(axis=1) > 1
    return {
        "right": int(right.sum()),
        "rows": len(right),
        "multi_right": int(right[multi].sum()),
        "multi_rows": int(multi.sum()),
    }


def held_out(valid_p: np.ndarray, valid_t: np.ndarray, folds: int = 5, seed: int = 0) -> dict:
    """Thresholds fitted on the other folds, each fold scored with them; the figures summed."""
    order = np.random.default_rng(seed).permutation(len(valid_p))
    accepted = np.zeros_like(valid_t)
    for fold in np.array_split(order, folds):
        rest = np.setdiff1d(order, fold)
        accepted[fold] = valid_p[fold] >= label_thresholds(valid_p[rest], valid_t[rest])
    return score(accepted, valid_t)


def weighted_head(x: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> SigmoidHead:
    """The library's sigmoid head (class-weighted, C = 10), each row's loss times its weight."""
    if (weights == 1).all():
        return SigmoidHead.fit(x, targets, targets.shape[1], 10.0)
    weight, bias = np.zeros((targets.shape[1], x.shape[1])), np.zeros(targets.shape[1])
    for k in range(targets.shape[1]):
        if targets[:, k].all() or not targets[:, k].any():
            bias[k] = 30.0 if targets[:, k].all() else -30.0
            continue
        model = LogisticRegression(C=10.0, class_weight="balanced", max_iter=5000)
        model.fit(x, targets[:, k], sample_weight=weights)
        weight[k], bias[k] = model.coef_[0], model.intercept_[0]
    return SigmoidHead(weight, bias)


def synthetic(train_part: Dataset, kind: str, count: int, seed: int) -> Dataset:
    """The library's synthetic rows ("frequent": labels on 2% of the rows or more) or from every label."""
    return synthetic_multi_intent(train_part, count, seed, 0.0 if kind == "all" else SYNTHETIC_MIN_LABEL_SHARE)


def train_folds(train_part, train_x, valid_x, valid_t, labels, args, share, kind, w, seed) -> dict:
    targets = hot(train_part.label_sets, labels)
    order = np.random.default_rng(0).permutation(len(train_part))
    accepted = np.zeros_like(targets)
    for fold in np.array_split(order, 5):
        rest = np.setdiff1d(order, fold)
        rest_data = train_part.subset(rest.tolist())
        rows = synthetic(rest_data, kind, round(share * len(rest)), seed)
        x, sets = train_x[rest], rest_data.label_sets
        if len(rows):
            x = np.vstack([x, cached_embed(args.classifier, rows.texts, args.cache, args.tag)])
            sets = sets + rows.label_sets
        head = weighted_head(x, hot(sets, labels), np.r_[np.ones(len(rest)), np.full(len(rows), w)])
        thresholds = label_thresholds(head.predict_proba(valid_x), valid_t)
        accepted[fold] = head.predict_proba(train_x[fold]) >= thresholds
    return score(accepted, targets)


def saved_model_parser(description: str | None) -> argparse.ArgumentParser:
    """The options of the benchmarks that work on a saved multilabel ATIS model's cached embeddings."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--model", type=Path, default=Path("/tmp/multilabel-models/atis-multilabel"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/atis-multilabel-augmentation-cache"))
    return parser


def main() -> None:
    parser = saved_model_parser(__doc__)
    parser.add_argument("--shares", default="0,0.025,0.05,0.1,0.2", help="synthetic rows per train-part row")
    parser.add_argument("--seeds", default="0,1,2", help="augmentation seeds")
    parser.add_argument("--weights", default="1", help="the synthetic rows' weights in the head's fit")
    parser.add_argument("--sources", default="all", help="all, frequent, or both (comma-separated)")
    parser.add_argument("--test", action="store_true", help="also score the test rows (for reporting only)")
    parser.add_argument("--train-folds", action="store_true", help="also score held-out train-part folds")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)

    classifier = IntentClassifier.load(args.model, backend="torch")
    parts = saved_split(classifier, str(args.model), args.data_dir)
    train_part, validation, test = parts["train"], parts["valid"], parts["test"]
    saved = classifier.info_["data"]
    tag = str(args.model.resolve()) + saved["train_checksum"]
    args.classifier, args.tag = classifier, tag
    labels = sorted({y for s in train_part.label_sets for y in s})
    train_x = cached_embed(classifier, train_part.texts, args.cache, tag)
    valid_x, valid_t = cached_embed(classifier, validation.texts, args.cache, tag), hot(validation.label_sets, labels)
    test_x, test_t = cached_embed(classifier, test.texts, args.cache, tag), hot(test.label_sets, labels)

    rows = []
    variants = [
        (share, kind, float(w), seed)
        for share in [float(s) for s in args.shares.split(",")]
        for kind in (args.sources.split(",") if share else ["-"])
        for w in (args.weights.split(",") if share else ["1"])
        for seed in ([int(s) for s in args.seeds.split(",")] if share else [0])
    ]
    for share, kind, w, seed in variants:
        rows_made = synthetic(train_part, kind, round(share * len(train_part)), seed)
        x, sets = train_x, train_part.label_sets
        if len(rows_made):
            x = np.vstack([train_x, cached_embed(classifier, rows_made.texts, args.cache, tag)])
            sets = sets + rows_made.label_sets
        weights = np.r_[np.ones(len(train_part)), np.full(len(rows_made), w)]
        head = weighted_head(x, hot(sets, labels), weights)
        valid_p = head.predict_proba(valid_x)
        thresholds = label_thresholds(valid_p, valid_t)
        row = {
            "share": share,
            "sources": kind,
            "weight": w,
            "synthetic_rows": len(rows_made),
            "seed": seed,
            "valid_in_sample": score(valid_p >= thresholds, valid_t),
            "valid_held_out": held_out(valid_p, valid_t),
            "thresholds": dict(zip(labels, np.round(thresholds, 3).tolist(), strict=True)),
        }
        if args.train_folds:
            row["train_folds"] = train_folds(train_part, train_x, valid_x, valid_t, labels, args, share, kind, w, seed)
        if args.test:
            row["test"] = score(head.predict_proba(test_x) >= thresholds, test_t)
        rows.append(row)
        cells = [f"{share:g}", kind, f"{w:g}", str(len(rows_made)), str(seed)]
        parts = ["valid_in_sample", "valid_held_out"] + ["train_folds"] * args.train_folds + ["test"] * args.test
        for part in parts:
            f = row[part]
            cells += [f"{f['right'] / f['rows']:.2%} ({f['right']})", f"{f['multi_right']}/{f['multi_rows']}"]
        print("| " + " | ".join(cells) + " |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
