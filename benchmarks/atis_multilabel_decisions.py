"""How a multilabel model turns its probabilities into a set, measured on saved ATIS fits.

    python benchmarks/atis_multilabel_decisions.py --models-dir /tmp/ml9 --test

For each saved multilabel model of ``atis_multilabel.py`` (``atis-multilabel`` and
``atis-multilabel-no-synthetic``, seeds 0 to 2 when saved), rebuilds its validation split (checked
by checksum) and scores three decisions with the library's own ``predicted_sets``:

- ``thresholds``: every label at or above its fitted threshold (the empty set allowed);
- ``+ no empty set``: a text with no label there gets its most probable one (``predicts_empty_set_``
  false: ATIS has no row without a label);
- ``+ trained-on sets``: then a set the head was not trained on is cut to its subset that it was
  (``combinations_``: the train part's sets and any two of the labels its synthetic rows paired)
  whose labels stand furthest above their thresholds; the library's decision.

Columns: validation in sample (thresholds fitted and scored on all its rows), validation held out
(thresholds fitted on four fifths, scored on the fifth; 5 folds), and with --test the 893 test rows
(for reporting: choose from the validation columns). Each cell: sets right (multi-intent rows right).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from intent_router import IntentClassifier, load_dataset, train_validation_split  # noqa: E402
from intent_router.metrics import label_thresholds  # noqa: E402

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "atis"
MODELS = ("atis-multilabel", "atis-multilabel-no-synthetic")


def decisions(model: IntentClassifier) -> dict:
    """Each decision's settings of the model: (predicts_empty_set_, combinations_)."""
    return {
        "thresholds": (True, None),
        "+ no empty set": (False, None),
        "+ trained-on sets": (False, model.combinations_),
    }


def right(model: IntentClassifier, probabilities: np.ndarray, sets: list) -> tuple[int, int]:
    predicted = model.predicted_sets(probabilities)
    multi = [i for i, s in enumerate(sets) if len(s) > 1]
    return sum(p == s for p, s in zip(predicted, sets, strict=True)), sum(predicted[i] == sets[i] for i in multi)


def held_out(model: IntentClassifier, probabilities: np.ndarray, sets: list, targets: np.ndarray) -> tuple[int, int]:
    order = np.random.default_rng(0).permutation(len(sets))
    fitted = model.thresholds_
    total = np.zeros(2, dtype=int)
    for fold in np.array_split(order, 5):
        rest = np.setdiff1d(order, fold)
        model.thresholds_ = label_thresholds(probabilities[rest], targets[rest])
        total += right(model, probabilities[fold], [sets[i] for i in fold])
    model.thresholds_ = fitted
    return int(total[0]), int(total[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--models-dir", type=Path, default=Path("/tmp/multilabel-models"))
    parser.add_argument("--test", action="store_true", help="also score the test rows (for reporting only)")
    args = parser.parse_args()
    train = load_dataset(args.data_dir / "train.csv", multilabel=True)
    test = load_dataset(args.data_dir / "test.csv", deduplicate=False, multilabel=True)
    print("| model | seed | decision | validation in sample | validation held out |" + (" test |" if args.test else ""))
    print("|---|---|---|---|---|" + ("---|" if args.test else ""))
    for name in MODELS:
        for seed in (0, 1, 2):
            path = args.models_dir / (name if seed == 0 else f"{name}-seed{seed}")
            if not path.is_dir():
                continue
            model = IntentClassifier.load(path)
            if model.combinations_ is None:
                raise SystemExit(f"{path}: fitted before label_combinations; fit it again with atis_multilabel.py")
            _, validation = train_validation_split(train, 0.2, seed)
            if validation.checksum() != model.info_["data"]["validation_checksum"]:
                raise SystemExit(f"{path}: the rebuilt validation split is not the one it was fitted with")
            labels = model.labels_ or []
            targets = np.array([[y in s for y in labels] for s in validation.label_sets])
            valid_p = model.predict_proba(validation.texts)
            test_p = model.predict_proba(test.texts) if args.test else None
            for decision, (empty_set, combinations) in decisions(model).items():
                model.predicts_empty_set_, model.combinations_ = empty_set, combinations
                sets = validation.label_sets
                cells = [right(model, valid_p, sets), held_out(model, valid_p, sets, targets)]
                if test_p is not None:
                    cells.append(right(model, test_p, test.label_sets))
                row = " | ".join(f"{n} ({m})" for n, m in cells)
                print(f"| {name} | {seed} | {decision} | {row} |", flush=True)


if __name__ == "__main__":
    main()
