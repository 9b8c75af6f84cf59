"""ATIS as a multilabel problem: a single-label model against a multilabel one, on the same data.

    python benchmarks/atis_multilabel.py                    # trains both (or reuses them), prints the table
    python benchmarks/atis_multilabel.py --retrain          # fine-tune again even if the models exist
    python benchmarks/atis_multilabel.py --json out.json
    python benchmarks/atis_multilabel.py --models atis-multilabel-no-synthetic
    python benchmarks/atis_multilabel.py --seed 1           # another seed: its own split and fine-tuning

Both train on ../shared/datasets/atis/train.csv with the defaults (automatic 20% validation split,
default steps, seed 0 unless --seed, rare labels allowed: 4 label sets have one example) and are scored on every
row of test.csv. The single-label model treats each label set (``airfare+flight``) as one class;
the multilabel model predicts each label on its own with its fitted threshold. Scored: exact-set
accuracy over all rows and over the multi-intent rows (a ``+`` label: 15), micro and macro F1 and
Hamming loss of the sets, and the validation split's exact-set accuracy. Models are saved in
--models-dir (``NAME-seedN`` for a seed other than 0) and reused. ``atis-multilabel`` has the
library's default synthetic multi-intent rows in its head's data (``--synthetic`` sets another
share), ``atis-multilabel-no-synthetic`` none.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from progress import Progress  # noqa: E402  (benchmarks/progress.py)

from intent_router import IntentClassifier, load_dataset  # noqa: E402
from intent_router.data import parse_labels  # noqa: E402
from intent_router.metrics import multilabel_metrics  # noqa: E402

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "atis"


MODELS = {  # name: (multilabel, synthetic multi-intent rows: the library's default or --synthetic)
    "atis-multilabel": (True, True),
    "atis-single-label": (False, False),
    "atis-multilabel-no-synthetic": (True, False),
}


def trained(
    name: str, multilabel: bool, args: argparse.Namespace, synthetic: float | None
) -> tuple[IntentClassifier, float | None]:
    """The model from --models-dir, or fine-tuned now (and saved) with its fit time."""
    path = args.models_dir / (name if args.seed == 0 else f"{name}-seed{args.seed}")
    if path.is_dir() and not args.retrain:
        return IntentClassifier.load(path), None
    train = load_dataset(args.data_dir / "train.csv", multilabel=multilabel)
    started = time.perf_counter()
    classifier = IntentClassifier(
        multilabel=multilabel, allow_rare_labels=True, synthetic_multi_intent=synthetic, seed=args.seed
    )
    classifier.fit(train, progress=Progress(name))
    seconds = time.perf_counter() - started
    classifier.save(path, overwrite=True)
    return classifier, seconds


def score(name: str, classifier: IntentClassifier, args: argparse.Namespace, seconds: float | None) -> dict:
    test = load_dataset(args.data_dir / "test.csv", deduplicate=False, multilabel=True)
    predicted = [parse_labels(name) for name in classifier.predict(test.texts)]
    multi = [i for i, s in enumerate(test.label_sets) if len(s) > 1]
    metrics = multilabel_metrics(test.label_sets, predicted, None, classifier.labels_ or [])
    return {
        "model": name,
        "seed": args.seed,
        "multilabel": classifier.multilabel,
        "synthetic_multi_intent": classifier.info_.get("synthetic_multi_intent"),
        "validation_exact_set_accuracy": (classifier.metrics_ or {}).get("accuracy"),
        "test_rows": len(test),
        "exact_set_accuracy": metrics["accuracy"],
        "exact_sets_right": sum(test.label_sets[i] == predicted[i] for i in range(len(test))),
        "multi_intent_rows": len(multi),
        "multi_intent_right": sum(test.label_sets[i] == predicted[i] for i in multi),
        "micro_f1": metrics["micro_f1"],
        "macro_f1": metrics["macro_f1"],
        "hamming_loss": metrics["hamming_loss"],
        "empty_sets_predicted": metrics["empty_sets"]["predicted"],
        "fit_seconds": None if seconds is None else round(seconds, 1),
        "multi_intent_predictions": [
            {"text": test.texts[i], "true": sorted(test.label_sets[i]), "predicted": sorted(predicted[i])}
            for i in multi
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--models-dir", type=Path, default=Path("/tmp/multilabel-models"))
    parser.add_argument("--retrain", action="store_true", help="fine-tune even if the models are saved")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--models", default="atis-multilabel,atis-single-label", help=f"of {', '.join(MODELS)}")
    parser.add_argument("--seed", type=int, default=0, help="the models' seed (validation split, fine-tuning)")
    parser.add_argument("--synthetic", type=float, help="atis-multilabel's share (default: the library's)")
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        multilabel, synthetic = MODELS[name]
        share = (args.synthetic if synthetic else 0.0) if multilabel else None  # None: the library's default
        classifier, seconds = trained(name, multilabel, args, share)
        rows.append(score(name, classifier, args, seconds))
        print(json.dumps(rows[-1], indent=1), flush=True)
    print()
    print(
        "| model | validation exact sets | exact-set accuracy | multi-intent right | micro F1 | macro F1 "
        "| Hamming loss | empty sets | fit |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        fit = "reused" if r["fit_seconds"] is None else f"{r['fit_seconds']:.0f} s"
        validation = f"{r['validation_exact_set_accuracy']:.2%}"
        print(
            f"| {r['model']} | {validation} | {r['exact_set_accuracy']:.2%} "
            f"({r['exact_sets_right']}/{r['test_rows']}) "
            f"| {r['multi_intent_right']}/{r['multi_intent_rows']} | {r['micro_f1']:.4f} | {r['macro_f1']:.3f} "
            f"| {r['hamming_loss']:.4f} | {r['empty_sets_predicted']} | {fit} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
