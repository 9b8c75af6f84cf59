"""Cross-lingual ATIS: train in one language, test in English, German and Spanish (MultiATIS++).

    python benchmarks/multiatis.py --base-model multilingual-small --train en     # EN -> EN, DE, ES
    python benchmarks/multiatis.py --base-model multilingual-small --train de     # DE -> EN, DE, ES
    python benchmarks/multiatis.py --base-model english-small --train en --steps 0   # frozen body, head only
    python benchmarks/multiatis.py ... --models /tmp/multilingual-models          # save, and reuse if saved
    python benchmarks/multiatis.py --model models/atis-full                        # test a model trained elsewhere

Training data: ``atis/train.csv`` (en) or ``multiatis/train_de.csv`` / ``train_es.csv``, validated on
the usual automatic 20% split. Test sets: ``atis/test.csv`` and ``multiatis/test_de.csv``,
``test_es.csv`` (893 rows each, duplicates kept). The figure is accuracy of the exact label set
(``flight+airfare`` must be predicted as that class), as ``intent-router evaluate`` reports it.
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

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
TRAIN = {"en": "atis/train.csv", "de": "multiatis/train_de.csv", "es": "multiatis/train_es.csv"}
TEST = {"en": "atis/test.csv", "de": "multiatis/test_de.csv", "es": "multiatis/test_es.csv"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default="multilingual-small")
    parser.add_argument("--train", choices=sorted(TRAIN), default="en", help="language of the training set")
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps (default: the library's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clean-text", action="store_true")
    parser.add_argument("--models", type=Path, default=None, help="folder to save fitted models in and reuse")
    parser.add_argument("--model", type=Path, default=None, help="only test this saved model folder")
    args = parser.parse_args()

    name = f"{args.base_model}-{args.train}-steps{args.steps}-seed{args.seed}{'-clean' if args.clean_text else ''}"
    folder = args.model or (args.models / name if args.models else None)
    if args.model and not args.model.is_dir():
        parser.error(f"--model {args.model}: no such model folder")
    started = time.perf_counter()
    if folder is not None and folder.exists():
        classifier = IntentClassifier.load(folder)
        fit_seconds = classifier.info_["fit_seconds"]
        print(f"reusing {folder}")
    else:
        classifier = IntentClassifier(
            args.base_model,
            steps=args.steps,
            seed=args.seed,
            allow_rare_labels=True,  # four ATIS label sets have one training example
            clean_text=args.clean_text,
        ).fit(load_dataset(DATA / TRAIN[args.train]), progress=Progress(args.train))
        fit_seconds = round(time.perf_counter() - started, 1)
        if folder is not None:
            classifier.save(folder)
    tuning = classifier.info_["fine_tuning"]
    train_source = Path(classifier.info_["data"]["train_source"]).name
    results = {
        "model": str(folder) if folder else None,
        "base_model": classifier.info_["base_model"],
        "train_source": train_source,
        "steps": tuning["steps"],
        "seed": tuning["seed"],
        "clean_text": classifier.clean_text,
        "fit_seconds": fit_seconds,
        "validation_accuracy": round(classifier.metrics_["accuracy"], 4) if classifier.metrics_ else None,
    }
    for language, relative in TEST.items():
        started = time.perf_counter()
        metrics = classifier.evaluate(load_dataset(DATA / relative, deduplicate=False))
        results[f"test_{language}"] = round(metrics["accuracy"], 4)
        results[f"test_{language}_macro_f1"] = round(metrics["macro_f1"], 4)
        results[f"test_{language}_seconds"] = round(time.perf_counter() - started, 1)
    print(f"{results['base_model']}, trained on {train_source} ({tuning['steps']} steps, {fit_seconds} s to fit):")
    for language in TEST:
        print(f"  test {language.upper()}: accuracy {results[f'test_{language}']:.2%}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
