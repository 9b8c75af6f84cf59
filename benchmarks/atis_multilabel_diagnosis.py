"""Why the multilabel ATIS targets are missed: decision rule, body and head, compared on validation.

    python benchmarks/atis_multilabel_diagnosis.py            # validation figures only
    python benchmarks/atis_multilabel_diagnosis.py --test     # and the test figures beside them

Reuses the two models of ``atis_multilabel.py`` (--models-dir), rebuilds the train part and the
validation split each was fitted with (automatic 20%, seed 0; checked by checksum), embeds them and
the 893 test rows with each saved body, and fits heads on the train part's embeddings:

- heads: the library's one-vs-rest sigmoid head (class-weighted, C = 10) and variants (C = 1 and
  100, no class weights, each row weighted by 1 / its label set's frequency), and a softmax over the
  label sets seen in training (the single-label head: it cannot answer an unseen combination);
- rules for the sigmoid heads: per-label F1 thresholds (the first release), 0.5, the library's
  exact-set thresholds (``label_thresholds``), and "the top label is always in the set" on top of them.

Choose from the validation columns; the test ones are for reporting.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from intent_router import IntentClassifier, load_dataset  # noqa: E402
from intent_router.data import parse_labels, train_validation_split  # noqa: E402
from intent_router.head import LinearHead, SigmoidHead  # noqa: E402
from intent_router.metrics import f1_thresholds, label_thresholds  # noqa: E402

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "atis"
SIGMOID_HEADS = {  # name: (C, class_weight, weight rows by 1 / label-set frequency)
    "sigmoid C=10 balanced (library)": (10.0, "balanced", False),
    "sigmoid C=1 balanced": (1.0, "balanced", False),
    "sigmoid C=100 balanced": (100.0, "balanced", False),
    "sigmoid C=10 unweighted": (10.0, None, False),
    "sigmoid C=10 set-weighted": (10.0, None, True),
}


def saved_split(classifier: IntentClassifier, name: str, data_dir: Path) -> dict:
    """A saved ATIS model's train part and validation split, rebuilt and checked by checksum, and the test rows."""
    train = load_dataset(data_dir / "train.csv", multilabel=True)
    train_part, validation = train_validation_split(train, 0.2, 0)
    saved = classifier.info_["data"]
    if (train_part.checksum(), validation.checksum()) != (saved["train_checksum"], saved["validation_checksum"]):
        raise SystemExit(f"{name}: the rebuilt split is not the one it was fitted with (checksums differ)")
    test = load_dataset(data_dir / "test.csv", deduplicate=False, multilabel=True)
    return {"train": train_part, "valid": validation, "test": test}


def embedded(name: str, args: argparse.Namespace) -> dict:
    """The train part, validation split and test rows of a saved model, embedded by its body."""
    classifier = IntentClassifier.load(args.models_dir / name, backend="torch")
    parts = saved_split(classifier, name, args.data_dir)
    return {part: (classifier.embed(data.texts), data.label_sets, data.labels) for part, data in parts.items()}


def sigmoid_head(vectors: np.ndarray, targets: np.ndarray, set_names: list[str], setting: tuple) -> SigmoidHead:
    regularization, class_weight, set_weighted = setting
    if class_weight == "balanced" and not set_weighted:
        return SigmoidHead.fit(vectors, targets, targets.shape[1], regularization)
    frequency = Counter(set_names)
    rows = np.array([1.0 / frequency[name] for name in set_names]) if set_weighted else np.ones(len(set_names))
    weight, bias = np.zeros((targets.shape[1], vectors.shape[1])), np.zeros(targets.shape[1])
    for k in range(targets.shape[1]):
        if targets[:, k].all() or not targets[:, k].any():
            bias[k] = 30.0 if targets[:, k].all() else -30.0
            continue
        model = LogisticRegression(C=regularization, class_weight=class_weight, max_iter=5000)
        model.fit(vectors, targets[:, k], sample_weight=rows * len(rows) / rows.sum())
        weight[k], bias[k] = model.coef_[0], model.intercept_[0]
    return SigmoidHead(weight, bias)


def with_top_label(accepted: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    accepted = accepted.copy()
    accepted[np.arange(len(accepted)), probabilities.argmax(axis=1)] = True
    return accepted


def rows_for(body: str, parts: dict, show_test: bool) -> list[dict]:
    (train_x, train_sets, train_names), (valid_x, valid_sets, _), (test_x, test_sets, _) = parts.values()
    labels = sorted({label for s in train_sets for label in s})
    hot = {
        part: np.array([[y in s for y in labels] for s in sets])
        for part, sets in (("train", train_sets), ("valid", valid_sets), ("test", test_sets))
    }
    predictions: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for head_name, setting in SIGMOID_HEADS.items():
        head = sigmoid_head(train_x, hot["train"], train_names, setting)
        valid_p, test_p = head.predict_proba(valid_x), head.predict_proba(test_x)
        for rule, thresholds in (
            ("F1 thresholds", f1_thresholds(valid_p, hot["valid"])),
            ("0.5", np.full(len(labels), 0.5)),
            ("exact-set thresholds (library)", label_thresholds(valid_p, hot["valid"])),
        ):
            predictions[head_name, rule] = (valid_p >= thresholds, test_p >= thresholds)
        predictions[head_name, "top label + exact-set thresholds"] = tuple(
            with_top_label(p >= label_thresholds(valid_p, hot["valid"]), p) for p in (valid_p, test_p)
        )
    classes = sorted(set(train_names))
    softmax = LinearHead.fit(train_x, np.array([classes.index(n) for n in train_names]), len(classes))
    predictions["softmax over seen label sets", "most probable set"] = tuple(
        np.array([[y in parse_labels(classes[i]) for y in labels] for i in softmax.predict_proba(x).argmax(axis=1)])
        for x in (valid_x, test_x)
    )
    rows = []
    for (head_name, rule), (valid_a, test_a) in predictions.items():
        row = {"body": body, "head": head_name, "rule": rule}
        scored = {"valid": valid_a, "test": test_a} if show_test else {"valid": valid_a}
        for part, accepted in scored.items():
            right = (accepted == hot[part]).all(axis=1)
            multi = hot[part].sum(axis=1) > 1
            row[part] = {
                "right": int(right.sum()),
                "rows": len(right),
                "multi_right": int(right[multi].sum()),
                "multi_rows": int(multi.sum()),
            }
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--models-dir", type=Path, default=Path("/tmp/multilabel-models"))
    parser.add_argument("--test", action="store_true", help="also score the test rows (for reporting only)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    for body in ("atis-multilabel", "atis-single-label"):
        rows += rows_for(body, embedded(body, args), args.test)
    print(
        "| body | head | rule | validation exact sets | validation multi-intent |"
        + (" test | test multi |" * args.test)
    )
    print("|---|---|---|---|---|" + "---|---|" * args.test)
    for r in rows:
        cells = [r["body"], r["head"], r["rule"]]
        for part in ("valid", "test") if args.test else ("valid",):
            f = r[part]
            cells += [
                f"{f['right'] / f['rows']:.2%} ({f['right']}/{f['rows']})",
                f"{f['multi_right']}/{f['multi_rows']}",
            ]
        print("| " + " | ".join(cells) + " |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
