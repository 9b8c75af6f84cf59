"""New-intent discovery benchmark on HWU64: a week of traffic with a quarter of the intents unknown.

    python benchmarks/discovery_hwu64.py                        # 3 seeds, fine-tuned encoder
    python benchmarks/discovery_hwu64.py --seeds 0 --models /tmp/hwu64-models   # reuse fitted models
    python benchmarks/discovery_hwu64.py --models DIR --neighbours --umap-seeds 4  # mean over 4 UMAP seeds

Per seed: 16 of the 64 intents (a seeded choice) are held out; a model is fine-tuned on the train
split of the other 48 (validated on their valid split, which fits its default threshold). The
traffic is the whole test split plus the train-split utterances of the held-out intents, never
seen by the model. Everything the router would not pass is the pool: below the model's default
confidence threshold, or further from every intent centroid than its default similarity threshold
(``--similarity-percentile`` refits that on validation). With ``--review``, the pool also holds
what a router with ``review`` on keeps while routing it: passed, but further from every intent
centroid than the model's review threshold (the 15th percentile of validation). With
``--neighbours``, it holds what a router with ``review_neighbours`` keeps: the week played in a seeded
order through ``RecentTraffic``, a routed utterance kept when one of its 20 nearest (the model's
training utterances, the last 1,000 of the week) fell back. Discovery with its defaults (the model's
base model frozen, UMAP 5-d cosine, HDBSCAN, the smallest cluster and UMAP's neighbours set from the
pool's size) runs on the pool.

Reports: capture (share of held-out-intent traffic that reaches the pool; also by the confidence
rule alone, and at the issue's baseline rule, a threshold at the 10th percentile of validation
confidence), the share of known-intent traffic that falls back too (the cost), the share of it that
reaches the pool (the same, unless ``--review``), NMI and ARI of the
clusters against the true intents (over clustered points, and with noise as one group), the noise
share, the share of held-out intents recovered as a cluster of their own (>= 60% of a cluster of
>= 3 members from that intent), the accuracy of the new-intent / coverage-gap call (a cluster whose
majority intent is held out should be "new_intent", otherwise "coverage_gap"), and wall times.
Then it times discovery alone on 10,000 distinct HWU64 utterances (train + test).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from clustering import NEW_INTENT, Discovery, utterances_from_texts  # noqa: E402
from clustering.frozen import frozen_encoder  # noqa: E402
from intent_router import Dataset, IntentClassifier, load_dataset  # noqa: E402
from intent_router.model import REVIEW_PERCENTILE, SIMILARITY_PERCENTILE, fit_similarity_threshold  # noqa: E402
from intent_router.neighbourhood import RecentTraffic  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "hwu64"
HELD_OUT_SHARE = 0.25
PURITY, MIN_MEMBERS = 0.6, 3

COLUMNS = [
    ("capture", "capture"),
    ("known_fallback", "known traffic falling back"),
    ("known_pooled", "known traffic in the pool"),
    ("capture_confidence", "capture, confidence alone"),
    ("capture_p10", "capture at p10"),
    ("pool", "pool"),
    ("clusters", "clusters"),
    ("nmi", "NMI"),
    ("ari", "ARI"),
    ("nmi_noise", "NMI (noise a group)"),
    ("ari_noise", "ARI (noise a group)"),
    ("noise", "noise"),
    ("recovered", "held-out recovered"),
    ("kind_accuracy", "new/gap accuracy"),
    ("fit_s", "fit s"),
    ("discover_s", "discovery s"),
]


def only(dataset: Dataset, intents: set[str], keep: bool) -> Dataset:
    return dataset.subset([i for i, y in enumerate(dataset.labels) if (y in intents) == keep])


def model_for(seed: int, train: Dataset, valid: Dataset, models: Path, steps: int | None, margin: float | None):
    """The seed's model as the router and ``intent-router discover`` load it: from its folder, on its
    default inference backend (fitted now, and saved, unless the folder exists)."""
    path = models / f"hwu64-seed{seed}"
    seconds = 0.0
    if not path.is_dir():
        started = time.perf_counter()
        model = IntentClassifier(seed=seed, steps=steps, margin=margin).fit(train, valid)
        seconds = time.perf_counter() - started
        model.save(path)
    return IntentClassifier.load(path), seconds


def build_pool(
    seed: int,
    train: Dataset,
    valid: Dataset,
    test: Dataset,
    models: Path,
    steps: int | None,
    margin: float | None,
    similarity_percentile: float | None,
    review: bool = False,
    neighbours: bool = False,
) -> dict:
    """The seed's model, its pool (what the router would not pass) and each text's true intent."""
    intents = sorted(set(train.labels))
    rng = np.random.default_rng(seed)
    held_out = set(rng.choice(intents, round(HELD_OUT_SHARE * len(intents)), replace=False).tolist())
    known_valid = only(valid, held_out, keep=False)
    model, fit_seconds = model_for(seed, only(train, held_out, keep=False), known_valid, models, steps, margin)
    # For comparison with the frozen baseline: the 10th percentile of validation confidence.
    p10 = float(np.percentile(model.predict_proba(known_valid.texts).max(axis=1), 10))
    traffic = test.texts + only(train, held_out, keep=True).texts
    truth = test.labels + only(train, held_out, keep=True).labels
    threshold = model.info_["default_threshold"]["value"]
    head = model.head_
    similarity_threshold = model.info_.get("default_similarity_threshold", {}).get("value")
    if similarity_threshold is None or similarity_percentile is not None:  # a model fitted before the rule
        percentile = SIMILARITY_PERCENTILE if similarity_percentile is None else similarity_percentile
        similarity_threshold = fit_similarity_threshold(head, model.embed(known_valid.texts), percentile)["value"]
    vectors = model.embed(traffic)
    confidence = head.predict_proba(vectors).max(axis=1)
    similarity = head.centroid_similarity(vectors)
    unsure = confidence < threshold
    fallback = unsure | (similarity < similarity_threshold)
    low = fallback.copy()
    if review:  # a model fitted before the review threshold existed gets it fitted here, the same way
        fitted = model.info_.get("default_review_similarity_threshold", {}).get("value")
        if not fitted:
            fitted = fit_similarity_threshold(head, model.embed(known_valid.texts), REVIEW_PERCENTILE)["value"]
        low |= similarity < fitted
    if neighbours:  # a router with review_neighbours: the week played in a seeded order
        if head.anchors is None:  # a model fitted before heads kept them: what fit keeps
            head.keep_anchors(model.embed(only(train, held_out, keep=False).texts), seed)
        recent = RecentTraffic(head.anchors)
        for i in np.random.default_rng(100 + seed).permutation(len(traffic)):
            if not fallback[i] and recent.near_a_fallback(vectors[i]):
                low[i] = True
            reason = "low_confidence" if unsure[i] else "far_from_intents" if fallback[i] else "confident"
            recent.add(vectors[i], reason)
    unseen = np.array([y in held_out for y in truth])
    pool = utterances_from_texts([t for t, is_low in zip(traffic, low, strict=True) if is_low], "hwu64 week")
    return {
        "seed": seed,
        "model": model,
        "pool": pool,
        "intent_of": dict(zip(traffic, truth, strict=True)),
        "held_out": held_out,
        "threshold": threshold,
        "similarity_threshold": similarity_threshold,
        "capture": float(low[unseen].mean()),
        "known_fallback": float(fallback[~unseen].mean()),
        "known_pooled": float(low[~unseen].mean()),
        "capture_confidence": float(unsure[unseen].mean()),
        "capture_p10": float((confidence < p10)[unseen].mean()),
        "fit_s": fit_seconds,
    }


def cluster_scores(true: np.ndarray, found: np.ndarray, counts: list[int], held_out: set[str]) -> dict:
    """How well the assignments ``found`` (-1 noise) of the distinct pool texts match their ``true``
    intents; ``counts`` is how often each text occurred."""
    clustered = found >= 0
    recovered = 0
    for intent in held_out:
        for cluster in np.unique(found[clustered]):
            members = Counter(true[found == cluster].tolist())
            size = sum(members.values())
            if size >= MIN_MEMBERS and members[intent] >= PURITY * size:
                recovered += 1
                break
    weights = np.asarray(counts)
    return {
        "clusters": len(np.unique(found[clustered])),
        "nmi": normalized_mutual_info_score(true[clustered], found[clustered]),
        "ari": adjusted_rand_score(true[clustered], found[clustered]),
        "nmi_noise": normalized_mutual_info_score(true, found),
        "ari_noise": adjusted_rand_score(true, found),
        "noise": float(weights[~clustered].sum() / weights.sum()),
        "recovered": recovered / len(held_out),
    }


def run_seed(row: dict, umap_seeds: int = 1, encoder: str | None = None) -> dict:
    """Discovery on a seed's pool (``build_pool``), scored; with ``umap_seeds`` above 1, the mean
    over that many discovery seeds (the seed, then seed + 1000, + 2000, ...). ``encoder`` names a
    base model to cluster with instead of the model's own (a bundled name or a folder)."""
    model, pool, held_out = row.pop("model"), row.pop("pool"), row.pop("held_out")
    intent_of = row.pop("intent_of")
    encode = frozen_encoder(encoder) if encoder else None
    runs = []
    for k in range(umap_seeds):
        started = time.perf_counter()
        result = Discovery(model, encoder=encode, seed=row["seed"] + 1000 * k).fit(pool)
        discover_seconds = time.perf_counter() - started
        true = np.array([intent_of[t] for t in result.texts])
        right = 0
        for cluster in result.clusters:
            majority = Counter(true[cluster.members].tolist()).most_common(1)[0][0]
            right += (majority in held_out) == (cluster.kind == NEW_INTENT)
        runs.append(
            {
                **cluster_scores(true, result.assignments, result.counts, held_out),
                "kind_accuracy": right / max(len(result.clusters), 1),
                "discover_s": discover_seconds,
            }
        )
    means = {key: statistics.mean(run[key] for run in runs) for key in runs[0]}
    return {**row, "pool": pool.total, **means, "model": model}


def time_ten_thousand(model: IntentClassifier, train: Dataset, test: Dataset) -> dict:
    texts = list(dict.fromkeys(train.texts + test.texts))[:10_000]
    started = time.perf_counter()
    result = Discovery(model).fit(texts)
    return {"utterances": len(texts), "seconds": time.perf_counter() - started, "steps": result.seconds}


def print_table(rows: list[dict]) -> None:
    header = ["seed", "threshold", "similarity threshold"] + [title for _, title in COLUMNS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [str(row["seed"]), f"{row['threshold']:.3f}", f"{row['similarity_threshold']:.3f}"]
        cells += [_cell(key, row[key]) for key, _ in COLUMNS]
        print("| " + " | ".join(cells) + " |")
    if len(rows) > 1:
        thresholds = ("threshold", "similarity_threshold")
        mean = ["mean"] + [f"{statistics.mean(r[key] for r in rows):.3f}" for key in thresholds]
        mean += [_cell(key, statistics.mean(r[key] for r in rows)) for key, _ in COLUMNS]
        print("| " + " | ".join(mean) + " |")


def _cell(key: str, value: float) -> str:
    if key in ("pool", "clusters"):
        return f"{value:.0f}"
    if key.endswith("_s"):
        return f"{value:.0f}"
    return f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps (default: scaled, at most 400)")
    parser.add_argument("--margin", type=float, default=None, help="fine-tuning's triplet margin (default: 0.5)")
    parser.add_argument(
        "--models", type=Path, default=None, help="save fitted models here and reuse them (default: a temporary folder)"
    )
    parser.add_argument(
        "--similarity-percentile",
        type=float,
        default=None,
        help=f"refit the similarity threshold at this validation percentile (default: {SIMILARITY_PERCENTILE})",
    )
    parser.add_argument(
        "--review",
        action="store_true",
        help=f"add routed utterances below the review threshold (p{REVIEW_PERCENTILE:.0f} of validation)",
    )
    parser.add_argument(
        "--neighbours",
        action="store_true",
        help="add what a router with review_neighbours keeps: routed utterances one of whose 20 nearest "
        "(training utterances and the last 1,000 of traffic) fell back",
    )
    parser.add_argument(
        "--umap-seeds", type=int, default=1, help="discovery seeds per pool; scores are their mean (default: 1)"
    )
    parser.add_argument(
        "--encoder", default=None, help="cluster with this frozen base model (a bundled name or a folder) instead"
    )
    parser.add_argument("--no-timing", action="store_true", help="skip timing discovery on 10,000 utterances")
    args = parser.parse_args()
    train = load_dataset(args.data / "train.csv")
    valid = load_dataset(args.data / "valid.csv")
    test = load_dataset(args.data / "test.csv", deduplicate=False)
    rows = []
    scratch = tempfile.TemporaryDirectory()
    models = args.models or Path(scratch.name)
    for seed in args.seeds:
        rows.append(
            run_seed(
                build_pool(
                    seed,
                    train,
                    valid,
                    test,
                    models,
                    args.steps,
                    args.margin,
                    args.similarity_percentile,
                    args.review,
                    args.neighbours,
                ),
                args.umap_seeds,
                args.encoder,
            )
        )
        print(f"seed {seed} done: " + ", ".join(f"{k}={_cell(k, rows[-1][k])}" for k, _ in COLUMNS), flush=True)
    print_table(rows)
    if not args.no_timing:
        timing = time_ten_thousand(rows[0]["model"], train, test)
        print(f"\ndiscovery on {timing['utterances']} distinct utterances: {timing['seconds']:.1f} s {timing['steps']}")


if __name__ == "__main__":
    main()
