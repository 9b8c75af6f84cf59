"""Pool attraction on HWU64: would keeping routed utterances whose neighbours are in the pool raise capture?

    python benchmarks/pool_attraction_hwu64.py --models /tmp/hwu64-models

Uses the models ``discovery_hwu64.py --models DIR`` saved and the same week of traffic (the test
split plus the held-out intents' train utterances), in a seeded random order. The pool starts as
what the router's two rules send to the fallback; each routed utterance is also kept when at least
``share`` of its k nearest neighbours (cosine, the tuned space) are in the pool so far. Neighbours
are taken among the known training utterances and the traffic seen so far ("training + traffic"),
or among the traffic alone, as on a router that has seen far more traffic than it was trained on.
Prints capture (held-out-intent traffic in the pool) and the share of known traffic in the pool.
"""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fallback_signals_hwu64 import held_out_intents, seed_models_parser  # noqa: E402

from intent_router import IntentClassifier, load_dataset  # noqa: E402


def attract(
    flagged: np.ndarray, to_training: np.ndarray | None, to_traffic: np.ndarray, k: int, share: float, seed: int
):
    """Which utterances end in the pool, played in a seeded order. ``to_*``: cosines of each utterance."""
    pooled, seen = np.zeros(len(flagged), bool), np.zeros(len(flagged), bool)
    for i in np.random.default_rng(seed).permutation(len(flagged)):
        if flagged[i]:
            pooled[i] = True
        else:
            earlier = np.flatnonzero(seen)
            similar, in_pool = to_traffic[i, earlier], pooled[earlier]
            if to_training is not None:
                similar = np.concatenate([to_training[i], similar])
                in_pool = np.concatenate([np.zeros(to_training.shape[1], bool), in_pool])
            if len(similar) > k and in_pool[np.argpartition(-similar, k)[:k]].mean() >= share:
                pooled[i] = True
        seen[i] = True
    return pooled


def main() -> None:
    parser = seed_models_parser(__doc__)
    parser.add_argument("-k", type=int, default=10, help="neighbours (default: 10)")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.2, 0.3, 0.5])
    args = parser.parse_args()
    train = load_dataset(args.data / "train.csv")
    test = load_dataset(args.data / "test.csv", deduplicate=False)
    print("| seed | neighbours among | share | capture | known traffic in the pool |")
    print("|---|---|---|---|---|")
    for seed in args.seeds:
        held = held_out_intents(train.labels, seed)
        model = IntentClassifier.load(args.models / f"hwu64-seed{seed}")
        unseen_train = [i for i, y in enumerate(train.labels) if y in held]
        truth = test.labels + [train.labels[i] for i in unseen_train]
        unseen = np.array([y in held for y in truth])
        training = model.embed([t for t, y in zip(train.texts, train.labels, strict=True) if y not in held])
        traffic = model.embed(test.texts + [train.texts[i] for i in unseen_train])
        flagged = (model.head_.predict_proba(traffic).max(axis=1) < model.info_["default_threshold"]["value"]) | (
            model.head_.centroid_similarity(traffic) < model.info_["default_similarity_threshold"]["value"]
        )
        print(f"| {seed} | (the router's two rules) | | {flagged[unseen].mean():.3f} | {flagged[~unseen].mean():.1%} |")
        to_training, to_traffic = traffic @ training.T, traffic @ traffic.T
        for where, anchors in (("training + traffic", to_training), ("traffic alone", None)):
            for share in args.shares:
                pooled = attract(flagged, anchors, to_traffic, args.k, share, 100 + seed)
                print(f"| {seed} | {where} | {share} | {pooled[unseen].mean():.3f} | {pooled[~unseen].mean():.1%} |")


if __name__ == "__main__":
    main()
