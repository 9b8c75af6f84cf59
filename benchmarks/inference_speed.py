"""In-process inference speed of every backend of one model, measured side by side in one run.

    python benchmarks/inference_speed.py --model models/atis            # all backends, 2 threads
    python benchmarks/inference_speed.py --model models/atis --json speed.json --backends torch cascade

The model must have its backends: training builds the ONNX ones; the cascade needs `intent-router
optimize NAME --data TRAIN.csv --cascade` (or leave it out with `--backends torch onnx onnx-int8`).
Each backend runs in a fresh child process, one after another, so its peak memory is its own; each
child:
  loads the model with that backend and the test set (ATIS test: 893 rows, duplicates kept);
  classifies the whole set once to warm up;
  throughput: predict_proba over the set in batches of 1, 16 and 96 (texts/s; each backend sorts a
  batch by length and pads its sub-batches to their longest text: torch in 64s, ONNX in 16s);
  latency: each batch-1 call timed alone, p50 and p99 in ms;
  accuracy: exact label-set accuracy of the batch-96 pass; the cascade also reports the share of
  texts it handed to the transformer;
  peak memory: the child's peak resident set size (ru_maxrss), model loaded and run.
Size on disk counts the files that backend reads (the head is a few kB and left out). Ratios are to
torch fp32 in the same run. The machine's load average is printed before and after: on a shared
machine the throughput figures move with it, the ratios less.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_TEXTS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "atis" / "test.csv"
BACKENDS = ["torch", "onnx", "onnx-int8", "cascade"]
BATCH_SIZES = [1, 16, 96]


def measure(model: Path, backend: str, texts_file: Path, threads: int) -> dict:
    """Run in the child process: every figure of one backend."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from intent_router import IntentClassifier, load_dataset
    from intent_router.backends import ONNX_FILES
    from intent_router.model import STUDENT_FILE

    started = time.perf_counter()
    classifier = IntentClassifier.load(model, backend=backend)
    load_seconds = time.perf_counter() - started
    test = load_dataset(texts_file, deduplicate=False)
    texts = test.texts
    classifier.predict_proba(texts)  # warm-up: first-call allocations, lazy initialisation
    if classifier.cascade_ is not None:
        classifier.cascade_.handed_over = classifier.cascade_.answered = 0
    figures: dict = {"backend": backend, "load_seconds": round(load_seconds, 2)}
    for batch_size in BATCH_SIZES:
        times = []
        predictions = []
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            began = time.perf_counter()
            probabilities = classifier.predict_proba(batch)
            times.append(time.perf_counter() - began)
            predictions += probabilities.argmax(axis=1).tolist()
        figures[f"texts_per_second_{batch_size}"] = round(len(texts) / sum(times), 1)
        if batch_size == 1:
            figures["p50_ms"] = round(float(np.percentile(times, 50)) * 1000, 2)
            figures["p99_ms"] = round(float(np.percentile(times, 99)) * 1000, 2)
        if batch_size == 96:
            labels = classifier.labels_ or []
            correct = [labels[p] == y for p, y in zip(predictions, test.labels, strict=True)]
            figures["accuracy"] = float(np.mean(correct))
    if classifier.cascade_ is not None:
        cascade = classifier.cascade_
        figures["handed_over"] = round(cascade.handed_over / max(cascade.answered, 1), 4)
        figures["cascade_transformer"] = classifier.info_["inference"]["cascade"]["transformer"]
    files = {"torch": ["model.safetensors"], "onnx": [ONNX_FILES["onnx"]], "onnx-int8": [ONNX_FILES["onnx-int8"]]}
    files["cascade"] = [STUDENT_FILE] + files[figures.get("cascade_transformer", "torch")]
    figures["disk_mb"] = round(sum((model / f).stat().st_size for f in files[backend]) / 1e6, 1)
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0)
    return figures


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def table(rows: list[dict]) -> str:
    reference = next((r for r in rows if r["backend"] == "torch"), None)
    header = (
        "| backend | texts/s b=1 | b=16 | b=96 | x torch (b=96) | p50 ms | p99 ms | x torch (p50) "
        "| peak RSS MB | disk MB | ATIS accuracy | vs torch (pt) | handed over |"
    )
    lines = [header, "|" + "---|" * 13]
    for r in rows:
        speedup = r["texts_per_second_96"] / reference["texts_per_second_96"] if reference else float("nan")
        latency = reference["p50_ms"] / r["p50_ms"] if reference else float("nan")
        delta = (r["accuracy"] - reference["accuracy"]) * 100 if reference else float("nan")
        handed = f"{r['handed_over']:.1%} to {r['cascade_transformer']}" if "handed_over" in r else ""
        lines.append(
            f"| {r['backend']} | {r['texts_per_second_1']:,.0f} | {r['texts_per_second_16']:,.0f} "
            f"| {r['texts_per_second_96']:,.0f} | {speedup:.2f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
            f"| {latency:.2f} | {r['peak_rss_mb']:,.0f} | {r['disk_mb']:.1f} | {r['accuracy']:.2%} "
            f"| {delta:+.2f} | {handed} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a model folder with its backends")
    parser.add_argument("--texts", type=Path, default=DEFAULT_TEXTS, help="labelled test data (default: ATIS test)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=BACKENDS)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one backend, in a child process
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.model, args.child, args.texts, args.threads)))
        return

    print(f"load average before: {load_average()} (1, 5, 15 min); {os.cpu_count()} CPUs; {args.threads} threads")
    rows = []
    for backend in args.backends:
        command = [sys.executable, __file__, "--model", str(args.model), "--texts", str(args.texts)]
        command += ["--threads", str(args.threads), "--child", backend]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{backend}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  {backend}: done (load average {load_average()})", file=sys.stderr)
    print(f"load average after: {load_average()}")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
