"""ATIS benchmark: fine-tuned vs frozen body (same head), accuracy, macro F1 and fine-tune time.

    python examples/atis/benchmark.py                      # all three scenarios
    python examples/atis/benchmark.py --only 3-intent      # one of them
    python examples/atis/benchmark.py --json results.json  # keep the figures

Scenarios (data from ../shared/datasets/atis, or --data-dir):
  3-intent   atis_3class.csv, automatic 20% validation split, scored on that split
  full       train.csv -> test.csv (all 893 rows; exact label-set accuracy)
  8-per-intent  8 examples of each intent drawn from train.csv (seed 0) -> test.csv; validation metrics on
             another 8 per intent drawn from the rest of train.csv, so all 8 train
  8-per-intent-split  the same 8 per intent with the automatic 20% split (what a user gets by default)
Each trains twice: fine-tuned (default settings) and frozen (steps=0), the same head on top.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from intent_router import IntentClassifier, load_dataset  # noqa: E402
from intent_router.data import Dataset  # noqa: E402

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "atis"


def per_label_sample(data: Dataset, per_label: int, seed: int = 0, exclude: set[str] = frozenset()) -> Dataset:
    """Up to ``per_label`` examples of each label, skipping texts in ``exclude``."""
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for label in sorted(set(data.labels)):
        rows = [i for i, e in enumerate(data.examples) if e.label == label and e.text not in exclude]
        keep += rng.choice(rows, min(per_label, len(rows)), replace=False).tolist()
    return data.subset(sorted(keep), f"{data.source} ({per_label} per intent)")


def scenarios(data_dir: Path) -> dict[str, tuple[Dataset, Dataset | None, Dataset | None]]:
    """name -> (train, validation or None for the automatic split, test or None to score validation)"""
    train = load_dataset(data_dir / "train.csv")
    test = load_dataset(data_dir / "test.csv", deduplicate=False)
    few = per_label_sample(train, 8)
    few_validation = per_label_sample(train, 8, seed=1, exclude=set(few.texts))
    return {
        "3-intent": (load_dataset(data_dir / "atis_3class.csv"), None, None),
        "full": (train, None, test),
        "8-per-intent": (few, few_validation, test),
        "8-per-intent-split": (few, None, test),
    }


def run(name: str, train: Dataset, validation: Dataset | None, test: Dataset | None, steps: int | None) -> dict:
    started = time.perf_counter()
    classifier = IntentClassifier(steps=steps, allow_rare_labels=True).fit(train, validation)
    seconds = time.perf_counter() - started
    metrics = classifier.evaluate(test) if test is not None else classifier.metrics_
    return {
        "scenario": name,
        "body": "frozen" if steps == 0 else "fine-tuned",
        "train_examples": classifier.info_["data"]["train_examples"],
        "scored_on": "ATIS test" if test is not None else "validation split",
        "scored_examples": metrics["examples"],
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "steps": classifier.info_["fine_tuning"]["steps"],
        "fit_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--only", choices=["3-intent", "full", "8-per-intent", "8-per-intent-split"], action="append")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()

    rows = []
    for name, (train, validation, test) in scenarios(args.data_dir).items():
        if args.only and name not in args.only:
            continue
        for steps in (None, 0):
            rows.append(run(name, train, validation, test, steps))
            print(_format(rows[-1]), flush=True)
    print()
    print("| scenario | body | trained on | scored on | accuracy | macro F1 | steps | fit time |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['scenario']} | {r['body']} | {r['train_examples']} | {r['scored_on']} ({r['scored_examples']}) "
            f"| {r['accuracy']:.2%} | {r['macro_f1']:.3f} | {r['steps']} | {r['fit_seconds']:.0f} s |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def _format(row: dict) -> str:
    return (
        f"{row['scenario']:>13} {row['body']:>10}: accuracy {row['accuracy']:.4f}  macro F1 {row['macro_f1']:.3f}"
        f"  fit {row['fit_seconds']:.0f} s ({row['steps']} steps)"
    )


if __name__ == "__main__":
    main()
