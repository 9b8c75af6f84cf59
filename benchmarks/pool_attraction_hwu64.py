"""Pool attraction on HWU64: would keeping routed utterances whose neighbours are in the pool raise capture?

    python benchmarks/pool_attraction_hwu64.py --models /tmp/hwu64-models
    python benchmarks/pool_attraction_hwu64.py --models /tmp/hwu64-models --votes fallbacks --dense

Uses the models ``discovery_hwu64.py --models DIR`` saved and the same week of traffic (the test
split plus the held-out intents' train utterances), in a seeded random order. The pool starts as
what the router's two rules send to the fallback; each routed utterance is also kept when at least
``share`` of its k nearest neighbours (cosine, the tuned space) are in the pool so far. Neighbours
are taken among the known training utterances and the traffic seen so far ("training + traffic"),
or among the traffic alone, as on a router that has seen far more traffic than it was trained on.

``--votes fallbacks``: only the neighbours that the router's own two rules sent to the fallback
vote, not the ones kept by this rule, so what it keeps cannot feed on itself (the neighbourhood's
fallback rate). ``--dense``: the traffic is denser in known intents, as on a router whose intents
cover most of what it sees: the known intents' test and validation rows, and 40 train utterances of
each held-out intent (seeded choice).

Prints capture (held-out-intent traffic in the pool) and the share of known traffic in the pool.
"""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fallback_signals_hwu64 import held_out_intents, seed_models_parser  # noqa: E402

from intent_router import IntentClassifier, load_dataset  # noqa: E402

DENSE_HELD_OUT = 40  # train utterances of each held-out intent in the --dense traffic


def attract(
    flagged: np.ndarray,
    to_training: np.ndarray | None,
    to_traffic: np.ndarray,
    k: int,
    share: float,
    seed: int,
    fallbacks_vote: bool = False,
    window: int | None = None,
):
    """Which utterances end in the pool, played in a seeded order. ``to_*``: cosines of each utterance;
    ``window``: neighbours only among the last that many utterances of traffic (default: all so far)."""
    pooled, seen = np.zeros(len(flagged), bool), []
    voters = flagged if fallbacks_vote else pooled
    for i in np.random.default_rng(seed).permutation(len(flagged)):
        if flagged[i]:
            pooled[i] = True
        else:
            earlier = np.array(seen[-window:] if window else seen, dtype=int)
            similar, in_pool = to_traffic[i, earlier], voters[earlier]
            if to_training is not None:
                similar = np.concatenate([to_training[i], similar])
                in_pool = np.concatenate([np.zeros(to_training.shape[1], bool), in_pool])
            if len(similar) > k and in_pool[np.argpartition(-similar, k)[:k]].mean() >= share:
                pooled[i] = True
        seen.append(i)
    return pooled


def week(train, test, valid, held: set[str], seed: int, dense: bool) -> tuple[list[str], list[str]]:
    """The traffic's texts and true intents."""
    unseen_train = [i for i, y in enumerate(train.labels) if y in held]
    if not dense:
        texts, labels = [train.texts[i] for i in unseen_train], [train.labels[i] for i in unseen_train]
        return test.texts + texts, test.labels + labels
    rng = np.random.default_rng(seed)
    by_intent: dict[str, list[int]] = {}
    for i in unseen_train:
        by_intent.setdefault(train.labels[i], []).append(i)
    cut = [
        int(i)
        for y in sorted(by_intent)
        for i in rng.choice(by_intent[y], min(DENSE_HELD_OUT, len(by_intent[y])), replace=False)
    ]
    known = [(t, y) for t, y in zip(test.texts + valid.texts, test.labels + valid.labels, strict=True) if y not in held]
    texts = [t for t, _ in known] + [train.texts[i] for i in cut]
    return texts, [y for _, y in known] + [train.labels[i] for i in cut]


def main() -> None:
    parser = seed_models_parser(__doc__)
    parser.add_argument("-k", type=int, default=10, help="neighbours (default: 10)")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.2, 0.3, 0.5])
    parser.add_argument(
        "--votes", choices=["pool", "fallbacks"], default="pool", help="which neighbours vote (default: pool)"
    )
    parser.add_argument("--dense", action="store_true", help="traffic denser in known intents (see above)")
    parser.add_argument("--window", type=int, default=None, help="neighbours among the last N of traffic only")
    args = parser.parse_args()
    train = load_dataset(args.data / "train.csv")
    test = load_dataset(args.data / "test.csv", deduplicate=False)
    valid = load_dataset(args.data / "valid.csv", deduplicate=False)
    print("| seed | neighbours among | share | capture | known traffic in the pool |")
    print("|---|---|---|---|---|")
    for seed in args.seeds:
        held = held_out_intents(train.labels, seed)
        model = IntentClassifier.load(args.models / f"hwu64-seed{seed}")
        texts, truth = week(train, test, valid, held, seed, args.dense)
        unseen = np.array([y in held for y in truth])
        training = model.embed([t for t, y in zip(train.texts, train.labels, strict=True) if y not in held])
        traffic = model.embed(texts)
        flagged = (model.head_.predict_proba(traffic).max(axis=1) < model.info_["default_threshold"]["value"]) | (
            model.head_.centroid_similarity(traffic) < model.info_["default_similarity_threshold"]["value"]
        )
        print(f"| {seed} | (the router's two rules) | | {flagged[unseen].mean():.3f} | {flagged[~unseen].mean():.1%} |")
        to_training, to_traffic = traffic @ training.T, traffic @ traffic.T
        for where, anchors in (("training + traffic", to_training), ("traffic alone", None)):
            for share in args.shares:
                pooled = attract(
                    flagged, anchors, to_traffic, args.k, share, 100 + seed, args.votes == "fallbacks", args.window
                )
                print(f"| {seed} | {where} | {share} | {pooled[unseen].mean():.3f} | {pooled[~unseen].mean():.1%} |")


if __name__ == "__main__":
    main()
